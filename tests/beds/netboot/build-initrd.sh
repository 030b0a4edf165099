#!/bin/bash
# Builds the installer stand-in used by the netboot bed: Debian's own kernel
# plus a tiny busybox initramfs whose /init does what Anaconda does first
# (DHCP, fetch inst.ks=, report installed) and then powers the VM off.
#
# Usage: build-initrd.sh OUTDIR
# Produces OUTDIR/vmlinuz, OUTDIR/initrd.img and OUTDIR/kernel-version.
# The result is cached by content: rerunning with unchanged inputs (this
# script, busybox, the kernel and its modules) does nothing.
set -euo pipefail

out=${1:?usage: build-initrd.sh OUTDIR}

busybox=/bin/busybox
[[ -x $busybox ]] || { echo "build-initrd: $busybox missing (apt-get install busybox-static)" >&2; exit 1; }
if ldd "$busybox" >/dev/null 2>&1; then
  echo "build-initrd: $busybox is not static (apt-get install busybox-static)" >&2; exit 1
fi

# The newest kernel that linux-image-amd64 installed, with its modules.
kver=${KS_KERNEL_VERSION:-$(ls /lib/modules | sort -V | tail -n1)}
vmlinuz=/boot/vmlinuz-$kver
moddir=/lib/modules/$kver
[[ -r $vmlinuz && -d $moddir ]] || { echo "build-initrd: no kernel $vmlinuz / $moddir (apt-get install linux-image-amd64)" >&2; exit 1; }

# Drivers for the VM's NIC, in load order (dependencies first), resolved from
# modules.dep so a kernel update that changes the dependency set still works.
# 8021q: the VLAN a boot_vlan host's installer moves to.
wanted=(virtio_pci virtio_net e1000 8021q)
declare -a order=()
declare -A seen=()
resolve() {
  local rel=$1 line deps d
  [[ -n ${seen[$rel]:-} ]] && return 0
  seen[$rel]=1
  line=$(grep -E "^${rel}:" "$moddir/modules.dep" || true)
  deps=${line#*:}
  for d in $deps; do resolve "$d"; done
  order+=("$rel")
}
for m in "${wanted[@]}"; do
  if grep -qE "/${m}\.ko(\.[a-z]+)?$" "$moddir/modules.builtin" 2>/dev/null; then continue; fi
  rel=$(grep -oE "^[^:]*/${m}\.ko(\.[a-z]+)?:" "$moddir/modules.dep" | head -n1 | tr -d :)
  [[ -n $rel ]] || { echo "build-initrd: module $m not found for $kver" >&2; exit 1; }
  resolve "$rel"
done

# Cache key: everything that ends up in the image.
key=$( { sha256sum "$0" "$busybox" "$vmlinuz"; for m in "${order[@]}"; do sha256sum "$moddir/$m"; done; } | sha256sum | cut -c1-16)
if [[ -f $out/stamp && $(cat "$out/stamp") == "$key" && -f $out/initrd.img && -f $out/vmlinuz ]]; then
  exit 0
fi

mkdir -p "$out"
stage=$(mktemp -d "$out/.stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT

mkdir -p "$stage"/{bin,sbin,etc,proc,sys,dev,tmp,run,lib/modules,usr/share/udhcpc}
cp "$busybox" "$stage/bin/busybox"
for applet in sh mount umount ip ifconfig route udhcpc wget cat grep sed tr insmod sleep timeout echo poweroff reboot mkdir ls dmesg head cut syslogd logger; do
  ln -s busybox "$stage/bin/$applet"
done

: >"$stage/lib/modules/load-order"
for m in "${order[@]}"; do
  base=$(basename "$m")
  case $base in
    *.ko.xz) xz -dc "$moddir/$m" >"$stage/lib/modules/${base%.xz}"; base=${base%.xz} ;;
    *.ko.zst) zstd -qdc "$moddir/$m" >"$stage/lib/modules/${base%.zst}"; base=${base%.zst} ;;
    *.ko.gz) gzip -dc "$moddir/$m" >"$stage/lib/modules/${base%.gz}"; base=${base%.gz} ;;
    *) cp "$moddir/$m" "$stage/lib/modules/$base" ;;
  esac
  echo "$base" >>"$stage/lib/modules/load-order"
done

cat >"$stage/usr/share/udhcpc/default.script" <<'SCRIPT'
#!/bin/sh
# udhcpc calls this with the lease in the environment.
case "$1" in
  deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    if [ -n "$router" ]; then
      for r in $router; do ip route add default via "$r" dev "$interface" && break; done
    fi
    echo "KS-STANDIN: lease $ip/${mask:-24} on $interface" ;;
esac
exit 0
SCRIPT
chmod 0755 "$stage/usr/share/udhcpc/default.script"

cat >"$stage/init" <<'SCRIPT'
#!/bin/sh
# Installer stand-in: the part of Anaconda that the netboot path exercises.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null

say() {
  # Straight to COM1: the marker must reach the serial log whatever console=
  # the boot script set.
  echo "$*" >/dev/ttyS0 2>/dev/null || echo "$*" >/dev/console
}
die() { say "KS-STANDIN: FAILED: $*"; poweroff -f; sleep 5; exit 1; }

say "KS-STANDIN: init started"
for m in $(cat /lib/modules/load-order); do insmod "/lib/modules/$m" 2>/dev/null; done

iface=""
i=0
while [ $i -lt 50 ] && [ -z "$iface" ]; do
  for d in /sys/class/net/*; do
    n=${d##*/}; [ "$n" = lo ] && continue; iface=$n; break
  done
  [ -z "$iface" ] && { sleep 0.2; i=$((i+1)); }
done
[ -n "$iface" ] || die "no network interface"
ip link set lo up
# The network arguments as dracut reads them (dracut.cmdline(7)), as far
# as Kickstand's boot_vlan uses them: ifname=<name>:<mac> names the NIC
# with that MAC, vlan=<name>.<id>:<parent> makes VLAN <id> on it, and
# ip=<interface>:dhcp takes an address there alone. Plain ip=dhcp: the
# first NIC. ip=auto6 (or <interface>:auto6) waits instead for the address
# the kernel forms from the router's advertisement (SLAAC), as an
# installer does on an IPv6-only rack.
method=dhcp
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    ifname=*:*)
      v=${arg#ifname=}
      for d in /sys/class/net/*; do
        [ "$(cat "$d/address")" = "${v#*:}" ] || continue
        ip link set "${d##*/}" name "${v%%:*}" || die "cannot name ${d##*/} ${v%%:*}"
        [ "${d##*/}" = "$iface" ] && iface=${v%%:*}
      done ;;
    vlan=*:*)
      v=${arg#vlan=}; vname=${v%%:*}
      ip link set "${v#*:}" up
      ip link add link "${v#*:}" name "$vname" type vlan id "${vname##*.}" || die "cannot make VLAN $v"
      say "KS-STANDIN: VLAN ${vname##*.} on ${v#*:}" ;;
    ip=*:dhcp) v=${arg#ip=}; iface=${v%:dhcp} ;;
    ip=auto6) method=auto6 ;;
    ip=*:auto6) v=${arg#ip=}; iface=${v%:auto6}; method=auto6 ;;
  esac
done
[ -e "/sys/class/net/$iface" ] || die "no interface $iface"
mac=$(cat "/sys/class/net/$iface/address")
ip link set "$iface" up
if [ "$method" = auto6 ]; then
  # A global address that has passed duplicate address detection.
  i=0
  while ! ip -6 -o addr show dev "$iface" scope global | grep -qv tentative; do
    [ $i -lt 150 ] || die "no IPv6 address from a router advertisement on $iface"
    sleep 0.2; i=$((i+1))
  done
  say "KS-STANDIN: SLAAC address on $iface: $(ip -6 -o addr show dev "$iface" scope global | grep -o 'inet6 [0-9a-f:/]*')"
else
  udhcpc -i "$iface" -n -q -t 10 -T 2 -s /usr/share/udhcpc/default.script >/dev/null 2>&1 || die "no DHCP lease on $iface"
  say "KS-STANDIN: DHCP lease on $iface: $(ip -4 -o addr show dev "$iface" | grep -o 'inet [0-9./]*')"
fi

ks=""
syslog=""
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    inst.ks=*) ks=${arg#inst.ks=} ;;
    inst.syslog=*) syslog=${arg#inst.syslog=} ;;
  esac
done
[ -n "$ks" ] || die "no inst.ks= on the kernel command line"
# Like Anaconda with inst.syslog=: the installer's log goes to the appliance.
if [ -n "$syslog" ]; then
  syslogd -n -R "$syslog" -O /tmp/messages &
  sleep 1
  logger -t anaconda "KS-STANDIN installer log for $mac"
fi
say "KS-STANDIN: fetching $ks"
# busybox 1.35 (static) wget segfaults with -T, hence the timeout applet.
timeout 30 wget -q -O /tmp/ks.cfg "$ks" || die "cannot fetch $ks"
if ! grep -qE '^(url|%packages)' /tmp/ks.cfg; then
  die "$ks does not look like a kickstart"
fi
say "KS-STANDIN: fetched kickstart for $mac"

# The callbacks are the kickstart's own URLs, as %pre, %post and %onerror
# use them: they carry the host's build token.
callback() {
  grep -o "http://[^' ]*/api/hosts/[^' ]*/$1?token=[^' ]*" /tmp/ks.cfg | head -n 1
}
installing=$(callback installing)
installed=$(callback installed)
failed=$(callback failed)
[ -n "$installed" ] || die "the kickstart has no installed callback"
# Like the real %pre, "installing" is best effort; "installed" is the point.
timeout 30 wget -q -O /tmp/installing --post-data="" "$installing" || say "KS-STANDIN: could not report installing"
logger -t anaconda "KS-STANDIN installing for $mac"
# A profile can make the install last a while, as a real package stage does
# (the documentation's screenshot catches a host installing): its kickstart
# then says `# KS-STANDIN-INSTALL-SECS: <n>`. Without it there is no pause.
secs=$(grep -o "KS-STANDIN-INSTALL-SECS: [0-9]*" /tmp/ks.cfg | head -n 1 | cut -d' ' -f2)
if [ -n "$secs" ]; then
  say "KS-STANDIN: installing for $secs s"
  sleep "$secs"
fi
# A profile can make the install fail on purpose: its kickstart then says
# `# KS-STANDIN-FAIL: <reason>`, and %onerror is what reports it.
reason=$(grep -o "KS-STANDIN-FAIL: .*" /tmp/ks.cfg | head -n 1 | cut -d' ' -f2-)
if [ -n "$reason" ]; then
  logger -t anaconda "KS-STANDIN failing: $reason"
  timeout 30 wget -q -O /tmp/failed --post-data="$reason" "$failed" || die "cannot report failed"
  say "KS-STANDIN: reported failed for $mac: $reason"
  say "KS-STANDIN: powering off"
  sleep 1
  poweroff -f
  sleep 5
fi
timeout 30 wget -q -O /tmp/installed --post-data="" "$installed" || die "cannot report installed"
say "KS-STANDIN: reported installed for $mac"
sleep 1
say "KS-STANDIN: powering off"
poweroff -f
sleep 5
SCRIPT
chmod 0755 "$stage/init"

(cd "$stage" && find . | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 | gzip -9n) >"$stage.img"
install -m 0644 "$vmlinuz" "$out/vmlinuz"
mv "$stage.img" "$out/initrd.img"
echo "$kver" >"$out/kernel-version"
echo "$key" >"$out/stamp"
