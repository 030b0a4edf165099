#!/bin/bash
# The appliance image, end to end: build it, boot it under QEMU (TCG) on the
# netboot bed's bridge beside dnsmasq as the office DHCP server, and check
# from outside what an operator would rely on:
#   before: the stick prepared from a laptop with mtools, as the README
#     says: kickstand.yaml copied from kickstand.yaml.example (the
#     interface, `address: auto`, the bed's mirror) and a host profile.
#   boot 1 (OVMF with Microsoft's keys, Secure Boot enforced, raw image on
#     a 4 GiB USB stick): Secure Boot on in the guest, the prepared config
#     kept (first boot does not overwrite it), status page at the address
#     the office leased (auto), console banner without a false warning,
#     SSH with the key from the KICKSTAND partition (no passwords),
#     kickstand as its own user with CAP_NET_BIND_SERVICE and CAP_NET_RAW
#     and nothing else, router solicitations answered,
#     KS-STATE grown and the cache sized from it, a profile edited over SSH
#     picked up without a restart, a BIOS PXE client installed through the
#     appliance (/api/hosts says installed), a machine that reported itself
#     adopted over SSH and installed.
#   off: a profile edited on the KICKSTAND partition from this side,
#     kickstand.yaml deleted there, and an upgrade (image/upgrade.sh) to an
#     image whose root differs; OVMF without Secure Boot boots the upgraded
#     stick as far as its kernel.
#   boot 2 (SeaBIOS, the same USB stick): the new system, the same SSH host
#     key, state, cache and profiles; kickstand.yaml written again by first
#     boot from the office lease; the edit in force; a UEFI PXE client
#     installed.
#
# Usage (as root): tests/beds/appliance/test.sh [WORKDIR]
#   KICKSTAND_IMAGE_DIR=dir  use dir/kickstand.raw instead of building one
#   KICKSTAND_BIN=path       the binary for the build (see image/build.sh)
# Prints every check and a closing "N passed, N failed"; exits 1 on any
# failure. Needs what tests/setup-peers installs; fails when it is missing.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../../.." && pwd)
netboot=$repo/tests/beds/netboot
work=${1:-$(mktemp -d /var/tmp/ks-appliance.XXXXXX)}
mkdir -p "$work"
work=$(cd "$work" && pwd)
bed=$work/bed

APPLIANCE_MAC=52:54:00:4b:53:01
BIOS_MAC=52:54:00:12:34:11
UEFI_MAC=52:54:00:12:34:12
# No profile: it reports itself and is adopted over SSH.
ADOPTED_MAC=52:54:00:12:34:13
# The appliance's NIC as its kernel names it: vm.sh keeps it in PCI slot 2.
APPLIANCE_IFACE=enp0s2
TREE=standin/9/BaseOS/x86_64/os
MIRROR=http://10.77.0.1:8081/
# Hard limits under TCG on a busy 2-core machine; never asserted as speed.
BOOT_LIMIT=900
PXE_LIMIT=600
# systemd-analyze security's exposure of kickstand.service: 1.4 before it
# could write /etc/kickstand/adopted, 1.5 since it reads its interfaces'
# addresses over netlink (AF_NETLINK, for server.address: auto); never to
# grow further.
EXPOSURE_BEFORE=1.5

passed=0 failed=0
t0=$(date +%s)
say() { echo "appliance: $*" >&2; }
elapsed() { echo $(($(date +%s) - t0)); }
ok() { passed=$((passed + 1)); echo "ok    $*"; }
bad() { failed=$((failed + 1)); echo "FAIL  $*"; }
# check DESCRIPTION COMMAND...: one assertion.
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
finish() {
  echo "appliance test: $(elapsed) s in all"
  echo "$passed passed, $failed failed"
  ((failed == 0))
  exit
}
die() { bad "$*"; dump_logs; teardown; finish; }
dump_logs() {
  for f in "$work"/*.log "$bed"/*.log; do
    [[ -f $f ]] || continue
    echo "===== $f (last 60 lines)"
    tail -n 60 "$f" | tr -d '\r'
  done >&2
}
teardown() {
  [[ -f $bed/bed.env ]] && "$netboot/bed-down.sh" "$bed" >/dev/null 2>&1
  true
}
trap 'teardown' EXIT
trap 'die "interrupted"' INT TERM

[[ $(id -u) == 0 ]] || die "run as root (namespaces, taps, image build)"
for tool in qemu-system-x86_64 qemu-img dnsmasq ssh ssh-keygen ssh-keyscan mcopy mtype sfdisk debugfs curl python3; do
  command -v "$tool" >/dev/null || die "$tool missing: run tests/setup-peers"
done

# --- the image -------------------------------------------------------------------
image=${KICKSTAND_IMAGE_DIR:-}
if [[ -z $image ]]; then
  image=$work/image
  s=$(date +%s)
  "$repo/image/build.sh" "$image" >"$work/build.log" 2>&1 || die "image/build.sh failed (see $work/build.log)"
  say "image built in $(($(date +%s) - s)) s"
fi
[[ -f $image/kickstand.raw && -f $image/kickstand.qcow2 ]] || die "no kickstand.raw/.qcow2 in $image"
check "the qcow2 holds the same disk as the raw image" \
  qemu-img compare -q -f raw -F qcow2 "$image/kickstand.raw" "$image/kickstand.qcow2"
raw_mib=$(($(stat -c %s "$image/kickstand.raw") >> 20))
check "the raw image is under 1 GiB ($raw_mib MiB)" test "$raw_mib" -lt 1024

# The disk the appliance runs from: the image on a bigger "stick".
disk=$work/disk.raw
cp --sparse=always "$image/kickstand.raw" "$disk"
truncate -s 4G "$disk"
# Byte offset of partition N of a disk image.
part_offset() { sfdisk --json "$1" 2>/dev/null | python3 -c "import json,sys; print(json.load(sys.stdin)['partitiontable']['partitions'][$2-1]['start']*512)"; }
data_off=$(part_offset "$disk" 4)
[[ -n $data_off ]] || die "no partition 4 (KICKSTAND) on $disk"
# mtools on the KICKSTAND partition, straight in the disk file: what a laptop does.
fat() { local cmd=$1; shift; MTOOLS_SKIP_CHECK=1 "$cmd" -i "$disk@@$data_off" "$@"; }
fat_labelled() { fat mlabel -s :: | grep -q 'Volume label is KICKSTAND'; }
check "the KICKSTAND partition is FAT and labelled KICKSTAND" fat_labelled

ssh-keygen -q -t ed25519 -N '' -C kickstand-test -f "$work/id_ed25519"
fat mcopy -o "$work/id_ed25519.pub" ::/authorized_keys || die "cannot write authorized_keys onto KICKSTAND"

# --- the bed ------------------------------------------------------------------------
KS_MIRROR_TREE=$TREE KS_STANDIN_DIR=${KS_STANDIN_DIR:-/var/tmp/ks-netboot-standin} \
  "$netboot/bed-up.sh" "$bed" >"$work/bed-up.log" 2>&1 || die "bed-up.sh failed (see $work/bed-up.log)"
# shellcheck disable=SC1091
source "$bed/bed.env"
in_ns() { ip netns exec "$NS" "$@"; }

addr=""
ssh_opts=(-i "$work/id_ed25519" -o UserKnownHostsFile="$work/known_hosts" -o BatchMode=yes
  -o ConnectTimeout=10 -o LogLevel=ERROR)
on_appliance() { in_ns ssh "${ssh_opts[@]}" -o StrictHostKeyChecking=yes "root@$addr" "$@"; }
http() { in_ns curl -sS -m 10 "$@"; }

# Boots the appliance and waits for its status page; sets addr and ready_s.
boot_appliance() { # FIRMWARE NAME [HOST_KEY_CHECKING [virtio|usb]]
  local fw=$1 name=$2 bus=${4:-virtio} started lease
  "$here/vm.sh" "$bed" "$fw" "$disk" "$work/$name.log" "$APPLIANCE_MAC" $((BOOT_LIMIT + 600)) "$bus" ||
    die "cannot start the appliance VM"
  started=$(date +%s)
  addr=""
  while :; do
    (($(date +%s) - started < BOOT_LIMIT)) || die "$name: no status page within $BOOT_LIMIT s"
    [[ -s $bed/appliance.pid ]] && kill -0 "$(cat "$bed/appliance.pid")" 2>/dev/null || die "$name: QEMU exited"
    if [[ -z $addr ]]; then
      lease=$(grep -i " $APPLIANCE_MAC " "$bed/office.leases" 2>/dev/null | awk '{ print $3; exit }')
      addr=$lease
    fi
    if [[ -n $addr ]] && http -o /dev/null -f "http://$addr/" 2>/dev/null; then break; fi
    sleep 2
  done
  ready_s=$(($(date +%s) - started))
  say "$name ($fw, $bus disk): status page at http://$addr/ after $ready_s s (power-on to ready)"
  # SSH starts beside kickstand; give it the same generous limit.
  for _ in $(seq 60); do
    in_ns ssh "${ssh_opts[@]}" -o StrictHostKeyChecking="${3:-accept-new}" "root@$addr" true 2>/dev/null && return 0
    sleep 2
  done
  die "$name: no SSH login with the key from KICKSTAND/authorized_keys"
}

poweroff_appliance() {
  local pid
  pid=$(cat "$bed/appliance.pid" 2>/dev/null)
  on_appliance systemctl poweroff >/dev/null 2>&1
  for _ in $(seq 120); do kill -0 "$pid" 2>/dev/null || return 0; sleep 1; done
  die "the appliance did not power off within 120 s"
}

# Starts the appliance VM from its USB stick only until the kernel prints
# its first line, then stops it: the firmware's and the loaders' part of a
# boot, before anything writes to the disk. Sets kernel_s.
boot_to_kernel() { # FIRMWARE NAME
  local s pid
  "$here/vm.sh" "$bed" "$1" "$disk" "$work/$2.log" "$APPLIANCE_MAC" "$BOOT_LIMIT" usb ||
    die "cannot start the appliance VM"
  s=$(date +%s) kernel_s=""
  pid=$(cat "$bed/appliance.pid")
  while (($(date +%s) - s < BOOT_LIMIT)) && kill -0 "$pid" 2>/dev/null; do
    grep -aq '\] Linux version' "$work/$2.log" && { kernel_s=$(($(date +%s) - s)); break; }
    sleep 1
  done
  kill "$pid" 2>/dev/null
  for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || return 0; sleep 1; done
  die "$2: QEMU did not stop"
}

# A PXE client on kstap0, booted by the netboot bed's vm.sh; "installed"
# means the stand-in installer fetched its kickstart from the appliance
# and reported back.
pxe_install() { # FIRMWARE MAC [NAME]
  local fw=$1 mac=$2 name=${3:-$1} s
  local log=$work/pxe-$name.log
  s=$(date +%s)
  "$netboot/vm.sh" "$bed" "$fw" "$mac" "$log" "$PXE_LIMIT" >/dev/null 2>"$work/pxe-$name.qemu.log"
  say "PXE client $mac ($fw) ran $(($(date +%s) - s)) s beside the appliance"
  check "$name PXE client fetched its kickstart from the appliance" grep -q "KS-STANDIN: fetched kickstart for $mac" "$log"
  check "$name PXE client reported installed" grep -q "KS-STANDIN: reported installed for $mac" "$log"
  check "$name PXE client's kickstart came from http://$addr/" grep -q "KS-STANDIN: fetching http://$addr/ks/" "$log"
  check "/api/hosts shows $mac installed" host_phase_is "$mac" installed
}
host_field() { # MAC FIELD: from the appliance's /api/hosts
  http "http://$addr/api/hosts" | python3 -c "
import json, sys
for h in json.load(sys.stdin):
    if h['mac'] == '$1': print(h.get('$2', ''))"
}
host_phase_is() { [[ $(host_field "$1" phase | tr 'A-Z' 'a-z') == "$2" ]]; }

# The stand-in OS takes its tree from the bed's mirror under the name
# `centos`, which every kickstand.yaml made from the example has (pointed
# at the bed by the test): the profiles stay valid when first boot writes
# the config again.
profile() { # HOSTNAME_OF_BIOS_CLIENT: the test's host profile
  cat <<YAML
os:
  standin-9:
    title: Installer stand-in
    mirror: centos
    tree: $TREE
    kickstart: centos-stream-9.ks.j2
    boot_args: console=ttyS0
hosts:
  "$BIOS_MAC":
    hostname: $1
    os: standin-9
  "$UEFI_MAC":
    hostname: uefi01
    os: standin-9
YAML
}

# --- before first boot: the stick prepared from a laptop -----------------------------
# The example, with the interface named and the bed as mirror `centos`;
# `address: auto` as it comes. Plus a host profile.
fat mtype ::/kickstand.yaml.example >"$work/kickstand.yaml.example" ||
  die "no kickstand.yaml.example on KICKSTAND"
sed -e "s|^  interfaces: \[\]\$|  interfaces: [$APPLIANCE_IFACE]|" -e "s|^  centos: .*|  centos: [$MIRROR]|" \
  -e "s|^  answer_router_solicitations: false\$|  answer_router_solicitations: true|" \
  "$work/kickstand.yaml.example" >"$work/kickstand.yaml"
prepared() {
  grep -q "^  address: auto\$" "$1" && grep -q "^  interfaces: \[$APPLIANCE_IFACE\]\$" "$1" &&
    grep -qF "  centos: [$MIRROR]" "$1" && grep -q "^  answer_router_solicitations: true\$" "$1"
}
check "the example says address: auto, and takes the interface, a mirror and answer_router_solicitations: true" \
  prepared "$work/kickstand.yaml"
fat mcopy -o "$work/kickstand.yaml" ::/kickstand.yaml || die "cannot write kickstand.yaml onto KICKSTAND"
profile prepared01 >"$work/bed.yaml"
fat mcopy -o "$work/bed.yaml" ::/hosts/bed.yaml || die "cannot write hosts/bed.yaml onto KICKSTAND"

# --- boot 1: UEFI with Secure Boot, first boot from a USB stick ---------------------
# A USB stick is what the image is for, and the one disk the kernel finds
# late: KS-STATE must grow on it all the same. Most servers ship with
# Secure Boot on: shim, GRUB and kernel must pass it.
boot_appliance uefi-sb boot1 accept-new usb
ready1=$ready_s
sb_state=$(on_appliance mokutil --sb-state 2>&1)
check "booted through UEFI with Secure Boot on (mokutil: $sb_state)" test "$sb_state" = "SecureBoot enabled"
check "the office DHCP server leased the appliance $addr" grep -qi "$APPLIANCE_MAC $addr" "$bed/office.leases"
status_page_answers() {
  http -f "http://$addr/" | grep -q "<title>Kickstand</title>" &&
    http -f "http://$addr/api/status" | grep -q "\"base_url\": *\"http://$addr\""
}
check "status page at http://$addr/ answers, naming that address (auto: $APPLIANCE_IFACE's lease)" status_page_answers
# The serial console (COM1) shows what a monitor on the appliance would.
console_has() { tr -d '\r' <"$work/boot1.log" | grep -qF "$1"; }
for _ in $(seq 30); do console_has "Kickstand ready at http://$addr/" && break; sleep 1; done
check "console banner: ready, at http://$addr/" console_has "Kickstand ready at http://$addr/"
check "console banner: ProxyDHCP running" console_has "ProxyDHCP     running on"
check "console banner: office proxy flagged as not set" console_has "office proxy  NOT SET"
check "console banner: the operator's HTTPS address" console_has "operator      https://$addr/"
check "console banner: no warning (address: auto, interface $APPLIANCE_IFACE present)" \
  test -z "$(tr -d '\r' <"$work/boot1.log" | grep -F '  WARNING       ')"
# The fingerprint on the console is the certificate's the appliance serves.
banner_fp=$(tr -d '\r' <"$work/boot1.log" | awk '/certificate   SHA-256/ { a = $3; getline; print a $1; exit }')
served_fp=$(in_ns sh -c "openssl s_client -connect $addr:443 </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256" | sed 's/.*=//')
check "console banner: the HTTPS certificate's fingerprint ($served_fp)" test -n "$served_fp" -a "$banner_fp" = "$served_fp"

iface=$(on_appliance "ip -4 -o addr show | awk '/ $addr\\//{print \$2}'")
check "the lease is on $APPLIANCE_IFACE (is: $iface)" test "$iface" = "$APPLIANCE_IFACE"
check "first boot did not overwrite the prepared kickstand.yaml" \
  test "$(on_appliance cat /etc/kickstand/kickstand.yaml)" = "$(cat "$work/kickstand.yaml")"
check "first boot did not run (kickstand.yaml was there)" \
  test "$(on_appliance systemctl show -p ConditionResult --value kickstand-firstboot)" = no
check "the host profile from KICKSTAND is in force: $BIOS_MAC is prepared01" \
  test "$(host_field "$BIOS_MAC" hostname)" = prepared01
# sshd offers no other method than publickey.
passwords_refused() {
  local out
  out=$(in_ns ssh -o BatchMode=yes -o ConnectTimeout=10 -o PubkeyAuthentication=no -o StrictHostKeyChecking=no \
    -o UserKnownHostsFile=/dev/null "root@$addr" true 2>&1)
  grep -q 'Permission denied (publickey)' <<<"$out"
}
check "password logins are refused by sshd" passwords_refused

pid=$(on_appliance systemctl show -p MainPID --value kickstand)
check "kickstand.service runs (pid $pid)" test "${pid:-0}" -gt 0
status=$(on_appliance cat "/proc/$pid/status")
user=$(on_appliance ps -o user= -p "$pid")
check "kickstand runs as user kickstand (is: $user)" test "$user" = kickstand
for cap in CapEff CapPrm CapBnd CapAmb; do
  value=$(awk -v c="$cap:" '$1 == c { print $2 }' <<<"$status")
  # 0x2400 = bits 10 and 13 = CAP_NET_BIND_SERVICE and CAP_NET_RAW (for
  # router advertisements), and nothing else.
  check "$cap is CAP_NET_BIND_SERVICE and CAP_NET_RAW only (is $value)" test "$value" = 0000000000002400
done
check "NoNewPrivileges is set" grep -q "^NoNewPrivs:[[:space:]]*1" <<<"$status"
on_appliance systemd-analyze security kickstand.service >"$work/security.txt" 2>&1
score=$(grep -o "Overall exposure level for kickstand.service: .*" "$work/security.txt")
check "systemd-analyze security: $score" test -n "$score"
exposure=$(grep -oE '[0-9]+\.[0-9]+' <<<"$score")
check "the unit is as locked down as before (exposure $exposure <= $EXPOSURE_BEFORE)" \
  awk -v e="$exposure" -v b="$EXPOSURE_BEFORE" 'BEGIN { exit !(e != "" && e + 0 <= b + 0) }'
# Bound to the interface (SO_BINDTODEVICE) without CAP_NET_RAW: 0.0.0.0%enp0s2:67.
dhcp_sockets() { on_appliance "ss -Hulnp '( sport = :67 or sport = :4011 )'" | grep kickstand | grep -c "%$iface:"; }
check "ProxyDHCP listens on UDP 67 and 4011 as kickstand, bound to $iface" test "$(dhcp_sockets)" -eq 2
state_mib=$(on_appliance df -m --output=size /var/lib/kickstand | tail -n 1 | tr -d ' ')
check "KS-STATE grew to the 4 GiB disk's end ($state_mib MiB)" test "${state_mib:-0}" -gt 2500
root_on_usb() { on_appliance 'readlink -f /sys/class/block/$(findmnt -no SOURCE / | sed s,^/dev/,,)' | grep -q /usb; }
check "the root file system is on the USB stick" root_on_usb

# A profile edited over SSH (rename-style saves, as editors do) while it runs.
profile bios01 | on_appliance "cat >/etc/kickstand/hosts/.bed.yaml.tmp && mv /etc/kickstand/hosts/.bed.yaml.tmp /etc/kickstand/hosts/bed.yaml"
seen=""
for _ in $(seq 30); do
  [[ $(host_field "$BIOS_MAC" hostname) == bios01 ]] && { seen=1; break; }
  sleep 1
done
check "a profile written over SSH is in force without a restart" test -n "$seen"
check "kickstand was not restarted for it" test "$(on_appliance systemctl show -p MainPID --value kickstand)" = "$pid"

pxe_install bios "$BIOS_MAC"
# answer_router_solicitations: true in the prepared config, with nothing
# added to the unit: the iPXE that just installed was answered.
advertised() {
  on_appliance curl -sf "http://$addr/metrics" |
    awk '/^kickstand_router_solicitations_total\{.*outcome="advertised"/ { n += $2 } END { exit !(n > 0) }'
}
check "router solicitations answered (the unit grants CAP_NET_RAW, no drop-in)" advertised
check "no error about router solicitations in the journal" \
  test -z "$(on_appliance journalctl -u kickstand -b -p err --no-pager -q | grep -i 'router solicitations')"

# Adopt over SSH: a machine without a profile reports itself through the
# daemon's own routes (as its discovery script would; made up here, an
# unknown machine booting under TCG is too slow), the operator adopts it
# with the CLI, and it installs.
adopted_file=/etc/kickstand/adopted/${ADOPTED_MAC//:/-}.yaml
on_appliance "sed -i 's/^  unknown: ignore\$/  unknown: discover/' /etc/kickstand/kickstand.yaml" ||
  bad "set dhcp.unknown: discover over SSH"
discovery_script_served() { on_appliance curl -sf "http://$addr/boot/$ADOPTED_MAC.ipxe" | grep -q "api/discover"; }
seen=""
for _ in $(seq 30); do discovery_script_served && { seen=1; break; }; sleep 1; done
check "an unknown machine is sent the discovery script (dhcp.unknown: discover in force)" test -n "$seen"
on_appliance curl -sf -o /dev/null "'http://$addr/api/discover/$ADOPTED_MAC?product=Stand-in&serial=SN-ADOPT'" ||
  bad "report $ADOPTED_MAC to /api/discover from the appliance"
# grep reads all (not -q): the CLI's output is not cut short.
check "kickstand discovered (over SSH) lists $ADOPTED_MAC" on_appliance "kickstand discovered | grep -i $ADOPTED_MAC >/dev/null"
adopt_rc=0
on_appliance kickstand adopt "$ADOPTED_MAC" --hostname adopted01 --os standin-9 >"$work/adopt.out" 2>&1 || adopt_rc=$?
check "kickstand adopt over SSH succeeds ($(tr '\n' ' ' <"$work/adopt.out"))" test "$adopt_rc" -eq 0
check "the adopted profile is at $adopted_file, on KS-STATE" \
  on_appliance "test -s $adopted_file && test -s /var/lib/kickstand/adopted/${adopted_file##*/}"
check "kickstand hosts (over SSH) lists adopted01" on_appliance "kickstand hosts | grep adopted01 >/dev/null"

# The CLI over SSH while a profile is broken: the daemon keeps its last good
# set, and the commands that ask it still work and say so.
broken_file=/etc/kickstand/hosts/zz-broken.yaml
on_appliance "printf 'hosts:\n  - mac: [oops\n' >$broken_file" || bad "write a broken profile over SSH"
cli_rc=0
on_appliance kickstand hosts >"$work/broken.out" 2>&1 || cli_rc=$?
lists_hosts() { ((cli_rc == 0)) && grep -q adopted01 "$work/broken.out"; }
check "kickstand hosts (over SSH) works while $broken_file is broken (exit $cli_rc)" lists_hosts
says_last_good_set() { grep -q "$broken_file:" "$work/broken.out" && grep -q "serving generation" "$work/broken.out"; }
check "it names the broken file and says the daemon serves its last good set" says_last_good_set
on_appliance rm "$broken_file" || bad "remove the broken profile"
check "$ADOPTED_MAC is in force without a restart (/api/hosts)" test "$(host_field "$ADOPTED_MAC" hostname)" = adopted01
pxe_install bios "$ADOPTED_MAC" adopted

cache1=$(on_appliance "cd /var/lib/kickstand/cache && find . -type f | sort")
mirror_gets() { grep -E "\"GET /$TREE/images/pxeboot/(vmlinuz|initrd.img) " "$bed/mirror.log"; }
installer_from_appliance_only() { local g; g=$(mirror_gets); [[ -n $g ]] && ! grep -qv "^$addr " <<<"$g"; }
check "the mirror served the installer to the appliance only" installer_from_appliance_only
check "the installer is in the appliance's cache on KS-STATE" on_appliance grep -rqs images/pxeboot/vmlinuz /var/lib/kickstand/cache
state1=$(on_appliance "cd /var/lib/kickstand/state && find . -type f | sort")
hostkey1=$(in_ns ssh-keyscan -t ed25519 "$addr" 2>/dev/null | awk '{ print $3 }')
poweroff_appliance

# --- off: edits from the laptop side, and an upgrade -----------------------------------
profile bios01-edited >"$work/bed.yaml"
fat mcopy -o "$work/bed.yaml" ::/hosts/bed.yaml || bad "write hosts/bed.yaml onto KICKSTAND"
# Deleted, so that the next boot writes it again from what it sees.
fat mdel ::/kickstand.yaml || bad "delete kickstand.yaml from KICKSTAND"

new=$work/new.raw
cp --sparse=always "$image/kickstand.raw" "$new"
root_off=$(part_offset "$new" 3)
root_len=$(sfdisk --json "$new" 2>/dev/null | python3 -c "import json,sys; print(json.load(sys.stdin)['partitiontable']['partitions'][2]['size']*512)")
dd if="$new" of="$work/root.img" bs=4M iflag=skip_bytes,count_bytes skip="$root_off" count="$root_len" status=none
echo "upgraded by the appliance test" >"$work/marker"
debugfs -w -R "write $work/marker /usr/lib/kickstand/upgrade-marker" "$work/root.img" >/dev/null 2>&1
dd if="$work/root.img" of="$new" bs=4M oflag=seek_bytes seek="$root_off" conv=notrunc status=none
rm -f "$work/root.img"
"$repo/image/upgrade.sh" "$new" "$disk" >"$work/upgrade.log" 2>&1
check "image/upgrade.sh wrote the new system partitions" test $? -eq 0
# Secure Boot off, as some servers have it: shim hands over to GRUB
# unchecked. What follows the kernel does not depend on the firmware, and
# boots 1 and 2 prove it.
boot_to_kernel uefi uefi-no-sb
check "OVMF without Secure Boot starts the upgraded stick's kernel (after ${kernel_s:-no} s)" test -n "$kernel_s"

# --- boot 2: SeaBIOS, after the upgrade, from the same stick ---------------------------
boot_appliance bios boot2 yes usb
ready2=$ready_s
check "the upgraded root is the one booted" test "$(on_appliance cat /usr/lib/kickstand/upgrade-marker)" = "upgraded by the appliance test"
check "booted through BIOS" on_appliance test ! -d /sys/firmware/efi
check "the root file system is on the USB stick" root_on_usb
check "SSH host key kept (known_hosts still matches)" test "$(in_ns ssh-keyscan -t ed25519 "$addr" 2>/dev/null | awk '{ print $3 }')" = "$hostkey1"
conf=$(on_appliance cat /etc/kickstand/kickstand.yaml)
check "first boot wrote kickstand.yaml again with address: auto" grep -q "^  address: auto\$" <<<"$conf"
check "first boot put ProxyDHCP on $iface, the interface with the lease" grep -q "^  interfaces: \[$iface\]\$" <<<"$conf"
check "first boot noted the lease it saw ($addr on $iface)" grep -q "^# kickstand.yaml.example: $iface had a carrier and $addr from" <<<"$conf"
proxy_flagged() { grep -q "SET THIS: the office HTTP proxy" <<<"$conf" && ! grep -q "^proxy:" <<<"$conf"; }
check "first boot left the office proxy unset and flagged" proxy_flagged
cache_max=$(awk '$1 == "max_size:" { print $2 }' <<<"$conf")
check "first boot sized the cache from the grown KS-STATE (max_size: $cache_max)" \
  test "$cache_max" = "$((state_mib * 8 / 10 - 64))MiB"
check "status page at http://$addr/ answers, naming that address" status_page_answers
# The bed as mirror `centos`, over SSH, for the UEFI client's install.
on_appliance "sed -i 's|^  centos: .*|  centos: [$MIRROR]|' /etc/kickstand/kickstand.yaml" ||
  bad "edit kickstand.yaml over SSH"
mirror_in_force() { http "http://$addr/api/status" | grep -q "\"$MIRROR\""; }
seen=""
for _ in $(seq 30); do mirror_in_force && { seen=1; break; }; sleep 1; done
check "kickstand.yaml edited over SSH is in force without a restart (mirror centos: $MIRROR)" test -n "$seen"
check "state kept" test "$(on_appliance "cd /var/lib/kickstand/state && find . -type f | sort")" = "$state1"
check "cache kept" test "$(on_appliance "cd /var/lib/kickstand/cache && find . -type f | sort")" = "$cache1"
check "$BIOS_MAC is still installed after reboot and upgrade" host_phase_is "$BIOS_MAC" installed
check "the profile edited on KICKSTAND while off is in force" test "$(host_field "$BIOS_MAC" hostname)" = bios01-edited
check "the adopted profile is kept: $ADOPTED_MAC is adopted01" test "$(host_field "$ADOPTED_MAC" hostname)" = adopted01
check "$ADOPTED_MAC is still installed" host_phase_is "$ADOPTED_MAC" installed
pxe_install uefi "$UEFI_MAC"
# Boot images are revalidated with the mirror: 304, not a second download.
installer_revalidated() {
  local g; g=$(mirror_gets)
  [[ $(grep -c '" 200 ' <<<"$g") == 2 && $(grep -c '" 304 ' <<<"$g") -ge 2 ]]
}
check "after the reboot the installer came from the kept cache (mirror: one 200 each, then 304s)" installer_revalidated
poweroff_appliance

say "power-on to status page: $ready1 s (OVMF Secure Boot, USB stick, first boot), $ready2 s (SeaBIOS, USB stick)"
echo "appliance: boot-to-ready ${ready1}s (uefi-sb, usb, first boot) ${ready2}s (bios, usb); $score"
finish
