#!/usr/bin/env bash
# Upgrades a Kickstand appliance disk to a new image, keeping its data.
#
# Usage (as root):  image/upgrade.sh NEW.raw TARGET
#   NEW.raw  a kickstand.raw from image/build.sh
#   TARGET   the appliance's disk, not in use: the USB stick plugged into
#            another machine (/dev/sdX), or a VM's raw disk file with the VM
#            off (for a qcow2: qemu-img convert it to raw and back)
#
# Writes the system partitions (1 BIOS boot, 2 ESP, 3 root) and the MBR
# boot code of NEW over TARGET's, and nothing else: the partition table,
# KICKSTAND (profiles, kickstand.yaml, authorized_keys) and KS-STATE (state,
# cache, SSH host keys) stay as they are. Refuses unless both disks have the
# same layout (same starts, sizes and types of partitions 1-4, KS-STATE at
# the same start), so a future layout change cannot be written half-way.
set -euo pipefail

new=${1:?usage: image/upgrade.sh NEW.raw TARGET}
target=${2:?usage: image/upgrade.sh NEW.raw TARGET}
[[ -r $new ]] || { echo "upgrade: cannot read $new" >&2; exit 1; }
[[ -w $target ]] || { echo "upgrade: cannot write $target" >&2; exit 1; }
if [[ -b $target ]] && grep -q "^$(readlink -f "$target")" /proc/mounts; then
  echo "upgrade: $target has mounted partitions; unmount them first" >&2
  exit 1
fi

# "start size type" of each partition, in sectors. sfdisk names each
# partition after the path it was given, which may be relative.
layout() {
  sfdisk --dump "$1" 2>/dev/null | awk -F'[:,]' '/ : start=/ {
    s = ""; z = ""; t = ""
    for (i = 2; i <= NF; i++) {
      if ($i ~ /start=/) { s = $i; sub(/.*= */, "", s) }
      if ($i ~ /size=/) { z = $i; sub(/.*= */, "", z) }
      if ($i ~ /type=/) { t = toupper($i); sub(/.*= */, "", t) }
    }
    print s, z, t }'
}
mapfile -t old_parts < <(layout "$target")
mapfile -t new_parts < <(layout "$new")
if ((${#old_parts[@]} != 5 || ${#new_parts[@]} != 5)); then
  echo "upgrade: expected 5 partitions on both disks (found ${#old_parts[@]} on $target, ${#new_parts[@]} on $new)" >&2
  exit 1
fi
for i in 0 1 2 3; do
  if [[ ${old_parts[i]} != "${new_parts[i]}" ]]; then
    echo "upgrade: partition $((i + 1)) differs ($target: ${old_parts[i]}; $new: ${new_parts[i]}): a different layout, not upgradable in place" >&2
    exit 1
  fi
done
read -r old_state_start _ old_state_type <<<"${old_parts[4]}"
read -r new_state_start _ new_state_type <<<"${new_parts[4]}"
if [[ $old_state_start != "$new_state_start" || $old_state_type != "$new_state_type" ]]; then
  echo "upgrade: KS-STATE starts elsewhere on $new: a different layout, not upgradable in place" >&2
  exit 1
fi

# MBR boot code only: bytes 440 and up hold the disk signature and the
# protective partition table of TARGET.
dd if="$new" of="$target" bs=440 count=1 conv=notrunc status=none
for i in 0 1 2; do
  read -r start size _ <<<"${new_parts[i]}"
  echo "upgrade: writing partition $((i + 1)) ($((size / 2048)) MiB)" >&2
  dd if="$new" of="$target" bs=4M iflag=skip_bytes,count_bytes oflag=seek_bytes \
    skip=$((start * 512)) seek=$((start * 512)) count=$((size * 512)) conv=notrunc status=none
done
sync
echo "upgrade: $target now boots $(basename "$new"); KICKSTAND and KS-STATE kept" >&2
