#!/bin/bash
# Records the DHCP packets real firmware sends when it is answered, for the
# `decide` tables of crates/dhcp: boots each firmware on the stand-in bed
# (dnsmasq as ProxyDHCP, standin-httpboot.py for HTTP boot) with tcpdump on
# the bridge, and saves every DHCP/ProxyDHCP message it saw.
#
# Usage: capture-firmware.sh OUTDIR [bios-ipxe ovmf-pxe ovmf-httpboot aavmf-pxe]  (root)
# Writes OUTDIR/<name>.pcap, OUTDIR/<name>.serial.log, OUTDIR/<name>.txt
# (pcap-dhcp.py's listing) and OUTDIR/<name>/NN-<src>-<dst>-<type>-<mac>.bin
# (each UDP payload as sent). aavmf-pxe needs KS_BED_AARCH64 (set here) and
# takes minutes under TCG.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${1:?usage: capture-firmware.sh OUTDIR [NAME...]}
shift
want=" ${*:-bios-ipxe ovmf-pxe ovmf-httpboot aavmf-pxe} "
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$out/bed
rm -rf "$work"
mkdir -p "$work"
KS_BED_AARCH64=1 KS_STANDIN_DIR=${KS_STANDIN_DIR:-$out/cache} "$here/bed-up.sh" "$work" standin
trap '"$here/bed-down.sh" "$work" >/dev/null 2>&1 || true' EXIT
# shellcheck disable=SC1091
source "$work/bed.env"

# name fw mac roles stop-text limit [vm.sh options]
run() {
  local name=$1 fw=$2 mac=$3 roles=$4 stop=$5 limit=$6
  shift 6
  [[ $want == *" $name "* ]] || return 0
  # shellcheck disable=SC2086
  "$here/bed-host.sh" "$work" "$mac" $roles
  ip netns exec "$NS" tcpdump -U -q -i ksbr0 -w "$out/$name.pcap" \
    "udp and (port 67 or port 68 or port 4011)" 2>/dev/null &
  local td=$!
  echo $td >"$work/tcpdump.pid"
  sleep 1
  "$here/vm.sh" "$@" "$work" "$fw" "$mac" "$out/$name.serial.log" "$limit" >/dev/null 2>&1 &
  local vm=$!
  python3 "$here/serial-times.py" "$out/$name.serial.log" "$vm" "$stop" >"$out/$name.times" || true
  [[ -s $work/qemu.pid ]] && kill "$(cat "$work/qemu.pid")" 2>/dev/null || true
  wait "$vm" 2>/dev/null || true
  sleep 1
  kill "$td" 2>/dev/null || true
  wait "$td" 2>/dev/null || true
  rm -f "$work/tcpdump.pid"
  python3 "$here/pcap-dhcp.py" "$out/$name.pcap" --save "$out/$name" >"$out/$name.txt"
  echo "capture: $name: $(grep -c . "$out/$name.txt") packets, $(cat "$out/$name.times")" >&2
}

# SeaBIOS + iPXE ROM, answered dnsmasq-style (PXE menu in option 43): its
# DHCP, then boot server discovery (PXEBS) on port 4011.
run bios-ipxe bios 52:54:00:12:36:04 "" "standin.ipxe" 120
# OVMF native PXE, answered dnsmasq-style (proxy OFFER without a boot file):
# DISCOVER, REQUEST to the office server, REQUEST to port 4011.
run ovmf-pxe uefi 52:54:00:12:36:01 "" "NBP file downloaded successfully" 120
# OVMF HTTP boot first: DISCOVER with HTTPClient, the stand-in's proxy
# OFFER, REQUEST to the office server; then ipxe.efi's own DHCP, which
# asks on port 4011 too.
run ovmf-httpboot uefi 52:54:00:12:36:02 httpboot "standin.ipxe" 180 --http-first
# AAVMF native PXE (client arch 11) up to GRUB reading its config (which
# Debian's GRUB fetches from the office ACK's siaddr: role next-server).
run aavmf-pxe aarch64 52:54:00:12:36:03 next-server "KS-GRUB: no host config" 900
