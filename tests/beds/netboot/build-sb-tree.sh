#!/bin/bash
# Puts the Secure Boot chain into an install tree at the EL9 paths, from
# Debian's signed packages standing in for the OS's own:
#   EFI/BOOT/BOOTX64.EFI   shim (shim-signed: shimx64.efi.signed, signed by
#                          Microsoft's UEFI CA, carries Debian's CA)
#   EFI/BOOT/grubx64.efi   network GRUB (grub-efi-amd64-signed:
#                          grubnetx64.efi.signed, signed by Debian's CA)
# and checks that images/pxeboot/vmlinuz (Debian's kernel, copied there by
# bed-up.sh) is signed by the same CA, so shim → GRUB → kernel verifies.
#
# Usage: build-sb-tree.sh TREE [x86_64|aarch64] [ARM64_CACHE]
#   aarch64 puts BOOTAA64.EFI (shimaa64.efi.signed) and grubaa64.efi
#   (grubnetaa64.efi.signed) there instead, unpacked from Debian's arm64
#   packages that fetch-arm64-loaders.sh downloads into ARM64_CACHE through
#   the machine's apt configuration (nothing arm64 is installed on the host).
set -euo pipefail

tree=${1:?usage: build-sb-tree.sh TREE [x86_64|aarch64] [ARM64_CACHE]}
arch=${2:-x86_64}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

signed_by() { # file -> the issuer lines sbverify lists, empty if unsigned
  sbverify --list "$1" 2>/dev/null | sed -n 's/^ *- \(.*CN=.*\)$/\1/p' | head -n1
}
command -v sbverify >/dev/null || { echo "build-sb-tree: sbverify missing (apt-get install sbsigntool)" >&2; exit 1; }

case $arch in
  x86_64)
    shim=/usr/lib/shim/shimx64.efi.signed
    grub=/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed
    [[ -r $shim ]] || { echo "build-sb-tree: $shim missing (apt-get install shim-signed)" >&2; exit 1; }
    [[ -r $grub ]] || { echo "build-sb-tree: $grub missing (apt-get install grub-efi-amd64-signed)" >&2; exit 1; }
    boot=BOOTX64.EFI
    loader=grubx64.efi
    ;;
  aarch64)
    cache=${3:?build-sb-tree: aarch64 needs ARM64_CACHE}
    "$here/fetch-arm64-loaders.sh" "$cache" >&2
    shim=$cache/root/usr/lib/shim/shimaa64.efi.signed
    grub=$cache/root/usr/lib/grub/arm64-efi-signed/grubnetaa64.efi.signed
    boot=BOOTAA64.EFI
    loader=grubaa64.efi
    ;;
  *) echo "build-sb-tree: arch must be x86_64 or aarch64" >&2; exit 2 ;;
esac

for f in "$shim" "$grub"; do
  [[ -n $(signed_by "$f") ]] || { echo "build-sb-tree: $f carries no signature" >&2; exit 1; }
done
mkdir -p "$tree/EFI/BOOT"
install -m 0644 "$shim" "$tree/EFI/BOOT/$boot"
install -m 0644 "$grub" "$tree/EFI/BOOT/$loader"

kernel=$tree/images/pxeboot/vmlinuz
if [[ $arch == x86_64 && -e $kernel ]]; then
  want=$(signed_by "$grub")
  got=$(signed_by "$kernel")
  [[ $got == "$want" ]] || { echo "build-sb-tree: $kernel is signed by '${got:-nobody}', GRUB by '$want'" >&2; exit 1; }
fi
