#!/usr/bin/env bash
# Builds the mirror tree the bed's nginx serves:
#   WORKDIR/www/centos/9-stream/BaseOS/x86_64/os/{Packages,repodata,images,.treeinfo}
# RPMs come from specs/*.spec (noarch, unsigned). Re-running with unchanged
# specs and script is a no-op; a changed spec rebuilds the whole tree.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 WORKDIR" >&2
    exit 2
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$1"
work=$(cd "$1" && pwd)
os="$work/www/centos/9-stream/BaseOS/x86_64/os"
stamp="$work/.build-repo.stamp"

for tool in rpmbuild createrepo_c sha256sum; do
    command -v "$tool" >/dev/null || { echo "build-repo.sh: missing $tool" >&2; exit 1; }
done

want=$(cat "$here/build-repo.sh" "$here"/specs/*.spec | sha256sum | cut -d' ' -f1)
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -f "$os/repodata/repomd.xml" ]]; then
    exit 0
fi

rm -rf "$work/rpmbuild" "$os"
mkdir -p "$work/rpmbuild"/{BUILD,BUILDROOT,RPMS,SOURCES,SPECS,SRPMS} "$os/Packages" "$os/images/pxeboot"

for spec in "$here"/specs/*.spec; do
    # Uncompressed payload: the data is random anyway and xz would only cost time.
    rpmbuild -bb --quiet \
        --define "_topdir $work/rpmbuild" \
        --define "_binary_payload w0.ufdio" \
        --define "debug_package %{nil}" \
        --define "_build_id_links none" \
        "$spec" >/dev/null
done
cp "$work"/rpmbuild/RPMS/noarch/*.rpm "$os/Packages/"
createrepo_c --quiet --no-database "$os" >/dev/null

# Stand-ins for the installer images: only their bytes matter to the proxy.
head -c 64K /dev/urandom >"$os/images/pxeboot/vmlinuz"
head -c 256K /dev/urandom >"$os/images/pxeboot/initrd.img"
head -c 4M /dev/urandom >"$os/images/install.img"

now=$(date +%s)
sum() { sha256sum "$os/$1" | cut -d' ' -f1; }
cat >"$os/.treeinfo" <<TREEINFO
[header]
type = productmd.treeinfo
version = 1.2

[release]
name = CentOS Stream
short = CentOS-Stream
version = 9

[tree]
arch = x86_64
build_timestamp = $now
platforms = x86_64
variants = BaseOS

[variant-BaseOS]
id = BaseOS
name = BaseOS
packages = Packages
repository = .
type = variant
uid = BaseOS

[general]
arch = x86_64
family = CentOS Stream
name = CentOS Stream 9
packagedir = Packages
platforms = x86_64
repository = .
timestamp = $now
variant = BaseOS
variants = BaseOS
version = 9

[images-x86_64]
initrd = images/pxeboot/initrd.img
kernel = images/pxeboot/vmlinuz

[stage2]
mainimage = images/install.img

[checksums]
images/install.img = sha256:$(sum images/install.img)
images/pxeboot/initrd.img = sha256:$(sum images/pxeboot/initrd.img)
images/pxeboot/vmlinuz = sha256:$(sum images/pxeboot/vmlinuz)
TREEINFO

chmod -R a+rX "$work/www"
echo "$want" >"$stamp"
