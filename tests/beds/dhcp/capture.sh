#!/usr/bin/env bash
# Captures the DHCP packets real firmware sends, for crates/dhcp/tests/fixtures.
# Each firmware boots in QEMU (TCG) on a tap device in a private network
# namespace; nothing answers, so the client keeps retrying and tcpdump keeps
# the DISCOVERs. Usage: capture.sh OUTDIR [SECONDS] [bios-ipxe ovmf uefi-ipxe]
# (needs root). OVMF needs ~200 s to reach its HTTP boot attempt.
set -euo pipefail
out=${1:?outdir}; secs=${2:-90}; shift 2 || true
want=${*:-bios-ipxe ovmf-pxe uefi-ipxe}
mkdir -p "$out"
ns=ks-dhcpcap-$$
work=$(mktemp -d)
cleanup() {
  for p in $(jobs -p); do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$ns"
nx() { ip netns exec "$ns" "$@"; }
nx ip link set lo up
nx ip link add ksbr0 type bridge
nx ip link set ksbr0 up

run() { # name mac qemu-args...
  local name=$1 mac=$2; shift 2
  [[ " $want " == *" $name "* ]] || return 0
  nx ip tuntap add tap-$name mode tap
  nx ip link set tap-$name master ksbr0 up
  ip netns exec "$ns" tcpdump -U -q -i tap-$name -w "$out/$name.pcap" \
    "udp and (port 67 or port 68 or port 4011)" 2>/dev/null &
  local td=$!
  sleep 1
  timeout "$secs" ip netns exec "$ns" qemu-system-x86_64 -machine accel=tcg -m 256 \
    -display none -monitor none -serial "file:$out/$name.serial.log" -no-reboot \
    -chardev file,id=fw,path="$out/$name.firmware.log" -device isa-debugcon,iobase=0x402,chardev=fw \
    -netdev tap,id=n0,ifname=tap-$name,script=no,downscript=no \
    "$@" </dev/null >"$out/$name.qemu.log" 2>&1 || true
  sleep 1; kill "$td" 2>/dev/null || true; wait "$td" 2>/dev/null || true
}

# SeaBIOS + the default iPXE option ROM (efi-virtio.rom from ipxe-qemu, which
# carries the legacy image too): the BIOS "PXE" in QEMU is iPXE itself.
run bios-ipxe 52:54:00:00:00:01 \
  -device virtio-net-pci,netdev=n0,mac=52:54:00:00:00:01 \
  -boot n
# OVMF's own UEFI PXE (PxeBcDxe over VirtioNetDxe, no iPXE ROM) and, after the
# PXE attempts time out, OVMF's UEFI HTTP boot.
cp /usr/share/OVMF/OVMF_VARS_4M.fd "$work/vars.fd"
run ovmf-pxe 52:54:00:00:00:02 \
  -drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
  -drive if=pflash,format=raw,file="$work/vars.fd" \
  -device virtio-net-pci,netdev=n0,mac=52:54:00:00:00:02,romfile=
# iPXE as a UEFI application (Debian's ipxe.efi) started from an ESP.
mkdir -p "$work/esp/EFI/BOOT"
cp /usr/lib/ipxe/ipxe.efi "$work/esp/EFI/BOOT/BOOTX64.EFI"
cp /usr/share/OVMF/OVMF_VARS_4M.fd "$work/vars2.fd"
run uefi-ipxe 52:54:00:00:00:03 \
  -drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
  -drive if=pflash,format=raw,file="$work/vars2.fd" \
  -drive file=fat:rw:"$work/esp",format=raw,if=virtio \
  -device virtio-net-pci,netdev=n0,mac=52:54:00:00:00:03,romfile=
ls -l "$out"
