#!/bin/bash
# Brings up the netboot bed: a private network in two network namespaces, so
# no packet leaves this machine.
#
#   $NS  (kickstand side): bridge ksbr0 = 10.77.0.1/24 (Kickstand's address),
#        tap kstap0 on the bridge (QEMU's NIC), a local mirror on 0.0.0.0:8081
#        serving $KS_MIRROR_TREE (the installer stand-in under images/pxeboot/,
#        the Secure Boot chain under EFI/BOOT/, see build-sb-tree.sh) and the
#        iPXE loaders under loaders/ (for UEFI HTTP boot).
#   $ONS (office side):    veth office0 = 10.77.0.254/24 bridged into ksbr0,
#        dnsmasq as the office DHCP server (addresses only, no boot options;
#        a host listed with bed-host.sh ... next-server gets siaddr
#        10.77.0.1, which Debian's GRUB needs, see README).
#
# Usage: bed-up.sh WORKDIR [standin]
#   standin: Kickstand's place at 10.77.0.1 is taken by dnsmasq (ProxyDHCP +
#   TFTP from WORKDIR/standin-tftp), standin-httpboot.py (ProxyDHCP for UEFI
#   HTTP boot clients) and standin-http.py (boot scripts, kickstart, report),
#   so the bed, the firmware and the initramfs can be checked without
#   Kickstand. Per-host behaviour (chain, ignore, script, GRUB config) is set
#   with bed-host.sh.
# Environment: KS_MIRROR_TREE (tree path in the mirror), KS_STANDIN_DIR (a
#   cache kept across runs: stand-in installer, disks, arm64 loaders),
#   KS_BED_VLAN=<id> (kstap0 also carries VLAN <id> tagged: its segment is
#   bridge ksvl<id>, 10.77.<id>.1/24 on the Kickstand side, the office's
#   DHCP serving 10.77.<id>.100-150 with 10.77.<id>.1 as router; id
#   2-254, see vlan-switch.py),
#   KS_BED_IPV6=1 (the segment also has IPv6: fd77::1/64 on ksbr0 for
#   Kickstand, the office router fd77::fe advertising fd77::/64 with the M,
#   O and A flags (radvd), the office dnsmasq leasing fd77::100-1ff by
#   DHCPv6 and naming KS_BED_IPV6_BOOT_FILE on Kickstand as the boot file
#   URL of next-server hosts, as it names Kickstand as next server),
#   KS_BED_AARCH64=1 (also build the arm64 tree KS_MIRROR_TREE_AA64 with
#   Debian's arm64 shim and GRUB; downloads them once through apt).
# Writes WORKDIR/bed.env (NS, ONS, DISK_BIOS, DISK_UEFI, ...); bed-down.sh
# WORKDIR undoes everything.
set -euo pipefail

work=${1:?usage: bed-up.sh WORKDIR [standin]}
mode=${2:-}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tree=${KS_MIRROR_TREE:-standin/9/BaseOS/x86_64/os}
tree_aa64=${KS_MIRROR_TREE_AA64:-standin/9/BaseOS/aarch64/os}
mkdir -p "$work"
work=$(cd "$work" && pwd)

ipv6=${KS_BED_IPV6:-}
tools=(ip dnsmasq python3 qemu-system-x86_64 sbverify ethtool)
[[ -z $ipv6 ]] || tools+=(radvd)
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null || { echo "bed-up: $tool missing" >&2; exit 1; }
done

# Unique per run; namespace names are global, interface names inside are not.
suffix=${KS_BED_SUFFIX:-$$-$RANDOM}
ns=ks-nb-$suffix
ons=ks-nbo-$suffix
# KS_STANDIN_DIR lets callers keep the (content-cached) stand-in across runs.
standin=${KS_STANDIN_DIR:-$work/standin}
cat >"$work/bed.env" <<ENV
NS=$ns
ONS=$ons
WORK=$work
MIRROR_TREE=$tree
MIRROR_TREE_AA64=$tree_aa64
DISK_BIOS=$standin/disks/bios.img
DISK_BIOS_UP=$standin/disks/bios-up.img
DISK_UEFI=$standin/disks/uefi.img
VLAN=${KS_BED_VLAN:-}
IPV6=$ipv6
ENV

# If anything below fails, take down whatever was created.
trap '"$here/bed-down.sh" "$work" >/dev/null 2>&1 || true' ERR

# Tests bring up two beds at once: the stand-in cache they share is built
# (or found current) by one while the other waits.
mkdir -p "$standin"
(
  flock 9
  "$here/build-initrd.sh" "$standin" >&2
  "$here/build-disk.sh" "$standin/disks" >&2
) 9>"$standin/.lock"

ip netns add "$ns"
ip netns add "$ons"
ip -n "$ns" link set lo up
ip -n "$ons" link set lo up

ip -n "$ns" link add ksbr0 type bridge forward_delay 0 stp_state 0
ip -n "$ns" addr add 10.77.0.1/24 dev ksbr0
ip -n "$ns" link set ksbr0 up

ip -n "$ns" tuntap add dev kstap0 mode tap
ip -n "$ns" link set kstap0 master ksbr0
ip -n "$ns" link set kstap0 up

ip -n "$ns" link add ofc0 type veth peer name office0 netns "$ons"
ip -n "$ns" link set ofc0 master ksbr0
ip -n "$ns" link set ofc0 up
ip -n "$ons" addr add 10.77.0.254/24 dev office0
ip -n "$ons" link set office0 up
# The office router is the way out, as on a real appliance; it leads nowhere
# here (the office namespace has no other link), but it gives broadcasts and
# replies to leased addresses a route.
ip -n "$ns" route add default via 10.77.0.254 dev ksbr0

# IPv6 beside IPv4 on the segment: the office router and DHCPv6 server.
office_v6=()
if [[ -n $ipv6 ]]; then
  # nodad: the bed owns these addresses, usable at once.
  ip -n "$ns" addr add fd77::1/64 dev ksbr0 nodad
  ip -n "$ons" addr add fd77::fe/64 dev office0 nodad
  ip netns exec "$ons" sysctl -qw net.ipv6.conf.all.forwarding=1
  cat >"$work/radvd.conf" <<RADVD
interface office0 {
  AdvSendAdvert on;
  AdvManagedFlag on;
  AdvOtherConfigFlag on;
  MinRtrAdvInterval 3;
  MaxRtrAdvInterval 4;
  prefix fd77::/64 { AdvOnLink on; AdvAutonomous on; };
};
RADVD
  ip netns exec "$ons" radvd --nodaemon --config "$work/radvd.conf" --pidfile "$work/radvd.pid" \
    >"$work/radvd.log" 2>&1 </dev/null &
  boot_file=${KS_BED_IPV6_BOOT_FILE:-os/standin-9/EFI/BOOT/BOOTX64.EFI}
  office_v6=(--dhcp-range=fd77::100,fd77::1ff,64,12h
    "--dhcp-option=tag:ks-next-server,option6:bootfile-url,tftp://[fd77::1]/$boot_file")
fi

# A tagged VLAN on the machine's port, beside its untagged network.
vlan=${KS_BED_VLAN:-}
office_vlan=()
if [[ -n $vlan ]]; then
  ip -n "$ns" link add "ksvl$vlan" type bridge forward_delay 0 stp_state 0
  ip -n "$ns" addr add "10.77.$vlan.1/24" dev "ksvl$vlan"
  ip -n "$ns" link set "ksvl$vlan" up
  ip -n "$ns" link add "ofv$vlan" type veth peer name "office$vlan" netns "$ons"
  ip -n "$ns" link set "ofv$vlan" master "ksvl$vlan" up
  ip -n "$ons" addr add "10.77.$vlan.254/24" dev "office$vlan"
  ip -n "$ons" link set "office$vlan" up
  # The switch's side of the segment: vlan-switch.py on swv<id>.
  ip -n "$ns" link add "swv$vlan" type veth peer name "brv$vlan"
  ip -n "$ns" link set "brv$vlan" master "ksvl$vlan" up
  ip -n "$ns" link set "swv$vlan" up
  # What the switch reads must be whole frames with their checksums: the
  # kernel segments and checksums on brv<id> what senders on the segment
  # left to "hardware" (the packet socket would see super-frames and
  # partial checksums, which the machine's NIC drops).
  ip netns exec "$ns" ethtool -K "brv$vlan" tx off sg off tso off gso off >/dev/null
  ip netns exec "$ns" python3 "$here/vlan-switch.py" kstap0 "swv$vlan" "$vlan" \
    >"$work/vlan-switch.log" 2>&1 </dev/null &
  echo $! >"$work/vlan-switch.pid"
  office_vlan=(--interface="office$vlan" "--dhcp-range=set:vlan,10.77.$vlan.100,10.77.$vlan.150,12h"
    "--dhcp-option=tag:vlan,option:router,10.77.$vlan.1")
fi

# The mirror: the stand-in kernel and initramfs where a CentOS tree keeps
# them, the signed shim and GRUB where its EFI/BOOT keeps them.
mkdir -p "$work/mirror/$tree/images/pxeboot"
cp "$standin/vmlinuz" "$work/mirror/$tree/images/pxeboot/vmlinuz"
cp "$standin/initrd.img" "$work/mirror/$tree/images/pxeboot/initrd.img"
"$here/build-sb-tree.sh" "$work/mirror/$tree" x86_64
if [[ ${KS_BED_AARCH64:-} == 1 ]]; then
  (
    flock 9
    "$here/build-sb-tree.sh" "$work/mirror/$tree_aa64" aarch64 "$standin/arm64"
  ) 9>"$standin/.lock"
fi
# iPXE for UEFI HTTP boot, which fetches its loader from a URL.
mkdir -p "$work/mirror/loaders"
for f in ipxe.efi snponly.efi; do
  install -m 0644 "$(readlink -f "/usr/lib/ipxe/$f")" "$work/mirror/loaders/$f"
done
# An EL tree's metadata: an (empty) repository, as an install tree is one,
# and .treeinfo naming the boot images with their checksums, which
# `kickstand cache warm` fetches and the cache checks before committing.
createrepo_c -q "$work/mirror/$tree" >/dev/null
sum() { echo "sha256:$(sha256sum "$work/mirror/$tree/$1" | cut -d' ' -f1)"; }
cat >"$work/mirror/$tree/.treeinfo" <<TREEINFO
[header]
type = productmd.treeinfo
version = 1.2

[release]
name = Kickstand installer stand-in
short = standin
version = 9

[tree]
arch = x86_64
platforms = x86_64,xen

[images-x86_64]
kernel = images/pxeboot/vmlinuz
initrd = images/pxeboot/initrd.img

[checksums]
images/pxeboot/vmlinuz = $(sum images/pxeboot/vmlinuz)
images/pxeboot/initrd.img = $(sum images/pxeboot/initrd.img)
EFI/BOOT/BOOTX64.EFI = $(sum EFI/BOOT/BOOTX64.EFI)
EFI/BOOT/grubx64.efi = $(sum EFI/BOOT/grubx64.efi)
TREEINFO
# A published tree is older than the request: Kickstand's cache does not
# commit a file the mirror may still be writing (Last-Modified seconds
# before Date).
find "$work/mirror" -exec touch -h -d '1 day ago' {} +
ip netns exec "$ns" python3 -m http.server --bind 0.0.0.0 --directory "$work/mirror" 8081 \
  >"$work/mirror.log" 2>&1 </dev/null &
echo $! >"$work/mirror.pid"

# office-hosts/: per-MAC tags (bed-host.sh), re-read by dnsmasq on change.
# Tag ks-next-server sets siaddr (next server) to 10.77.0.1 in that host's
# OFFER/ACK, with no boot file: Debian's GRUB takes its TFTP server from the
# address server's ACK, never from the ProxyDHCP offer.
mkdir -p "$work/office-hosts"
office=(--conf-file=/dev/null --port=0 --interface=office0 --bind-interfaces
  --dhcp-range=10.77.0.100,10.77.0.150,12h
  --dhcp-hostsdir="$work/office-hosts" --dhcp-boot=tag:ks-next-server,,,10.77.0.1
  --dhcp-leasefile="$work/office.leases" --pid-file="$work/office.pid"
  --log-dhcp --log-facility="$work/office.log" --user=root --group=root
  "${office_vlan[@]}" "${office_v6[@]}")
ip netns exec "$ons" dnsmasq "${office[@]}"

if [[ $mode == standin ]]; then
  # Stand-in for Kickstand, where Kickstand would be (10.77.0.1 on ksbr0).
  # TFTP root: the iPXE loaders, the mirror's trees at their paths (shim and
  # GRUB under EFI/BOOT/, kernel and initrd under images/pxeboot/) and
  # grub/, the prefix Debian's network GRUB reads its config from.
  stftp=$work/standin-tftp
  mkdir -p "$stftp/grub" "$work/standin-hosts" "$work/standin-http/boot"
  for f in undionly.kpxe ipxe.efi snponly.efi; do ln -sfn "$(readlink -f "/usr/lib/ipxe/$f")" "$stftp/$f"; done
  for t in "$tree" "$tree_aa64"; do
    [[ -d $work/mirror/$t ]] || continue
    mkdir -p "$stftp/$(dirname "$t")"
    ln -sfn "$work/mirror/$t" "$stftp/$t"
  done
  # Every x86_64 MAC without its own config installs (kernel and initrd over
  # TFTP: Debian's signed GRUB has no http module); an arm64 one stops
  # there, there is no arm64 stand-in installer. grub.cfg-01-<mac with
  # dashes> (bed-host.sh --grub-cfg) overrides that for one host.
  cat >"$stftp/grub/grub.cfg" <<CFG
echo "KS-GRUB: generic grub.cfg for \$net_default_mac (\$grub_cpu, prefix \$prefix)"
regexp --set=1:m1 --set=2:m2 --set=3:m3 --set=4:m4 --set=5:m5 --set=6:m6 '^([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2})\$' "\$net_default_mac"
configfile "\$prefix/grub.cfg-01-\$m1-\$m2-\$m3-\$m4-\$m5-\$m6"
if [ "\$grub_cpu" != x86_64 ]; then
  echo "KS-GRUB: no host config, nothing to install on \$grub_cpu"
  halt
fi
echo "KS-GRUB: no host config, installing"
linux /$tree/images/pxeboot/vmlinuz console=ttyS0 inst.ks=http://10.77.0.1:8080/ks/\$net_default_mac
initrd /$tree/images/pxeboot/initrd.img
boot
CFG
  # Per-host tags from bed-host.sh: ks-ignore (no answer at all), ks-grub
  # (UEFI: shim → GRUB), ks-snp (UEFI: snponly.efi instead of ipxe.efi).
  ip netns exec "$ns" dnsmasq --conf-file=/dev/null --port=0 --interface=ksbr0 --bind-interfaces \
    --dhcp-range=10.77.0.0,proxy,255.255.255.0 --enable-tftp --tftp-root="$stftp" \
    --dhcp-hostsdir="$work/standin-hosts" --dhcp-ignore=tag:ks-ignore \
    --dhcp-userclass=set:ipxe,iPXE \
    '--pxe-service=tag:!ipxe,x86PC,PXE,undionly.kpxe' \
    '--pxe-service=tag:!ipxe,tag:!ks-grub,tag:!ks-snp,X86-64_EFI,PXE,ipxe.efi' \
    '--pxe-service=tag:!ipxe,tag:!ks-grub,tag:ks-snp,X86-64_EFI,PXE,snponly.efi' \
    "--pxe-service=tag:!ipxe,tag:ks-grub,X86-64_EFI,PXE,$tree/EFI/BOOT/BOOTX64.EFI" \
    "--pxe-service=ARM64_EFI,PXE,$tree_aa64/EFI/BOOT/BOOTAA64.EFI" \
    '--pxe-service=tag:ipxe,x86PC,iPXE,http://10.77.0.1:8080/boot/standin.ipxe' \
    '--pxe-service=tag:ipxe,X86-64_EFI,iPXE,http://10.77.0.1:8080/boot/standin.ipxe' \
    --dhcp-leasefile="$work/standin-proxy.leases" --pid-file="$work/standin-proxy.pid" \
    --log-dhcp --log-facility="$work/standin-proxy.log" --user=root --group=root
  ip netns exec "$ns" python3 "$here/standin-httpboot.py" ksbr0 10.77.0.1 "$work/standin-hosts" \
    16=http://10.77.0.1:8081/loaders/ipxe.efi \
    >"$work/standin-httpboot.log" 2>&1 </dev/null &
  echo $! >"$work/standin-httpboot.pid"
  ip netns exec "$ns" python3 "$here/standin-http.py" 10.77.0.1 8080 "$work/standin-http" "$tree" \
    >"$work/standin-http.log" 2>&1 </dev/null &
  echo $! >"$work/standin-http.pid"
fi

# Wait until the servers listen, so a VM started right after finds them.
wait_tcp() {
  for _ in $(seq 50); do
    if ip netns exec "$ns" bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "bed-up: nothing listens on $1:$2" >&2
  return 1
}
wait_tcp 127.0.0.1 8081
if [[ $mode == standin ]]; then
  wait_tcp 10.77.0.1 8080
  for _ in $(seq 50); do grep -q answering "$work/standin-httpboot.log" && break; sleep 0.1; done
  grep -q answering "$work/standin-httpboot.log" || { echo "bed-up: standin-httpboot.py did not start" >&2; exit 1; }
fi
[[ -s $work/office.pid ]] || { echo "bed-up: office dnsmasq did not start" >&2; exit 1; }
if [[ -n $vlan ]]; then
  for _ in $(seq 50); do grep -q "vlan-switch:" "$work/vlan-switch.log" && break; sleep 0.1; done
  grep -q "vlan-switch:" "$work/vlan-switch.log" || { echo "bed-up: vlan-switch.py did not start" >&2; exit 1; }
fi
echo "bed-up: $ns / $ons ready in $work" >&2
