#!/bin/bash
# Builds the "installed system" disks of the netboot bed: a machine that
# boots one of them prints a marker on COM1 and powers off, so a test can
# tell that (and when) boot-to-disk happened.
#
#   OUT/bios.img  BIOS: GRUB for i386-pc (grub-mkrescue's hybrid image, which
#                 SeaBIOS boots as a hard disk). Prints
#                 "KS-DISK: booted from disk (pc, ...)".
#   OUT/bios-up.img  the same, but it stays up after the marker (GRUB
#                 sleeps): a running installed system, for a BMC to power
#                 cycle (the IPMI test; QEMU exits when the others halt).
#   OUT/uefi.img  UEFI: GPT with one EFI system partition laid out like an
#                 installed Debian: EFI/BOOT/BOOTX64.EFI (fallback path) and
#                 EFI/debian/shimx64.efi are Debian's signed shim, next to
#                 each its grubx64.efi (Debian's signed GRUB, prefix
#                 /EFI/debian); EFI/debian/grub.cfg prints
#                 "KS-DISK: booted from disk (efi, <cmdpath>)" — the path
#                 tells which loader ran. Boots with and without Secure Boot.
#
# Usage: build-disk.sh OUT
# Cached by content: the key covers this script and the versions of the
# packages the images come from. No loop devices: the ESP is made with
# mkfs.vfat + mtools in a file and copied into the GPT image.
set -euo pipefail

out=${1:?usage: build-disk.sh OUT}
pkgs=(grub-common grub-pc-bin xorriso mtools dosfstools fdisk shim-signed grub-efi-amd64-signed)
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
    { echo "build-disk: package $p missing (tests/setup-peers installs it)" >&2; exit 1; }
done
shim=/usr/lib/shim/shimx64.efi.signed
grub=/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed

key=$( { sha256sum "$0"; dpkg-query -W -f='${Package} ${Version}\n' "${pkgs[@]}"; } | sha256sum | cut -c1-16)
if [[ -f $out/stamp && $(cat "$out/stamp") == "$key" && -s $out/bios.img && -s $out/bios-up.img && -s $out/uefi.img ]]; then
  exit 0
fi
mkdir -p "$out"
stage=$(mktemp -d "$out/.stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT

# BIOS: GRUB on i386-pc only; its console is mirrored to COM1 explicitly,
# since the VM has no VGA.
bios_disk() { # IMAGE LAST-COMMAND
  rm -rf "$stage/iso"
  mkdir -p "$stage/iso/boot/grub"
  cat >"$stage/iso/boot/grub/grub.cfg" <<CFG
serial --unit=0 --speed=115200
terminal_output --append serial
echo "KS-DISK: booted from disk (\$grub_platform, \$cmdpath)"
$2
CFG
  grub-mkrescue -d /usr/lib/grub/i386-pc --locales= --fonts= --themes= \
    --compress=xz -o "$1" "$stage/iso" >"$stage/mkrescue.log" 2>&1 ||
    { cat "$stage/mkrescue.log" >&2; exit 1; }
}
bios_disk "$stage/bios.img" halt
bios_disk "$stage/bios-up.img" "sleep 86400"

# UEFI: OVMF's console (the VM's COM1) carries GRUB's output.
cat >"$stage/grub.cfg" <<'CFG'
echo "KS-DISK: booted from disk ($grub_platform, $cmdpath)"
halt
CFG
esp_kib=16384
mkfs.vfat -C -n KSESP "$stage/esp.img" "$esp_kib" >/dev/null
mmd -i "$stage/esp.img" ::/EFI ::/EFI/BOOT ::/EFI/debian
mcopy -i "$stage/esp.img" "$shim" ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$stage/esp.img" "$grub" ::/EFI/BOOT/grubx64.efi
mcopy -i "$stage/esp.img" "$shim" ::/EFI/debian/shimx64.efi
mcopy -i "$stage/esp.img" "$grub" ::/EFI/debian/grubx64.efi
mcopy -i "$stage/esp.img" "$stage/grub.cfg" ::/EFI/debian/grub.cfg
truncate -s $(((esp_kib + 2048) * 1024)) "$stage/uefi.img"
printf 'label: gpt\nstart=2048, size=%d, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="EFI System"\n' \
  $((esp_kib * 2)) | sfdisk -q "$stage/uefi.img"
dd if="$stage/esp.img" of="$stage/uefi.img" bs=512 seek=2048 conv=notrunc status=none

mv "$stage/bios.img" "$out/bios.img"
mv "$stage/bios-up.img" "$out/bios-up.img"
mv "$stage/uefi.img" "$out/uefi.img"
echo "$key" >"$out/stamp"
