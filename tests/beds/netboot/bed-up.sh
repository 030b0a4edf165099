#!/bin/bash
# Brings up the netboot bed: a private network in two network namespaces, so
# no packet leaves this machine.
#
#   $NS  (kickstand side): bridge ksbr0 = 10.77.0.1/24 (Kickstand's address),
#        tap kstap0 on the bridge (QEMU's NIC), a local mirror on 0.0.0.0:8081
#        serving the installer stand-in under $KS_MIRROR_TREE/images/pxeboot/.
#   $ONS (office side):    veth office0 = 10.77.0.254/24 bridged into ksbr0,
#        dnsmasq as the office DHCP server (addresses only, no boot options).
#
# Usage: bed-up.sh WORKDIR [standin]
#   standin: a second dnsmasq on ksbr0 (ProxyDHCP + TFTP) and a small HTTP
#   server on 10.77.0.1:8080 play Kickstand, so the bed, the firmware and the
#   initramfs can be checked without Kickstand.
# Writes WORKDIR/bed.env (NS, ONS, ...); bed-down.sh WORKDIR undoes everything.
set -euo pipefail

work=${1:?usage: bed-up.sh WORKDIR [standin]}
mode=${2:-}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tree=${KS_MIRROR_TREE:-standin/9/BaseOS/x86_64/os}
mkdir -p "$work"
work=$(cd "$work" && pwd)

for tool in ip dnsmasq python3 qemu-system-x86_64; do
  command -v "$tool" >/dev/null || { echo "bed-up: $tool missing" >&2; exit 1; }
done

# Unique per run; namespace names are global, interface names inside are not.
suffix=${KS_BED_SUFFIX:-$$-$RANDOM}
ns=ks-nb-$suffix
ons=ks-nbo-$suffix
cat >"$work/bed.env" <<ENV
NS=$ns
ONS=$ons
WORK=$work
MIRROR_TREE=$tree
ENV

# If anything below fails, take down whatever was created.
trap '"$here/bed-down.sh" "$work" >/dev/null 2>&1 || true' ERR

# KS_STANDIN_DIR lets callers keep the (content-cached) stand-in across runs.
standin=${KS_STANDIN_DIR:-$work/standin}
"$here/build-initrd.sh" "$standin" >&2

ip netns add "$ns"
ip netns add "$ons"
ip -n "$ns" link set lo up
ip -n "$ons" link set lo up

ip -n "$ns" link add ksbr0 type bridge forward_delay 0 stp_state 0
ip -n "$ns" addr add 10.77.0.1/24 dev ksbr0
ip -n "$ns" link set ksbr0 up

ip -n "$ns" tuntap add dev kstap0 mode tap
ip -n "$ns" link set kstap0 master ksbr0
ip -n "$ns" link set kstap0 up

ip -n "$ns" link add ofc0 type veth peer name office0 netns "$ons"
ip -n "$ns" link set ofc0 master ksbr0
ip -n "$ns" link set ofc0 up
ip -n "$ons" addr add 10.77.0.254/24 dev office0
ip -n "$ons" link set office0 up
# The office router is the way out, as on a real appliance; it leads nowhere
# here (the office namespace has no other link), but it gives broadcasts and
# replies to leased addresses a route.
ip -n "$ns" route add default via 10.77.0.254 dev ksbr0

# The mirror: the stand-in kernel and initramfs where a CentOS tree keeps them.
mkdir -p "$work/mirror/$tree/images/pxeboot"
cp "$standin/vmlinuz" "$work/mirror/$tree/images/pxeboot/vmlinuz"
cp "$standin/initrd.img" "$work/mirror/$tree/images/pxeboot/initrd.img"
ip netns exec "$ns" python3 -m http.server --bind 0.0.0.0 --directory "$work/mirror" 8081 \
  >"$work/mirror.log" 2>&1 </dev/null &
echo $! >"$work/mirror.pid"

office=(--conf-file=/dev/null --port=0 --interface=office0 --bind-interfaces
  --dhcp-range=10.77.0.100,10.77.0.150,12h
  --dhcp-leasefile="$work/office.leases" --pid-file="$work/office.pid"
  --log-dhcp --log-facility="$work/office.log" --user=root --group=root)
ip netns exec "$ons" dnsmasq "${office[@]}"

if [[ $mode == standin ]]; then
  # Stand-in for Kickstand, where Kickstand would be (10.77.0.1 on ksbr0):
  # dnsmasq as ProxyDHCP + TFTP, and a small HTTP server for the script,
  # kickstart and report. Proves the bed, the firmware and the initramfs.
  ip netns exec "$ns" dnsmasq --conf-file=/dev/null --port=0 --interface=ksbr0 --bind-interfaces \
    --dhcp-range=10.77.0.0,proxy,255.255.255.0 --enable-tftp --tftp-root=/usr/lib/ipxe \
    --dhcp-userclass=set:ipxe,iPXE \
    '--pxe-service=tag:!ipxe,x86PC,PXE,undionly.kpxe' \
    '--pxe-service=tag:!ipxe,X86-64_EFI,PXE,ipxe.efi' \
    '--pxe-service=tag:ipxe,x86PC,iPXE,http://10.77.0.1:8080/boot/standin.ipxe' \
    '--pxe-service=tag:ipxe,X86-64_EFI,iPXE,http://10.77.0.1:8080/boot/standin.ipxe' \
    --dhcp-leasefile="$work/standin-proxy.leases" --pid-file="$work/standin-proxy.pid" \
    --log-dhcp --log-facility="$work/standin-proxy.log" --user=root --group=root
  mkdir -p "$work/standin-http"
  ip netns exec "$ns" python3 "$here/standin-http.py" 10.77.0.1 8080 "$work/standin-http" "$tree" \
    >"$work/standin-http.log" 2>&1 </dev/null &
  echo $! >"$work/standin-http.pid"
fi

# Wait until the servers listen, so a VM started right after finds them.
wait_tcp() {
  for _ in $(seq 50); do
    if ip netns exec "$ns" bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "bed-up: nothing listens on $1:$2" >&2
  return 1
}
wait_tcp 127.0.0.1 8081
if [[ $mode == standin ]]; then wait_tcp 10.77.0.1 8080; fi
[[ -s $work/office.pid ]] || { echo "bed-up: office dnsmasq did not start" >&2; exit 1; }
echo "bed-up: $ns / $ons ready in $work" >&2
