#!/usr/bin/env bash
# Builds the mirror tree the bed's nginx serves:
#   WORKDIR/www/centos/9-stream/BaseOS/x86_64/os/{Packages,repodata,images,.treeinfo}
#   WORKDIR/www/centos/9-stream/AppStream/x86_64/os/{Packages,repodata}
# RPMs come from specs/*.spec (BaseOS) and specs/appstream/*.spec (noarch,
# unsigned). BaseOS repodata is gzip (createrepo_c's default); AppStream's is
# xz, with comps, updateinfo and modules records added by modifyrepo_c, as on
# a real EL9 mirror. Every file is dated a day back: a mirror's files are
# not being written as they are fetched. Re-running with unchanged specs and
# script is a no-op; a changed spec rebuilds the whole tree.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 WORKDIR" >&2
    exit 2
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$1"
work=$(cd "$1" && pwd)
os="$work/www/centos/9-stream/BaseOS/x86_64/os"
app="$work/www/centos/9-stream/AppStream/x86_64/os"
stamp="$work/.build-repo.stamp"

for tool in rpmbuild createrepo_c modifyrepo_c sha256sum; do
    command -v "$tool" >/dev/null || { echo "build-repo.sh: missing $tool" >&2; exit 1; }
done

want=$(cat "$here/build-repo.sh" "$here"/specs/*.spec "$here"/specs/appstream/*.spec | sha256sum | cut -d' ' -f1)
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -f "$os/repodata/repomd.xml" ]]; then
    exit 0
fi

rm -rf "$work/rpmbuild" "$os" "$app"
mkdir -p "$work/rpmbuild"/{BUILD,BUILDROOT,RPMS,SOURCES,SPECS,SRPMS} "$os/Packages" "$os/images/pxeboot" "$app/Packages"

for spec in "$here"/specs/*.spec "$here"/specs/appstream/*.spec; do
    # Uncompressed payload: the data is random anyway and xz would only cost time.
    rpmbuild -bb --quiet \
        --define "_topdir $work/rpmbuild" \
        --define "_binary_payload w0.ufdio" \
        --define "debug_package %{nil}" \
        --define "_build_id_links none" \
        "$spec" >/dev/null
done
mv "$work"/rpmbuild/RPMS/noarch/ks-app-*.rpm "$app/Packages/"
cp "$work"/rpmbuild/RPMS/noarch/*.rpm "$os/Packages/"
createrepo_c --quiet --no-database "$os" >/dev/null

cat >"$work/comps.xml" <<'COMPS'
<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE comps PUBLIC "-//Red Hat, Inc.//DTD Comps info//EN" "comps.dtd">
<comps>
  <group>
    <id>ks-apps</id>
    <name>Kickstand test applications</name>
    <description>The bed's AppStream packages.</description>
    <default>false</default>
    <uservisible>true</uservisible>
    <packagelist>
      <packagereq type="mandatory">ks-app</packagereq>
    </packagelist>
  </group>
</comps>
COMPS
cat >"$work/updateinfo.xml" <<'UPDATEINFO'
<?xml version="1.0" encoding="UTF-8"?>
<updates>
  <update from="bed@example.invalid" status="stable" type="bugfix" version="1">
    <id>KSBED-2024:0001</id>
    <title>ks-app bug fix</title>
    <issued date="2024-01-01 00:00:00"/>
    <description>A stand-in advisory.</description>
    <pkglist>
      <collection short="bed">
        <name>bed</name>
        <package name="ks-app" version="1.0" release="1" epoch="0" arch="noarch">
          <filename>ks-app-1.0-1.noarch.rpm</filename>
        </package>
      </collection>
    </pkglist>
  </update>
</updates>
UPDATEINFO
# A module whose only artifact is not in the repo: dnf reads the record but
# filters none of the bed's packages.
cat >"$work/modules.yaml" <<'MODULES'
---
document: modulemd
version: 2
data:
  name: ks-tools
  stream: "1"
  version: 1
  context: 00000000
  arch: noarch
  summary: A stand-in module
  description: A module stream the bed's AppStream lists.
  license:
    module: [MIT]
  artifacts:
    rpms:
      - ks-unused-0:1.0-1.noarch
...
MODULES
createrepo_c --quiet --no-database --general-compress-type=xz --groupfile "$work/comps.xml" "$app" >/dev/null
modifyrepo_c --compress-type=xz "$work/updateinfo.xml" "$app/repodata" >/dev/null
modifyrepo_c --compress-type=xz --mdtype=modules "$work/modules.yaml" "$app/repodata" >/dev/null

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
find "$work/www" -exec touch -h -d "@$((now - 86400))" {} +
echo "$want" >"$stamp"
