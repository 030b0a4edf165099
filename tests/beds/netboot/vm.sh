#!/bin/bash
# Boots one QEMU machine (TCG) on the bed's tap device and waits for it.
#
# Usage: vm.sh WORKDIR bios|uefi MAC SERIAL_LOG [TIMEOUT_SECONDS]
#   bios: SeaBIOS; the NIC's default option ROM is QEMU's iPXE (ipxe-qemu).
#   uefi: OVMF with the NIC's option ROM disabled, so the firmware's native
#         PXE runs and has to TFTP a boot loader first.
# Exits with QEMU's status (0 after the guest powers off), 124 on timeout.
# The machine has no disk: "boot to local disk" just falls through.
set -euo pipefail

work=${1:?usage: vm.sh WORKDIR bios|uefi MAC SERIAL_LOG [TIMEOUT]}
fw=${2:?firmware: bios|uefi}
mac=${3:?mac}
serial=${4:?serial log}
limit=${5:-240}
# shellcheck disable=SC1091
source "$work/bed.env"

args=(-machine q35,accel=tcg -m 768 -smp 1 -nodefaults -display none -vga none
  -no-reboot -monitor none -serial "file:$serial" -pidfile "$work/qemu.pid"
  -netdev tap,id=n0,ifname=kstap0,script=no,downscript=no
  -boot order=n)
# SeaBIOS/OVMF debug output goes to a second file next to the serial log.
args+=(-chardev "file,id=fwlog,path=${serial%.log}.firmware.log" -device isa-debugcon,iobase=0x402,chardev=fwlog)
case $fw in
  bios)
    args+=(-device "virtio-net-pci,netdev=n0,mac=$mac")
    # With no VGA, SeaBIOS mirrors the option ROM's text console (iPXE) to COM1.
    args+=(-machine graphics=off)
    ;;
  uefi)
    code=/usr/share/OVMF/OVMF_CODE_4M.fd
    vars=/usr/share/OVMF/OVMF_VARS_4M.fd
    [[ -r $code && -r $vars ]] || { echo "vm.sh: OVMF missing (apt-get install ovmf)" >&2; exit 1; }
    cp "$vars" "$work/OVMF_VARS.fd"
    args+=(-drive "if=pflash,format=raw,unit=0,readonly=on,file=$code"
      -drive "if=pflash,format=raw,unit=1,file=$work/OVMF_VARS.fd"
      -device "virtio-net-pci,netdev=n0,mac=$mac,romfile=")
    ;;
  *) echo "vm.sh: firmware must be bios or uefi" >&2; exit 2 ;;
esac

: >"$serial"
status=0
timeout --kill-after=5 "$limit" ip netns exec "$NS" qemu-system-x86_64 "${args[@]}" </dev/null || status=$?
rm -f "$work/qemu.pid"
exit "$status"
