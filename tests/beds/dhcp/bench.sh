#!/usr/bin/env bash
# ProxyDHCP throughput and latency: Kickstand vs dnsmasq (proxy mode), each
# answering COUNT DISCOVERs (distinct MACs) broadcast by a client in another
# network namespace over a veth into the server's bridge. Needs root,
# dnsmasq and cargo. Usage: bench.sh [COUNT]   Prints one line per run.
set -euo pipefail
count=${1:-1000}
root=$(cd "$(dirname "$0")/../../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
cargo build -q --release -p kickstand-dhcp --example dhcp_bench --manifest-path "$root/Cargo.toml"
bin=$CARGO_TARGET_DIR/release/examples/dhcp_bench
a=ks-dhcpb-a-$$ c=ks-dhcpb-c-$$
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del $a 2>/dev/null || true
  ip netns del $c 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ip netns add $a; ip netns add $c
ip -n $a link set lo up; ip -n $c link set lo up
ip -n $a link add ksbr0 type bridge
ip -n $a addr add 10.77.0.1/24 dev ksbr0
ip -n $a link set ksbr0 up
ip -n $a link add vc type veth peer name eth0 netns $c
ip -n $a link set vc master ksbr0 up
ip -n $c addr add 10.77.0.50/24 dev eth0
ip -n $c link set eth0 up
sleep 1  # bridge port forwarding

run_burst() { # label
  for w in 0 16; do
    echo "$1 $(ip netns exec $c "$bin" burst eth0 "$count" $w)"
    sleep 1
  done
}

touch "$work/ks.out"
ip netns exec $a "$bin" serve ksbr0 10.77.0.1 > "$work/ks.out" &
pids+=($!)
until grep -q READY "$work/ks.out"; do sleep 0.1; done
run_burst kickstand
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true

ip netns exec $a dnsmasq --no-daemon --conf-file=/dev/null --port=0 --user=root \
  --interface=ksbr0 --bind-interfaces --dhcp-range=10.77.0.0,proxy \
  --pxe-service=x86PC,"Kickstand",undionly --pxe-service=X86-64_EFI,"Kickstand",ipxe \
  --dhcp-leasefile="$work/leases" 2>"$work/dnsmasq.err" &
pids+=($!)
sleep 1
run_burst dnsmasq-proxy
