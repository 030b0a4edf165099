#!/bin/bash
# Benchmark: how long an installed machine takes from power-on to its own
# disk, for every firmware path and every way of sending it there, with the
# stand-in (dnsmasq + standin-http.py) playing Kickstand. Prints a table.
#
# Usage: measure-boot-to-disk.sh OUTDIR [CASE...]   (root; one VM at a time)
#   No CASE: all of them (about 40 minutes under TCG). `list` prints them.
#   OUTDIR keeps each case's serial log and the bed's logs.
# A case ends at the disk's marker "KS-DISK: booted from disk", at a text that
# means the machine will not get there (EFI shell, setup menu, a Secure Boot
# refusal when that is not the point), or after LIMIT seconds.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${1:?usage: measure-boot-to-disk.sh OUTDIR [CASE...]}
shift
limit=${KS_MEASURE_LIMIT:-330}

# name | firmware | roles | iPXE script | GRUB config | what it measures
chain_cfg='echo "KS-GRUB: local boot, chainloading the disk"
for f in /EFI/redhat/shimx64.efi /EFI/centos/shimx64.efi /EFI/rocky/shimx64.efi /EFI/almalinux/shimx64.efi /EFI/fedora/shimx64.efi /EFI/debian/shimx64.efi /EFI/ubuntu/shimx64.efi /EFI/BOOT/BOOTX64.EFI; do
  if search --no-floppy --file --set=esp $f; then
    echo "KS-GRUB: chainloader ($esp)$f"
    # Debian GRUB 2.06 hands the loaded image the device of $root, not the
    # one named in the path: without this, shim looks for grubx64.efi on
    # the network and fails.
    set root=$esp
    chainloader $f
    boot
  fi
done
echo "KS-GRUB: no loader found on any disk"
exit 1'
cases=(
  "bios-ignore|bios|ignore|||ProxyDHCP does not answer"
  "bios-exit|bios||exit||iPXE exit"
  "bios-exit1|bios||exit 1||iPXE exit 1"
  "bios-sanboot|bios||sanboot --no-describe --drive 0x80||iPXE sanboot --drive 0x80"
  "uefi-ignore|uefi|ignore|||ProxyDHCP does not answer"
  "uefi-ipxe-exit|uefi||exit||ipxe.efi exit"
  "uefi-ipxe-exit1|uefi||exit 1||ipxe.efi exit 1"
  "uefi-snp-exit|uefi|snp|exit||snponly.efi exit"
  "uefi-snp-exit1|uefi|snp|exit 1||snponly.efi exit 1"
  "uefi-grub-exit|uefi|grub||exit|shim → GRUB exit"
  "uefi-grub-exit1|uefi|grub||exit 1|shim → GRUB exit 1"
  "uefi-grub-chain|uefi|grub||CHAIN|shim → GRUB chainload of the disk's loader"
  "sb-grub-exit1|uefi-sb|grub||exit 1|Secure Boot: shim → GRUB exit 1"
  "sb-grub-chain|uefi-sb|grub||CHAIN|Secure Boot: shim → GRUB chainload"
  "uefi-ipxe-grub-chain|uefi|next-server|chain http://10.77.0.1:8081/TREE/EFI/BOOT/grubx64.efi|CHAIN|ipxe.efi chains GRUB (HTTP), GRUB chainloads the disk"
  "uefi-ipxe-own-next-server|uefi||set netX/next-server 10.77.0.1 && chain http://10.77.0.1:8081/TREE/EFI/BOOT/grubx64.efi|CHAIN|ipxe.efi names the next server itself and chains GRUB (HTTP): office DHCP untouched"
  "uefi-snp-grub-chain|uefi|snp next-server|chain http://10.77.0.1:8081/TREE/EFI/BOOT/grubx64.efi|CHAIN|snponly.efi chains GRUB (HTTP), GRUB chainloads the disk"
  "sb-ipxe-refused|uefi-sb||exit||Secure Boot: unsigned ipxe.efi offered"
)
if [[ ${1:-} == list ]]; then
  printf '%s\n' "${cases[@]}" | cut -d'|' -f1,6 | tr '|' '\t'
  exit 0
fi
want=" $* "

mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$out/bed
rm -rf "$work"
mkdir -p "$work"
KS_STANDIN_DIR=${KS_STANDIN_DIR:-$out/cache} "$here/bed-up.sh" "$work" standin
trap '"$here/bed-down.sh" "$work" >/dev/null 2>&1 || true' EXIT
# shellcheck disable=SC1091
source "$work/bed.env"

markers=("Start PXE over IPv4" "Start PXE over IPv6" "Start HTTP Boot over IPv4"
  "Start HTTP Boot over IPv6" "iPXE initialising" "No more network devices"
  "Welcome to GRUB" "KS-GRUB: chainloader" "Booting from Hard Disk" "KS-DISK: booted from disk")
stops=("Shell> " "Boot Maintenance Manager" "KS-STANDIN")

rows=()
n=0
for c in "${cases[@]}"; do
  IFS='|' read -r name fw roles script cfg what <<<"$c"
  [[ $want == "  " || $want == *" $name "* ]] || continue
  n=$((n + 1))
  mac=$(printf '52:54:00:77:%02x:%02x' $((n / 256)) $((n % 256)))
  args=()
  if [[ -n $script ]]; then
    printf '#!ipxe\n%s\n' "${script//TREE/$MIRROR_TREE}" >"$out/$name.ipxe"
    args+=(--ipxe-script "$out/$name.ipxe")
  fi
  if [[ -n $cfg ]]; then
    [[ $cfg == CHAIN ]] && cfg=$chain_cfg
    printf 'echo "KS-GRUB: host config for $net_default_mac"\n%s\n' "$cfg" >"$out/$name.grub.cfg"
    args+=(--grub-cfg "$out/$name.grub.cfg")
  fi
  # shellcheck disable=SC2086
  "$here/bed-host.sh" "$work" "$mac" $roles ${args[@]+"${args[@]}"}
  disk=$DISK_UEFI
  [[ $fw == bios ]] && disk=$DISK_BIOS
  log=$out/$name.log
  "$here/vm.sh" --disk "$disk" "$work" "$fw" "$mac" "$log" "$limit" >/dev/null 2>"$out/$name.stderr" &
  vm=$!
  stopargs=()
  for s in "${stops[@]}"; do stopargs+=(--stop "$s"); done
  times=$(python3 "$here/serial-times.py" "$log" "$vm" --lines "$out/$name.timed.log" "${stopargs[@]}" "${markers[@]}" || true)
  [[ -s $work/qemu.pid ]] && kill "$(cat "$work/qemu.pid")" 2>/dev/null || true
  wait "$vm" 2>/dev/null || true
  echo "$times" >"$out/$name.times"
  disk_t=$(awk '/KS-DISK: booted from disk/ && $1 != "-" {print $1}' <<<"$times")
  stop=$(sed -n 's/^stopped at: //p' <<<"$times")
  via=$(grep -aoE 'KS-DISK: booted from disk \((pc|efi), \([^)]*\)[^) ]*\)' "$log" | head -n1 | sed 's/^KS-DISK: booted from disk (//; s/)$//') || true
  path=$(grep -Ev '^ *-|^stopped' <<<"$times" | sort -n | awk '{t=$1; $1=""; printf "%s%s s%s", sep, t, $0; sep=" → "}')
  [[ -n $stop ]] && path="$path → stopped at \`$stop\`"
  result=${disk_t:+${disk_t} s}
  result=${result:-"never (${stop:-limit ${limit} s})"}
  rows+=("| $what | $fw | $result | ${via:--} | $path |")
  echo "measure: $name: $result" >&2
done

echo "| way | firmware | power-on → KS-DISK | loader that ran from disk | what the serial console showed, in order |"
echo "|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
