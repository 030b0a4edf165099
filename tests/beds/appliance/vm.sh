#!/bin/bash
# Starts the appliance VM (TCG) in the background on the netboot bed: its
# disk is DISK, its NIC is on tap kstap1 (made here, on the bed's bridge,
# beside the office dnsmasq and the PXE clients' kstap0), its option ROM is
# off so it never netboots itself. QEMU's pid goes to WORK/appliance.pid,
# which bed-down.sh stops like the bed's own processes.
#
# Usage: vm.sh WORK bios|uefi|uefi-sb DISK SERIAL_LOG MAC [TIMEOUT_SECONDS [virtio|usb]]
#   bios: SeaBIOS boots GRUB i386-pc from the BIOS boot partition.
#   uefi: OVMF (OVMF_CODE_4M.fd + a fresh copy of OVMF_VARS_4M.fd, so no
#         boot entry is remembered) boots EFI/BOOT/BOOTX64.EFI.
#   uefi-sb: the same with Microsoft's keys enrolled and Secure Boot
#         enforced (OVMF_CODE_4M.ms.fd + a fresh copy of OVMF_VARS_4M.ms.fd),
#         as most servers ship: only signed loaders and kernels run.
#   virtio: the disk is a virtio disk (a VM); usb: a USB stick on an xHCI
#         controller, which the kernel finds only seconds after it starts.
set -euo pipefail

work=${1:?usage: vm.sh WORK bios|uefi|uefi-sb DISK SERIAL MAC [TIMEOUT]}
fw=${2:?firmware: bios|uefi|uefi-sb}
disk=${3:?disk}
serial=${4:?serial log}
mac=${5:?mac}
limit=${6:-1800}
bus=${7:-virtio}
# shellcheck disable=SC1091
source "$work/bed.env"

if ! ip -n "$NS" link show kstap1 >/dev/null 2>&1; then
  ip -n "$NS" tuntap add dev kstap1 mode tap
  ip -n "$NS" link set kstap1 master ksbr0
  ip -n "$NS" link set kstap1 up
fi

# The disk's controller takes the PCI slot before the NIC's whatever the bus,
# so the NIC keeps its slot and name (the first-boot config names it).
case $bus in
  virtio) disk_dev=(-device "virtio-blk-pci,drive=d0,bootindex=1") ;;
  usb) disk_dev=(-device "qemu-xhci,id=xhci" -device "usb-storage,bus=xhci.0,drive=d0,bootindex=1") ;;
  *) echo "vm.sh: disk bus must be virtio or usb" >&2; exit 2 ;;
esac
machine=q35,accel=tcg
args=(-m 768 -smp 1 -nodefaults -display none -vga none
  -monitor none -serial "file:$serial" -pidfile "$work/appliance.pid"
  -drive "if=none,id=d0,file=$disk,format=raw" "${disk_dev[@]}"
  -netdev tap,id=n0,ifname=kstap1,script=no,downscript=no
  -device "virtio-net-pci,netdev=n0,mac=$mac,romfile=")
case $fw in
  bios) ;;
  uefi | uefi-sb)
    code=/usr/share/OVMF/OVMF_CODE_4M.fd
    vars=/usr/share/OVMF/OVMF_VARS_4M.fd
    if [[ $fw == uefi-sb ]]; then
      # This build refuses to start without SMM; the flash must be SMM-only,
      # or the guest could rewrite the keys.
      code=/usr/share/OVMF/OVMF_CODE_4M.ms.fd
      vars=/usr/share/OVMF/OVMF_VARS_4M.ms.fd
      machine+=,smm=on
      args+=(-global "driver=cfi.pflash01,property=secure,value=on")
    fi
    [[ -r $code && -r $vars ]] || { echo "vm.sh: OVMF missing (apt-get install ovmf)" >&2; exit 1; }
    cp "$vars" "$work/appliance-OVMF_VARS.fd"
    args+=(-drive "if=pflash,format=raw,unit=0,readonly=on,file=$code"
      -drive "if=pflash,format=raw,unit=1,file=$work/appliance-OVMF_VARS.fd")
    ;;
  *) echo "vm.sh: firmware must be bios, uefi or uefi-sb" >&2; exit 2 ;;
esac
args+=(-machine "$machine")

: >"$serial"
rm -f "$work/appliance.pid"
ip netns exec "$NS" timeout --kill-after=5 "$limit" qemu-system-x86_64 "${args[@]}" \
  </dev/null >"$work/appliance-qemu.log" 2>&1 &
for _ in $(seq 50); do [[ -s $work/appliance.pid ]] && exit 0; sleep 0.1; done
echo "vm.sh: QEMU did not start; see $work/appliance-qemu.log" >&2
exit 1
