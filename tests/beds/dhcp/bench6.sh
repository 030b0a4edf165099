#!/usr/bin/env bash
# DHCPv6 boot answers under load: the whole daemon (`kickstand serve`,
# release build, an IPv6-only appliance with the shipped settings apart from
# ports, paths and addresses, default log level) against dnsmasq's DHCPv6,
# answering the same Solicits (captured from OVMF's PXE) multicast to
# ff02::1:2 by a client namespace over a veth into the server namespace's
# bridge. The IPv6 counterpart of bench.sh's burst. Prints figures; asserts
# nothing.
#
# Burst: COUNT (1000) Solicits, Solicit i with a DUID-LLT of the profiled
# MAC 52:54:00:00:00:00 + i (the profile set bench.sh generates), from the
# client's link-local address, at most 16 unanswered at a time and all at
# once: replies/s, p50, p99, how many were answered, and how many the
# server's socket dropped (a full receive buffer, `ss -m`). Kickstand answers
# with a boot file URL and no address; dnsmasq is a full DHCPv6 server: its
# Advertise offers an address from its range as well as the same boot file
# URL, so it does more per answer.
#
# Every figure is the median of REPEAT (3) runs with min-max beside it; each
# run is logged as it happens. Each server starts once, the daemon with a
# fresh state.
#
# Needs root, dnsmasq (tests/setup-peers) and cargo.
# Usage: bench6.sh [COUNT]
# Knobs: REPEAT (3), SERVERS ("kickstand dnsmasq").
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

count=${1:-1000}
REPEAT=${REPEAT:-3}
SERVERS=${SERVERS:-"kickstand dnsmasq"}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../../.." && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
for tool in dnsmasq cargo ip curl; do
    command -v "$tool" >/dev/null || { echo "missing $tool (tests/setup-peers)" >&2; exit 1; }
done
# 16 bits of MAC and of transaction id per Solicit.
((count >= 1 && count <= 65536)) || { echo "COUNT must be 1..65536" >&2; exit 2; }

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
(cd "$repo" && cargo build --quiet --release -p kickstand &&
    cargo build --quiet --release -p kickstand-dhcp --example dhcp_bench)
kickstand=$CARGO_TARGET_DIR/release/kickstand
gen=$CARGO_TARGET_DIR/release/examples/dhcp_bench

a=ks-dhcpb6-a-$$ c=ks-dhcpb6-c-$$
server_ip=fd77::1
work=$(mktemp -d /tmp/ks-dhcp-bench6.XXXXXX)
server_pid=
cleanup() {
    stop_server
    ip netns del "$a" 2>/dev/null || true
    ip netns del "$c" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# --- the bed: server namespace with a bridge, client namespace on a veth ---
ip netns add "$a"
ip netns add "$c"
# No duplicate address detection: addresses (the client's link-local one,
# which the Solicits come from) are usable at once; the bed owns them all.
for ns in "$a" "$c"; do
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.default.accept_dad=0 net.ipv6.conf.all.accept_dad=0
    ip -n "$ns" link set lo up
done
ip -n "$a" link add ksbr0 type bridge
ip -n "$a" addr add "$server_ip/64" dev ksbr0 nodad
ip -n "$a" link set ksbr0 up
ip -n "$a" link add vc type veth peer name eth0 netns "$c"
ip -n "$a" link set vc master ksbr0 up
ip -n "$c" link set eth0 up
sleep 1 # bridge port forwarding

# --- the daemon's site: config and a generated profile set ---------------
# As bench.sh's, on the appliance's IPv6 address only: boot answers on the
# bridge, unknown machines ignored, the shipped OS definitions and defaults.
# The mirrors are a closed local port: nothing here downloads.
site=$work/site
mkdir -p "$work/tftp"
: >"$work/tftp/ipxe.efi"
write_profiles "$site" "$count" "$repo"
write_config "$site" "$server_ip" "::" "$repo" "$work/state"
"$kickstand" --config "$site/kickstand.yaml" check >"$work/check.log" 2>&1 ||
    { echo "kickstand check refused the generated profiles:" >&2; tail -20 "$work/check.log" >&2; exit 1; }

# --- servers -------------------------------------------------------------
# start_server NAME: starts it in the server namespace; server_pid and
# server_log describe it.
start_server() {
    local name=$1
    server_log=$work/$name.log
    case $name in
        kickstand)
            ip netns exec "$a" env -u KICKSTAND_LOG -u RUST_LOG \
                "$kickstand" --config "$site/kickstand.yaml" serve >"$server_log" 2>&1 &
            server_pid=$!
            for _ in $(seq 100); do
                ip netns exec "$a" curl -gsf -o /dev/null "http://[$server_ip]:8080/api/status" && break
                kill -0 "$server_pid" 2>/dev/null || break
                sleep 0.1
            done
            ;;
        dnsmasq)
            # A range of 65,280 addresses and a lease limit above COUNT, so
            # every Solicit can be offered one.
            ip netns exec "$a" dnsmasq --no-daemon --conf-file=/dev/null --port=0 --user=root \
                --interface=ksbr0 --bind-interfaces --dhcp-range=fd77::100,fd77::ffff,64,1h \
                --dhcp-option=option6:bootfile-url,"tftp://[$server_ip]/ipxe.efi" \
                --dhcp-lease-max=$((2 * count)) --dhcp-leasefile="$work/leases" >"$server_log" 2>&1 &
            server_pid=$!
            sleep 1
            ;;
    esac
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "$name did not start:" >&2
        tail -20 "$server_log" >&2
        server_pid=
        return 1
    fi
}


# rcvbuf_drops -> datagrams the server's UDP 547 sockets have dropped since
# they opened because their receive buffer was full
rcvbuf_drops() {
    ip netns exec "$a" ss -uamnH 'sport = :547' | { grep -o 'd[0-9]*)' || true; } |
        tr -d 'd)' | awk '{ n += $1 } END { print n + 0 }'
}

declare -A runs label
label[kickstand]="kickstand (boot file only)"
label[dnsmasq]="dnsmasq (address + boot file)"

# --- burst ----------------------------------------------------------------
ran=()
for server in $SERVERS; do
    start_server "$server" || continue
    # Does it answer a profiled machine at all?
    first=$(ip netns exec "$c" "$gen" burst6 eth0 1 1)
    if [[ $(field replies "$first") != 1 ]]; then
        echo "$server answers no Solicit: skipped; its log:" >&2
        tail -20 "$server_log" >&2
        stop_server
        continue
    fi
    ran+=("$server")
    for run in $(seq "$REPEAT"); do
        for w in 16 0; do
            dropped=$(rcvbuf_drops)
            out=$(ip netns exec "$c" "$gen" burst6 eth0 "$count" "$w")
            out="$out rcvbuf_drops=$(($(rcvbuf_drops) - dropped))"
            echo "${label[$server]} run $run: $out" >&2
            runs[$server,$w]="${runs[$server,$w]:-} $out"$'\n'
            sleep 2 # the daemon writes what it saw after answering
        done
    done
    stop_server
done


echo
echo "DHCPv6, $count PXE Solicits from $count profiled DUIDs; median (min-max) of $REPEAT runs"
echo "(dnsmasq is a full DHCPv6 server: each Advertise also offers an address from its range)"
echo "(dropped: Solicits the server's socket lost to a full receive buffer)"
printf '%-32s %-7s %-22s %-22s %-22s %-20s %s\n' server window "replies/s" "p50 ms" "p99 ms" answered dropped
for server in "${ran[@]}"; do
    for w in 16 0; do
        printf '%-32s %-7s %-22s %-22s %-22s %-20s %s\n' "${label[$server]}" "$( ((w)) && echo "$w" || echo all)" \
            "$(column "$server" "$w" replies_per_s)" "$(column "$server" "$w" p50_us us)" \
            "$(column "$server" "$w" p99_us us)" "$(column "$server" "$w" replies)" \
            "$(column "$server" "$w" rcvbuf_drops)"
    done
done
