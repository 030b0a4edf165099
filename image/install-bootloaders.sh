#!/usr/bin/env bash
# Installs the iPXE boot loaders Kickstand serves over TFTP into DEST (the
# config's tftp.root), from Debian's `ipxe` package and nowhere else:
#   undionly.kpxe  BIOS: chainloads from the NIC's PXE ROM, keeps its driver
#   ipxe.efi       UEFI x64 with iPXE's own NIC drivers
#   snponly.efi    UEFI x64 using the firmware's network driver (SNP)
# Files are copied, not linked: Debian ships ipxe.efi as a symlink to
# /boot/ipxe.efi, and Kickstand's TFTP server refuses every symlink that
# leads out of its root.
set -euo pipefail
dest=${1:?usage: install-bootloaders.sh DEST}
src=${IPXE_DIR:-/usr/lib/ipxe}
if [ ! -e "$src/undionly.kpxe" ]; then
  echo "install-bootloaders: $src/undionly.kpxe not found; apt-get install ipxe" >&2
  exit 1
fi
mkdir -p "$dest"
for f in undionly.kpxe ipxe.efi snponly.efi; do
  install -m 0644 "$(readlink -f "$src/$f")" "$dest/$f"
done
echo "installed undionly.kpxe ipxe.efi snponly.efi from $src into $dest"
