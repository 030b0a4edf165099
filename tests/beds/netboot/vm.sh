#!/bin/bash
# Boots one QEMU machine (TCG) on the bed's tap device and waits for it.
#
# Usage: vm.sh [--disk IMAGE] [--http-first] [--no-pxe4] [--print] WORKDIR FIRMWARE MAC SERIAL_LOG [TIMEOUT_SECONDS]
#   FIRMWARE:
#   bios:     SeaBIOS; the NIC's default option ROM is QEMU's iPXE (ipxe-qemu).
#   uefi:     OVMF with the NIC's option ROM disabled, so the firmware's
#             native PXE runs and has to TFTP a boot loader first.
#   uefi-sb:  OVMF built for Secure Boot (SMM) with Microsoft's keys enrolled
#             and Secure Boot enforced (OVMF_CODE_4M.secboot.fd +
#             OVMF_VARS_4M.ms.fd): only signed loaders run.
#   aarch64:  qemu-system-aarch64 "virt" with AAVMF (qemu-efi-aarch64) and a
#             virtio NIC without option ROM: native PXE, client arch 11.
#   --disk IMAGE   attaches IMAGE (raw, never written: snapshot=on) as a
#             virtio disk; the boot order becomes network first, disk second
#             (bootindex 1 and 2), so "boot to disk" has a disk to reach.
#   --http-first   UEFI only: the NIC's UEFI HTTP boot (IPv4) option is
#             moved first in the VM's BootOrder, ahead of PXE, so HTTP boot
#             is tried first without breaking TFTP (see set-http-first.py).
#   --no-pxe4 UEFI only: the firmware's IPv4 PXE is switched off (fw_cfg),
#             as on an IPv6-only rack: PXEv6 is its first network boot.
#   --print   prints the machine's QEMU command line, one argument a line,
#             instead of running it: for a BMC that powers it on and off
#             (tests/beds/bmc/start.sh, run in $NS). No timeout and no
#             -no-reboot (a guest reboot resets the machine, as on real
#             hardware: power is the BMC's), and every power-on appends to
#             SERIAL_LOG.
# Exits with QEMU's status (0 after the guest powers off), 124 on timeout.
# Without --disk the machine has no disk: "boot to local disk" falls through.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
disk=""
http_first=""
print=""
pxe4=""
while [[ ${1:-} == --* ]]; do
  case $1 in
    --disk) disk=${2:?--disk needs an image}; shift 2 ;;
    --http-first) http_first=1; shift ;;
    --print) print=1; shift ;;
    --no-pxe4) pxe4=n; shift ;;
    *) echo "vm.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

work=${1:?usage: vm.sh [--disk IMAGE] [--http-first] [--no-pxe4] [--print] WORKDIR bios|uefi|uefi-sb|aarch64 MAC SERIAL_LOG [TIMEOUT]}
fw=${2:?firmware: bios|uefi|uefi-sb|aarch64}
mac=${3:?mac}
serial=${4:?serial log}
limit=${5:-240}
# shellcheck disable=SC1091
source "$work/bed.env"

qemu=qemu-system-x86_64
args=(-m 768 -smp 1 -nodefaults -display none -vga none -monitor none)
[[ -n $print ]] || args+=(-no-reboot)
# With a disk the order is set per device; without one, network only.
if [[ -n $disk ]]; then
  [[ -r $disk ]] || { echo "vm.sh: cannot read disk $disk" >&2; exit 1; }
  nic_boot=",bootindex=1"
  args+=(-drive "if=none,id=d0,format=raw,snapshot=on,file=$disk"
    -device "virtio-blk-pci,drive=d0,bootindex=2")
else
  nic_boot=""
  [[ $fw == aarch64 ]] || args+=(-boot order=n)
fi

# On a bed with a tagged VLAN (bed-up.sh KS_BED_VLAN) the NIC offloads no
# checksums: vlan-switch.py copies the guest's frames as bytes, so a
# checksum left to the host's kernel would reach the other side unfilled.
nic_csum=${VLAN:+,csum=off}

# Copies a VARS template for this VM (the guest writes to it).
vars_copy() {
  cp "$1" "$work/VARS.fd"
}

case $fw in
  bios)
    [[ -z $http_first ]] || { echo "vm.sh: --http-first is for UEFI firmware" >&2; exit 2; }
    args+=(-machine q35,accel=tcg -device "virtio-net-pci,netdev=n0,mac=$mac$nic_boot$nic_csum")
    # With no VGA, SeaBIOS mirrors the option ROM's text console (iPXE) to COM1.
    args+=(-machine graphics=off)
    ;;
  uefi | uefi-sb)
    if [[ $fw == uefi ]]; then
      code=/usr/share/OVMF/OVMF_CODE_4M.fd
      vars=/usr/share/OVMF/OVMF_VARS_4M.fd
      args+=(-machine q35,accel=tcg)
    else
      # The secboot build refuses to start without SMM; the flash must be
      # SMM-only, or the guest OS could rewrite the keys.
      code=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd
      vars=/usr/share/OVMF/OVMF_VARS_4M.ms.fd
      args+=(-machine q35,accel=tcg,smm=on -global driver=cfi.pflash01,property=secure,value=on)
    fi
    [[ -r $code && -r $vars ]] || { echo "vm.sh: OVMF missing (apt-get install ovmf)" >&2; exit 1; }
    vars_copy "$vars"
    args+=(-drive "if=pflash,format=raw,unit=0,readonly=on,file=$code"
      -drive "if=pflash,format=raw,unit=1,file=$work/VARS.fd"
      -device "virtio-net-pci,netdev=n0,mac=$mac,romfile=$nic_boot$nic_csum")
    ;;
  aarch64)
    qemu=qemu-system-aarch64
    code=/usr/share/AAVMF/AAVMF_CODE.fd
    vars=/usr/share/AAVMF/AAVMF_VARS.fd
    [[ -r $code && -r $vars ]] || { echo "vm.sh: AAVMF missing (apt-get install qemu-efi-aarch64)" >&2; exit 1; }
    command -v "$qemu" >/dev/null || { echo "vm.sh: $qemu missing (apt-get install qemu-system-arm)" >&2; exit 1; }
    vars_copy "$vars"
    args+=(-machine virt,accel=tcg -cpu cortex-a57
      -drive "if=pflash,format=raw,unit=0,readonly=on,file=$code"
      -drive "if=pflash,format=raw,unit=1,file=$work/VARS.fd"
      -device "virtio-net-pci,netdev=n0,mac=$mac,romfile=$nic_boot$nic_csum")
    ;;
  *) echo "vm.sh: firmware must be bios, uefi, uefi-sb or aarch64" >&2; exit 2 ;;
esac
# As on an IPv6-only rack: the firmware's IPv4 PXE is off (OVMF, AAVMF).
if [[ -n $pxe4 ]]; then
  [[ $fw != bios ]] || { echo "vm.sh: --no-pxe4 is for UEFI firmware" >&2; exit 2; }
  args+=(-fw_cfg name=opt/org.tianocore/IPv4PXESupport,string=n)
fi
if [[ $fw != aarch64 ]]; then
  # SeaBIOS/OVMF debug output goes to a second file next to the serial log.
  args+=(-chardev "file,id=fwlog,path=${serial%.log}.firmware.log" -device isa-debugcon,iobase=0x402,chardev=fwlog)
fi

# --http-first: the firmware creates its boot options on the first boot, so
# boot once with the NIC on a hub that leads nowhere (no packet reaches the
# bed), stop as soon as the firmware starts its first boot option (the
# options and BootOrder are written by then), and reorder BootOrder.
if [[ -n $http_first ]]; then
  prime=${serial%.log}.prime.log
  : >"$prime"
  "$qemu" "${args[@]}" -netdev hubport,id=n0,hubid=0 -serial "file:$prime" \
    -pidfile "$work/qemu-prime.pid" </dev/null &
  qpid=$!
  for _ in $(seq 1200); do
    grep -qa '>>Start' "$prime" && break
    kill -0 "$qpid" 2>/dev/null || break
    sleep 0.1
  done
  kill "$qpid" 2>/dev/null || true
  wait "$qpid" 2>/dev/null || true
  rm -f "$work/qemu-prime.pid"
  grep -qa '>>Start' "$prime" || { echo "vm.sh: priming the VARS store never reached a boot option" >&2; exit 1; }
  python3 "$here/set-http-first.py" "$work/VARS.fd" "$mac" >&2
fi

: >"$serial"
tap=(-netdev "tap,id=n0,ifname=kstap0,script=no,downscript=no")
if [[ -n $print ]]; then
  printf '%s\n' "$qemu" "${args[@]}" "${tap[@]}" \
    -chardev "file,id=ser0,path=$serial,append=on" -serial chardev:ser0
  exit 0
fi
status=0
timeout --kill-after=5 "$limit" ip netns exec "$NS" "$qemu" "${args[@]}" "${tap[@]}" \
  -serial "file:$serial" -pidfile "$work/qemu.pid" </dev/null || status=$?
rm -f "$work/qemu.pid"
exit "$status"
