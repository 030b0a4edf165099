#!/bin/bash
# Sets how the bed treats one machine (by MAC). Takes effect for the next
# DHCP packet: dnsmasq re-reads its hosts directories when they change.
#
# Usage: bed-host.sh WORKDIR MAC [ROLE]... [--ipxe-script FILE] [--grub-cfg FILE]
#   ROLE (several may be given; none resets the host to the defaults):
#     next-server  office DHCP: siaddr 10.77.0.1 in this host's OFFER/ACK
#                  (Debian's GRUB fetches its config from siaddr)
#     ignore       stand-in ProxyDHCP: no answer at all, the firmware moves
#                  on to its next boot option
#     grub         stand-in ProxyDHCP, UEFI x64: offer the tree's shim
#                  (EFI/BOOT/BOOTX64.EFI → grubx64.efi) instead of ipxe.efi;
#                  implies next-server
#     snp          stand-in ProxyDHCP, UEFI x64: snponly.efi instead of ipxe.efi
#     httpboot     stand-in HTTP boot ProxyDHCP (standin-httpboot.py) answers
#                  this host's UEFI HTTP boot; nobody does otherwise
#   --ipxe-script FILE  stand-in HTTP: this host's /boot/<mac>.ipxe
#   --grub-cfg FILE     stand-in TFTP: this host's grub/grub.cfg-01-<mac>
#                       (dashes), which the generic grub.cfg chains to
set -euo pipefail

work=${1:?usage: bed-host.sh WORKDIR MAC [ROLE]... [--ipxe-script FILE] [--grub-cfg FILE]}
mac=${2:?mac}
shift 2
mac=${mac,,}
[[ $mac =~ ^[0-9a-f]{2}(:[0-9a-f]{2}){5}$ ]] || { echo "bed-host: bad MAC $mac" >&2; exit 2; }
name=${mac//:/-}

office=()
standin=()
script=""
grubcfg=""
while (($#)); do
  case $1 in
    next-server) office+=(set:ks-next-server) ;;
    ignore) standin+=(set:ks-ignore) ;;
    grub) standin+=(set:ks-grub); office+=(set:ks-next-server) ;;
    snp) standin+=(set:ks-snp) ;;
    httpboot) standin+=(set:ks-httpboot) ;;
    --ipxe-script) script=${2:?--ipxe-script FILE}; shift ;;
    --grub-cfg) grubcfg=${2:?--grub-cfg FILE}; shift ;;
    *) echo "bed-host: unknown role $1" >&2; exit 2 ;;
  esac
  shift
done

# Writes (or removes) one dnsmasq hosts-dir entry and waits until that
# dnsmasq has read it, so the caller's next boot sees it.
put() { # dir log tags...
  local dir=$1 log=$2 file=$1/$name line
  shift 2
  if (($#)); then
    line=$mac$(printf ',%s' "$@")
    [[ -f $file && $(cat "$file") == "$line" ]] && return 0
    local before
    before=$(stat -c %s "$log")
    # dnsmasq skips dot files, so the half-written one is never read.
    echo "$line" >"$dir/.$name.tmp"
    mv "$dir/.$name.tmp" "$file"
    for _ in $(seq 50); do
      tail -c +$((before + 1)) "$log" | grep -q "read $file\$" && return 0
      sleep 0.1
    done
    echo "bed-host: dnsmasq did not read $file (see $log)" >&2
    return 1
  elif [[ -f $file ]]; then
    # dnsmasq forgets a removed file's hosts only on SIGHUP.
    rm -f "$file"
    kill -HUP "$(cat "${log%.log}.pid")"
    sleep 0.3
  fi
}

mkdir -p "$work/office-hosts"
put "$work/office-hosts" "$work/office.log" ${office[@]+"${office[@]}"}
if [[ -d $work/standin-hosts ]]; then
  put "$work/standin-hosts" "$work/standin-proxy.log" ${standin[@]+"${standin[@]}"}
  own=$work/standin-http/boot/$mac.ipxe
  if [[ -n $script ]]; then cp "$script" "$own"; else rm -f "$own"; fi
  cfg=$work/standin-tftp/grub/grub.cfg-01-$name
  if [[ -n $grubcfg ]]; then cp "$grubcfg" "$cfg"; else rm -f "$cfg"; fi
elif ((${#standin[@]})) || [[ -n $script || -n $grubcfg ]]; then
  echo "bed-host: ${standin[*]} $script $grubcfg need the stand-in (bed-up.sh WORK standin)" >&2
  exit 2
fi
