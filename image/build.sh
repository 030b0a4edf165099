#!/usr/bin/env bash
# Builds the Kickstand appliance: a disk image that boots straight into
# Kickstand, in BIOS and UEFI mode, from a USB stick (raw, `dd` it) or as a
# VM disk (qcow2).
#
# Usage (as root, on Debian 12):  image/build.sh OUT
#   KICKSTAND_BIN=path  use this kickstand binary (CI builds it once);
#                       default: `cargo build --release -p kickstand`
#   KICKSTAND_IMAGE_COMPRESS=1  also write OUT/kickstand.raw.zst
# Writes OUT/kickstand.raw, OUT/kickstand.qcow2 and OUT/build-info.
#
# How: mmdebstrap builds the root tree from Debian's packages, with the
# archive taken from this machine's apt configuration (only the sources apt
# says are Debian's). Every file system is then made from a directory by
# its own mkfs (`mkfs.ext4 -d`, `mkfs.vfat` + mtools), GRUB's images are
# made by grub-mkimage (BIOS) or taken signed from Debian (UEFI), and the
# pieces are written into a GPT disk made by sfdisk. No loop device is used and the image's file systems are never
# mounted (mmdebstrap only mounts /proc, /sys and /dev inside its chroot
# while packages install, as every bootstrap does), so the build runs
# wherever root can run mmdebstrap, containers and CI machines without loop
# devices too; mkosi 14 and systemd-repart 252 (Debian 12's) both need loop
# devices to fill a file system.
#
# The partition layout is the contract that upgrades rely on
# (image/upgrade.sh rewrites partitions 1-3 in place and never touches the
# table or 4-5): change a start or size only with a new layout version.
#   1  BIOS boot   1 MiB    GRUB i386-pc core.img
#   2  ESP        64 MiB    FAT, EFI/BOOT/BOOTX64.EFI: Debian's signed shim → GRUB
#   3  root      768 MiB    ext4 "KS-ROOT": Debian, kickstand, templates, loaders
#   4  KICKSTAND  64 MiB    FAT "KICKSTAND": kickstand.yaml, profiles, authorized_keys
#   5  KS-STATE   to end    ext4 "KS-STATE": state, cache, SSH host keys; grown to
#                           the whole disk at boot
set -euo pipefail

out=${1:?usage: image/build.sh OUT}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
started=$(date +%s)

[[ $(id -u) == 0 ]] || { echo "build.sh: run as root (mmdebstrap, file ownership)" >&2; exit 1; }

# Layout version 1 (MiB). See above before changing any of these.
BIOS_START=1 BIOS_SIZE=1
ESP_START=2 ESP_SIZE=64
ROOT_START=66 ROOT_SIZE=768
DATA_START=834 DATA_SIZE=64
STATE_START=898 STATE_SIZE=64
DISK_SIZE=$((STATE_START + STATE_SIZE + 1)) # + the backup GPT
# The kickstand user's ids: fixed, because the state partition outlives
# every system image and its files are owned by them.
KS_UID=901

# --- build tools, from Debian's packages -----------------------------------
tools=(mmdebstrap fdisk dosfstools mtools e2fsprogs grub-pc-bin sbsigntool
  ipxe qemu-utils zstd binutils)
missing=()
for p in "${tools[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "build.sh: installing ${missing[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- the kickstand binary ---------------------------------------------------
bin=${KICKSTAND_BIN:-}
if [[ -z $bin ]]; then
  (cd "$repo" && cargo build --release --locked -p kickstand)
  bin=${CARGO_TARGET_DIR:-$repo/target}/release/kickstand
fi
[[ -x $bin ]] || { echo "build.sh: no kickstand binary at $bin" >&2; exit 1; }

# --- the Debian archive, as this machine's apt knows it --------------------
# `apt-cache policy` lists every index apt uses with its Release origin; keep
# those whose origin is Debian, as one-line sources for the image's apt.
mapfile -t sources < <(apt-cache policy | awk '
  /^ *[0-9]+ [a-z]+:\/\// { uri = $2; split($3, sc, "/"); suite = sc[1]; comp = sc[2]; next }
  /release / && /o=Debian,/ && uri != "" { key = uri " " suite; if (!(key in c)) order[n++] = key; c[key] = c[key] " " comp; uri = "" }
  /origin / { uri = "" }
  END { for (i = 0; i < n; i++) { split(order[i], k, " "); printf "deb %s %s%s\n", k[1], k[2], c[order[i]] } }' | sort -u)
((${#sources[@]})) || { echo "build.sh: apt knows no Debian archive (apt-get update?)" >&2; exit 1; }
. /etc/os-release
suite=${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}

work=$(mktemp -d "${TMPDIR:-/var/tmp}/kickstand-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root

# --- the root tree ------------------------------------------------------------
packages=(
  systemd systemd-sysv systemd-resolved systemd-timesyncd udev dbus
  linux-image-amd64 initramfs-tools zstd
  # UEFI with Secure Boot on: shim (signed by Microsoft) loads GRUB, GRUB
  # the kernel (both signed by Debian); copied onto the ESP below.
  shim-signed grub-efi-amd64-signed
  openssh-server iproute2 curl fdisk dosfstools e2fsprogs kmod procps less nano
  # IPMI BMCs: the daemon runs ipmitool for `bmc: {driver: ipmi}`.
  ipmitool
)
# Nothing an appliance without a desktop uses: sound, GPUs (the console is
# the firmware's frame buffer), cameras, Wi-Fi, Bluetooth, InfiniBand; and
# no documentation beyond the copyright files.
dpkgopts=()
for p in sound drivers/gpu drivers/media drivers/net/wireless drivers/infiniband \
  drivers/iio drivers/staging drivers/comedi drivers/isdn drivers/bluetooth \
  net/wireless net/mac80211 net/bluetooth; do
  dpkgopts+=("--dpkgopt=path-exclude=/lib/modules/*/kernel/$p/*"
    "--dpkgopt=path-exclude=/usr/lib/modules/*/kernel/$p/*")
done
# GRUB's modules and its CD and network images: the signed grubx64.efi the
# ESP gets has every module it needs built in.
dpkgopts+=(--dpkgopt='path-exclude=/usr/lib/grub/x86_64-efi/*'
  --dpkgopt='path-exclude=/usr/lib/grub/x86_64-efi-signed/gcd*'
  --dpkgopt='path-exclude=/usr/lib/grub/x86_64-efi-signed/grubnet*')
dpkgopts+=(--dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias'
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/lintian/*')

echo "build.sh: bootstrapping Debian $suite from: ${sources[*]}" >&2
mmdebstrap --variant=minbase --include="${packages[*]}" "${dpkgopts[@]}" \
  --essential-hook="mkdir -p \"\$1/etc/initramfs-tools\" && cp -r '$here/rootfs/etc/initramfs-tools/.' \"\$1/etc/initramfs-tools/\"" \
  --customize-hook='chroot "$1" apt-get clean' \
  "$suite" "$root" "${sources[@]}"

# --- Kickstand and the appliance's own files ---------------------------------
install -d "$root/usr/share/kickstand"
strip --strip-all -o "$root/usr/bin/kickstand" "$bin"
chmod 0755 "$root/usr/bin/kickstand"
cp -r "$repo/templates" "$root/usr/share/kickstand/templates"
IPXE_DIR=/usr/lib/ipxe "$here/install-bootloaders.sh" "$root/usr/share/kickstand/tftp" >&2
install -m 0644 "$here/kickstand.yaml.example" "$root/usr/share/kickstand/kickstand.yaml.example"
install -m 0644 "$here/data-README.txt" "$root/usr/share/kickstand/README.txt"
cp -r "$here/rootfs/." "$root/"
install -m 0644 "$here/kickstand.service" "$root/usr/lib/systemd/system/kickstand.service"
chmod 0755 "$root"/usr/lib/kickstand/*
sed -i "s/@KS_UID@/$KS_UID/g" "$root/usr/lib/sysusers.d/kickstand.conf"
systemd-sysusers --root="$root" "$root/usr/lib/sysusers.d/kickstand.conf"
[[ $(chroot "$root" id -u kickstand) == "$KS_UID" ]] || { echo "build.sh: uid $KS_UID is taken in the image" >&2; exit 1; }

echo kickstand >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tkickstand\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
# The console banner is rendered into /run/issue by kickstand-banner.
ln -sf ../run/issue "$root/etc/issue"
# Every stick gets its own SSH host keys (on KS-STATE, so they survive
# upgrades) and its own machine id, at its first boot.
rm -f "$root"/etc/ssh/ssh_host_*
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
ln -sf ../run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"

systemctl --root="$root" enable systemd-networkd.service systemd-resolved.service \
  systemd-timesyncd.service ssh.service kickstand.service kickstand-firstboot.service \
  kickstand-banner.service >/dev/null 2>&1
systemctl --root="$root" set-default multi-user.target >/dev/null 2>&1

kver=$(basename "$(ls "$root"/boot/vmlinuz-* | sort -V | tail -n1)")
kver=${kver#vmlinuz-}
[[ -f $root/boot/initrd.img-$kver ]] || { echo "build.sh: no initramfs for $kver" >&2; exit 1; }
root_uuid=$(cat /proc/sys/kernel/random/uuid)
printf 'UUID=%s / ext4 errors=remount-ro 0 1\n' "$root_uuid" >"$root/etc/fstab"
cat "$here/fstab.data" >>"$root/etc/fstab"
sed -i "s/@KS_UID@/$KS_UID/g" "$root/etc/fstab"
install -d -m 0755 "$root/etc/kickstand" "$root/var/lib/kickstand"

{
  echo "KICKSTAND_IMAGE_VERSION=$(git -C "$repo" describe --always --dirty 2>/dev/null || echo unknown)"
  echo "KICKSTAND_IMAGE_BUILT=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "KICKSTAND_IMAGE_LAYOUT=1"
  echo "KERNEL=$kver"
  echo "DEBIAN=$suite"
} >"$root/usr/lib/kickstand/image-release"

# --- GRUB ---------------------------------------------------------------------
# BIOS and UEFI read the same /boot/grub/grub.cfg on the root; the signed
# GRUB has every module it needs built in (Secure Boot refuses to load more).
install -d "$root/boot/grub/i386-pc"
cp /usr/lib/grub/i386-pc/*.mod /usr/lib/grub/i386-pc/*.lst "$root/boot/grub/i386-pc/"
cat >"$root/boot/grub/grub.cfg" <<CFG
# Written by image/build.sh; an upgrade replaces it with the root file system.
serial --unit=0 --speed=115200
terminal_input console serial
terminal_output console serial
set timeout=2
menuentry "Kickstand" {
  linux /boot/vmlinuz-$kver root=UUID=$root_uuid ro console=tty0 console=ttyS0,115200n8 systemd.show_status=auto
  initrd /boot/initrd.img-$kver
}
CFG
printf 'search --no-floppy --fs-uuid --set=root %s\nset prefix=($root)/boot/grub\n' "$root_uuid" >"$work/early.cfg"
grub-mkimage -O i386-pc -o "$work/core.img" -c "$work/early.cfg" -p /boot/grub \
  biosdisk part_gpt ext2 search
core_sectors=$((($(stat -c %s "$work/core.img") + 511) / 512))
((core_sectors <= BIOS_SIZE * 2048)) || { echo "build.sh: core.img does not fit the BIOS boot partition" >&2; exit 1; }
# UEFI: the removable path, as Debian's `grub-install --uefi-secure-boot
# --removable` fills it: EFI/BOOT/BOOTX64.EFI is the shim, which loads
# grubx64.efi (and mmx64.efi, to enrol a key) from beside it. No fallback
# loader: fbx64.efi would write a boot entry into the NVRAM of every server
# the stick is plugged into. Debian's signed GRUB reads grub.cfg in its
# built-in prefix, EFI/debian; that one sends it to the root's.
cp "$work/early.cfg" "$work/esp-grub.cfg"
echo 'configfile $prefix/grub.cfg' >>"$work/esp-grub.cfg"
shim=$root/usr/lib/shim grub_signed=$root/usr/lib/grub/x86_64-efi-signed
# Firmware trusts Microsoft's CA, shim trusts Debian's: a loader or kernel
# signed otherwise (or not at all) would only be found out, refused, at boot.
signed_by() {
  sbverify --list "$1" 2>/dev/null | grep -q "issuer: .*/CN=$2" ||
    { echo "build.sh: $1 is not signed by $2" >&2; exit 1; }
}
signed_by "$shim/shimx64.efi.signed" "Microsoft Corporation UEFI CA"
signed_by "$shim/mmx64.efi.signed" "Debian Secure Boot CA"
signed_by "$grub_signed/grubx64.efi.signed" "Debian Secure Boot CA"
signed_by "$root/boot/vmlinuz-$kver" "Debian Secure Boot CA"

# --- file systems, each from a directory ---------------------------------------
used=$(du -sm --apparent-size "$root" | cut -f1)
echo "build.sh: root tree is $used MiB of the $ROOT_SIZE MiB root partition" >&2
# Reserved blocks are for root's daemons on a shared disk; this one is replaced whole.
mkfs.ext4 -q -L KS-ROOT -U "$root_uuid" -m 0 -d "$root" "$work/root.img" "${ROOT_SIZE}M"

mkfs.vfat -F 32 -s 1 -n KS-ESP -C "$work/esp.img" $((ESP_SIZE * 1024)) >/dev/null
mmd -i "$work/esp.img" ::/EFI ::/EFI/BOOT ::/EFI/debian
mcopy -i "$work/esp.img" "$shim/shimx64.efi.signed" ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$work/esp.img" "$grub_signed/grubx64.efi.signed" ::/EFI/BOOT/grubx64.efi
mcopy -i "$work/esp.img" "$shim/mmx64.efi.signed" ::/EFI/BOOT/mmx64.efi
mcopy -i "$work/esp.img" "$work/esp-grub.cfg" ::/EFI/debian/grub.cfg

# The operator's partition: samples to start from, never a host that would
# install by itself. kickstand.yaml is the operator's copy of the example,
# or written from it at first boot.
data=$work/data
install -d "$data/os" "$data/hosts"
cp "$repo"/profiles/os/*.yaml "$data/os/"
cp "$repo/profiles/groups.yaml" "$data/groups.yaml"
for f in "$repo"/profiles/hosts/*.yaml; do cp "$f" "$data/hosts/$(basename "$f").sample"; done
cp "$here/kickstand.yaml.example" "$data/kickstand.yaml.example"
cp "$here/data-README.txt" "$data/README.txt"
: >"$data/authorized_keys"
mkfs.vfat -F 32 -s 1 -n KICKSTAND -C "$work/data.img" $((DATA_SIZE * 1024)) >/dev/null
MTOOLS_SKIP_CHECK=1 mcopy -s -i "$work/data.img" "$data"/* ::/

install -d "$work/state"
mkfs.ext4 -q -L KS-STATE -d "$work/state" "$work/state.img" "${STATE_SIZE}M"

# --- the disk -------------------------------------------------------------------
disk=$work/kickstand.raw
truncate -s "${DISK_SIZE}M" "$disk"
sfdisk -q "$disk" <<TABLE
label: gpt
start=${BIOS_START}MiB, size=${BIOS_SIZE}MiB, type=21686148-6449-6E6F-744E-656564454649, name=bios
start=${ESP_START}MiB, size=${ESP_SIZE}MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp
start=${ROOT_START}MiB, size=${ROOT_SIZE}MiB, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name=kickstand-root
start=${DATA_START}MiB, size=${DATA_SIZE}MiB, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name=KICKSTAND
start=${STATE_START}MiB, size=${STATE_SIZE}MiB, type=4D21B016-B534-45C2-A9FB-5C16E091FD2D, name=kickstand-state
TABLE
put() { dd if="$1" of="$disk" bs=1M seek="$2" conv=notrunc,sparse status=none; }
put "$work/esp.img" "$ESP_START"
put "$work/root.img" "$ROOT_START"
put "$work/data.img" "$DATA_START"
put "$work/state.img" "$STATE_START"

# BIOS: what grub-bios-setup does for a BIOS boot partition (it insists on
# probing the build machine's own disk, so it cannot set up an image file):
# boot.img's code in the MBR (the partition table after byte 440 stays),
# pointing at core.img's first sector; core.img in the BIOS boot partition,
# its first sector's block list pointing at the rest.
le64() { printf "$(printf '%016x' "$1" | sed -E 's/(..)(..)(..)(..)(..)(..)(..)(..)/\\x\8\\x\7\\x\6\\x\5\\x\4\\x\3\\x\2\\x\1/')"; }
core_lba=$((BIOS_START * 2048))
dd if="$work/core.img" of="$disk" bs=512 seek="$core_lba" conv=notrunc status=none
le64 $((core_lba + 1)) | dd of="$disk" bs=1 seek=$((core_lba * 512 + 0x1f4)) conv=notrunc status=none
dd if=/usr/lib/grub/i386-pc/boot.img of="$disk" bs=440 count=1 conv=notrunc status=none
le64 "$core_lba" | dd of="$disk" bs=1 seek=$((0x5c)) conv=notrunc status=none
# Boot from whatever drive the BIOS says, not only 0x80: skip boot.img's
# drive check (a USB stick is not always the first hard disk).
printf '\x90\x90' | dd of="$disk" bs=1 seek=$((0x66)) conv=notrunc status=none

mkdir -p "$out"
mv "$disk" "$out/kickstand.raw"
qemu-img convert -f raw -O qcow2 "$out/kickstand.raw" "$out/kickstand.qcow2"
if [[ ${KICKSTAND_IMAGE_COMPRESS:-} == 1 ]]; then
  zstd -q -f -T0 -19 "$out/kickstand.raw" -o "$out/kickstand.raw.zst"
fi
{
  cat "$root/usr/lib/kickstand/image-release"
  echo "ROOT_UUID=$root_uuid"
  echo "ROOT_TREE_MIB=$used"
  echo "RAW_BYTES=$(stat -c %s "$out/kickstand.raw")"
  echo "RAW_ALLOCATED_BYTES=$(($(stat -c %b "$out/kickstand.raw") * 512))"
  echo "QCOW2_BYTES=$(stat -c %s "$out/kickstand.qcow2")"
  [[ -f $out/kickstand.raw.zst ]] && echo "ZST_BYTES=$(stat -c %s "$out/kickstand.raw.zst")"
  echo "BUILD_SECONDS=$(($(date +%s) - started))"
} >"$out/build-info"
echo "build.sh: $out/kickstand.raw and $out/kickstand.qcow2 in $(($(date +%s) - started)) s" >&2
