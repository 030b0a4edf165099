#!/bin/bash
# Fetches Debian's signed arm64 boot loaders without installing anything
# arm64 on the host: enables the arm64 architecture in dpkg (package lists
# only), downloads the .debs with `apt-get download` through the machine's
# own apt configuration (never a hard-coded mirror) and unpacks them with
# dpkg-deb into CACHE/root:
#   usr/lib/shim/shimaa64.efi.signed                      (shim-signed:arm64)
#   usr/lib/grub/arm64-efi-signed/grubnetaa64.efi.signed  (grub-efi-arm64-signed:arm64)
# Usage: fetch-arm64-loaders.sh CACHE   (root; a no-op when CACHE is complete)
set -euo pipefail

cache=${1:?usage: fetch-arm64-loaders.sh CACHE}
packages=(shim-signed:arm64 grub-efi-arm64-signed:arm64)
want=(usr/lib/shim/shimaa64.efi.signed usr/lib/grub/arm64-efi-signed/grubnetaa64.efi.signed)

complete() {
  for f in "${want[@]}"; do [[ -s $cache/root/$f ]] || return 1; done
}
complete && exit 0

if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  dpkg --add-architecture arm64
fi
# The arm64 lists are there once apt knows a candidate for the package.
if ! apt-cache policy grub-efi-arm64-signed:arm64 2>/dev/null | grep -q 'Candidate: [0-9]'; then
  apt-get update -qq
fi
mkdir -p "$cache/debs" "$cache/root"
# The cache is root's; apt's _apt sandbox user could not write it.
(cd "$cache/debs" && apt-get download -qq -o APT::Sandbox::User=root "${packages[@]}")
for deb in "$cache"/debs/*.deb; do
  dpkg-deb -x "$deb" "$cache/root"
done
complete || { echo "fetch-arm64-loaders: ${want[*]} missing after unpacking" >&2; exit 1; }
