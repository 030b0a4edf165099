#!/usr/bin/env bash
# ProxyDHCP under load: the whole daemon (`kickstand serve`, release build,
# the shipped settings apart from ports, paths and addresses, default log
# level) against dnsmasq in proxy mode, answering the same DISCOVERs
# (captured from OVMF) broadcast by a client namespace over a veth into the
# server namespace's bridge. Prints figures; asserts nothing.
#
# 1. Burst: COUNT (1000) DISCOVERs from the COUNT profiled MACs
#    52:54:00:00:00:00 + i, at most 16 unanswered at a time and all at once:
#    replies/s, p50, p99 and how many were answered. Kickstand on SQLite,
#    on PostgreSQL (tests/beds/postgres/pg.sh), and on SQLite with its state
#    directory on a "slow disk" (slowfsync.c, an LD_PRELOAD shim that makes
#    each fsync/fdatasync there take SLOW_FSYNC_MS = 20 ms longer, as a USB
#    stick does); dnsmasq; and, for scale, the bare kickstand-dhcp crate's
#    example server (no daemon, no state: not what a rack gets).
# 2. Forged flood: FLOOD_RATE (20,000) DISCOVERs a second from distinct
#    unprofiled MACs for FLOOD_SECS (10) s while one profiled host sends a
#    DISCOVER every 2 s, during the flood and FLOOD_TAIL (10) s after it:
#    each probe's reply latency (or `unanswered`: no reply by 5 s after the
#    last probe), the daemon's RSS before / peak / after, and how much its
#    state database (state.db + -wal) grew once it stopped writing (at most
#    FLOOD_SETTLE, 60 s). Goals: every probe answered within 100 ms, RSS
#    under 100 MB, growth under 10 MB. The same flood against dnsmasq; and
#    against the daemon without the probe (FLOOD_BARE): a probe waiting on
#    the database holds up the daemon's DHCP worker, and so how much of the
#    flood it takes in.
#
# Every figure is the median of REPEAT (3) runs with min-max beside it; each
# run is logged as it happens. The daemon gets a fresh state for each server
# row and each flood run, and its profile set is generated: COUNT hosts on
# the shipped OS definitions and defaults (profiles/os, profiles/groups.yaml).
#
# Needs root, dnsmasq, gcc, PostgreSQL (tests/setup-peers) and cargo.
# Usage: bench.sh [COUNT]
# Knobs: REPEAT (3), SERVERS ("sqlite postgres slow-disk dnsmasq crate";
# the first three are the daemon), BURST (1; 0 skips the burst rows),
# FLOOD (1; 0 skips the flood rows), FLOOD_RATE (20000), FLOOD_SECS (10),
# FLOOD_TAIL (10: probes go on this long after the flood), FLOOD_SETTLE (60:
# at most this long for the daemon's database to go still afterwards),
# FLOOD_BARE (1; 0 skips the row without the probe), SLOW_FSYNC_MS (20).
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

count=${1:-1000}
REPEAT=${REPEAT:-3}
SERVERS=${SERVERS:-"sqlite postgres slow-disk dnsmasq crate"}
BURST=${BURST:-1}
FLOOD=${FLOOD:-1}
FLOOD_RATE=${FLOOD_RATE:-20000}
FLOOD_SECS=${FLOOD_SECS:-10}
FLOOD_TAIL=${FLOOD_TAIL:-10}     # probes go on this long after the flood
FLOOD_SETTLE=${FLOOD_SETTLE:-60} # at most this long for the database to go still
FLOOD_BARE=${FLOOD_BARE:-1}      # the daemon's flood row once more, without the probe
SLOW_FSYNC_MS=${SLOW_FSYNC_MS:-20}
# The flood's probe: a profiled host (the burst's eighth MAC).
probe_mac=52:54:00:00:00:07

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../../.." && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
for tool in dnsmasq gcc cargo ip curl psql; do
    command -v "$tool" >/dev/null || { echo "missing $tool (tests/setup-peers)" >&2; exit 1; }
done
((count >= 8 && count <= 65536)) || { echo "COUNT must be 8..65536" >&2; exit 2; }

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
(cd "$repo" && cargo build --quiet --release -p kickstand &&
    cargo build --quiet --release -p kickstand-dhcp --example dhcp_bench)
kickstand=$CARGO_TARGET_DIR/release/kickstand
gen=$CARGO_TARGET_DIR/release/examples/dhcp_bench

a=ks-dhcpb-a-$$ c=ks-dhcpb-c-$$
server_ip=10.77.0.1
work=$(mktemp -d /tmp/ks-dhcp-bench.XXXXXX)
pg=
server_pid=
cleanup() {
    stop_server
    [[ -n $pg ]] && "$repo/tests/beds/postgres/pg.sh" kill "$pg"
    ip netns del "$a" 2>/dev/null || true
    ip netns del "$c" 2>/dev/null || true
    rm -rf "$work" ${pg:+"$pg"}
}
trap cleanup EXIT

# --- the bed: server namespace with a bridge, client namespace on a veth ---
ip netns add "$a"
ip netns add "$c"
ip -n "$a" link set lo up
ip -n "$c" link set lo up
ip -n "$a" link add ksbr0 type bridge
ip -n "$a" addr add "$server_ip/24" dev ksbr0
ip -n "$a" link set ksbr0 up
ip -n "$a" link add vc type veth peer name eth0 netns "$c"
ip -n "$a" link set vc master ksbr0 up
ip -n "$c" addr add 10.77.0.50/24 dev eth0
ip -n "$c" link set eth0 up
sleep 1 # bridge port forwarding

# --- the slow disk ------------------------------------------------------
gcc -O2 -Wall -shared -fPIC -o "$work/slowfsync.so" "$here/slowfsync.c" -ldl

# --- the daemon's site: config and a generated profile set ---------------
# The shipped settings apart from ports, paths and addresses: ProxyDHCP on
# the bridge, unknown machines ignored, the shipped OS definitions and
# defaults. The mirrors are a closed local port: nothing here downloads.
site=$work/site
mkdir -p "$work/tftp"
: >"$work/tftp/undionly.kpxe"
: >"$work/tftp/ipxe.efi"
write_profiles "$site" "$count" "$repo"
write_config "$site" "$server_ip" "$server_ip" "$repo" "$work/state"
"$kickstand" --config "$site/kickstand.yaml" check >"$work/check.log" 2>&1 ||
    { echo "kickstand check refused the generated profiles:" >&2; tail -20 "$work/check.log" >&2; exit 1; }

# --- servers -------------------------------------------------------------
# start_server NAME: starts it in the server namespace with a fresh state;
# server_pid, server_log and state_dir describe it.
start_server() {
    local name=$1 url=
    server_log=$work/$name.log
    state_dir=$work/state-$name-$RANDOM
    case $name in
        sqlite | postgres | slow-disk)
            if [[ $name == postgres ]]; then
                if [[ -z $pg ]]; then
                    pg=$(mktemp -d /tmp/ks-dhcp-bench-pg.XXXXXX)
                    "$repo/tests/beds/postgres/pg.sh" start "$pg" >/dev/null
                fi
                # A database of its own for each start: a fresh state.
                db=bench$RANDOM
                psql -h "$pg" -U kickstand -d postgres -qc "CREATE DATABASE $db" >/dev/null
                url="postgresql://kickstand@localhost/$db?host=$pg"
            fi
            write_config "$site" "$server_ip" "$server_ip" "$repo" "$state_dir" "$url"
            local preload=()
            if [[ $name == slow-disk ]]; then
                mkdir -p "$state_dir"
                preload=(LD_PRELOAD="$work/slowfsync.so" SLOW_FSYNC_MS="$SLOW_FSYNC_MS" SLOW_FSYNC_PREFIX="$state_dir/")
            fi
            ip netns exec "$a" env -u KICKSTAND_LOG -u RUST_LOG "${preload[@]}" \
                "$kickstand" --config "$site/kickstand.yaml" serve >"$server_log" 2>&1 &
            server_pid=$!
            for _ in $(seq 100); do
                ip netns exec "$a" curl -sf -o /dev/null "http://$server_ip:8080/api/status" && break
                kill -0 "$server_pid" 2>/dev/null || break
                sleep 0.1
            done
            ;;
        dnsmasq)
            ip netns exec "$a" dnsmasq --no-daemon --conf-file=/dev/null --port=0 --user=root \
                --interface=ksbr0 --bind-interfaces --dhcp-range=10.77.0.0,proxy \
                --pxe-service=x86PC,"Kickstand",undionly --pxe-service=X86-64_EFI,"Kickstand",ipxe \
                --dhcp-leasefile="$work/leases" >"$server_log" 2>&1 &
            server_pid=$!
            sleep 1
            ;;
        crate)
            ip netns exec "$a" "$gen" serve ksbr0 "$server_ip" >"$server_log" 2>&1 &
            server_pid=$!
            for _ in $(seq 50); do
                grep -q READY "$server_log" && break
                sleep 0.1
            done
            ;;
    esac
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "$name did not start:" >&2
        tail -20 "$server_log" >&2
        server_pid=
        return 1
    fi
}

# rss PID FIELD -> kB of VmRSS or VmHWM, or 0 when it is gone
rss() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
mb() { awk -v kb="$1" 'BEGIN { printf "%.1f", kb / 1024 }'; }
# db_bytes DIR -> bytes of state.db and its write-ahead log
db_bytes() {
    local total=0 f
    for f in "$1/state.db" "$1/state.db-wal"; do
        [[ -f $f ]] && total=$((total + $(stat -c %s "$f")))
    done
    echo "$total"
}
# db_touched DIR -> sizes and modification times of the state files: the
# write-ahead log is rewritten from its start after a checkpoint, so its
# size alone does not show writes going on
db_touched() { stat -c '%s %y' "$1"/state.db* 2>/dev/null || true; }

declare -A runs label
label[sqlite]="kickstand, SQLite"
label[postgres]="kickstand, PostgreSQL"
label[slow-disk]="kickstand, SQLite, slow disk"
label[dnsmasq]="dnsmasq proxy (peer)"
label[crate]="crate example (no daemon)"
label[bare]="kickstand, SQLite, no probe"

# --- 1. bursts ------------------------------------------------------------
ran=()
burst_servers=$SERVERS
((BURST)) || burst_servers=
for server in $burst_servers; do
    start_server "$server" || continue
    # Does it answer a profiled machine at all?
    first=$(ip netns exec "$c" "$gen" burst eth0 1 1)
    if [[ $(field replies "$first") != 1 ]]; then
        echo "$server answers no DISCOVER: skipped; its log:" >&2
        tail -20 "$server_log" >&2
        stop_server
        continue
    fi
    ran+=("$server")
    for run in $(seq "$REPEAT"); do
        for w in 16 0; do
            out=$(ip netns exec "$c" "$gen" burst eth0 "$count" "$w")
            echo "${label[$server]} run $run: $out" >&2
            runs[$server,$w]="${runs[$server,$w]:-} $out"$'\n'
            sleep 2 # the daemon writes what it saw after answering
        done
    done
    stop_server
    if [[ $server == slow-disk ]]; then
        echo "slow disk: $(grep slowfsync: "$server_log" || echo 'the shim was not loaded')" >&2
    fi
done


if ((BURST)); then
    echo
    echo "ProxyDHCP, $count DISCOVERs from $count profiled MACs; median (min-max) of $REPEAT runs"
    printf '%-32s %-7s %-22s %-22s %-24s %s\n' server window "replies/s" "p50 ms" "p99 ms" answered
    for server in "${ran[@]}"; do
        for w in 16 0; do
            printf '%-32s %-7s %-22s %-22s %-24s %s\n' "${label[$server]}" "$( ((w)) && echo "$w" || echo all)" \
                "$(column "$server" "$w" replies_per_s)" "$(column "$server" "$w" p50_us us)" \
                "$(column "$server" "$w" p99_us us)" "$(column "$server" "$w" replies)"
        done
    done
fi

((FLOOD)) || exit 0

# --- 2. forged flood ---------------------------------------------------------
# Each run: a fresh server; the flood and the probe from the client
# namespace (dhcp_bench flood), the server's RSS sampled meanwhile; then up
# to 30 s for the daemon to finish writing what it saw (until its database
# stops growing for 2 s), and its RSS and database size after that.
declare -A flood
n_flood=0
# probe_list flood|after -> the latencies of those probes of the last run
probe_list() {
    { grep "^probe .*during=$1" "$work/flood.out" || true; } |
        awk '{ printf "%s%s", (NR > 1 ? " " : ""), ($5 == "unanswered" ? "unanswered" : substr($5, 12)) }'
}
# The rows: the daemon and dnsmasq with the probe; with FLOOD_BARE, the
# daemon again without it (a probe waiting on the database holds up the
# daemon's DHCP worker, and with it how much of the flood it takes in).
rows=(sqlite dnsmasq)
((FLOOD_BARE)) && rows+=(bare)
flood_servers=()
for row in "${rows[@]}"; do
    server=$row every=2000 tail=$FLOOD_TAIL
    [[ $row == bare ]] && server=sqlite every=$(((FLOOD_SECS + FLOOD_TAIL) * 10000)) tail=0
    [[ " $SERVERS " == *" $server "* ]] || continue
    flood_servers+=("$row")
    for run in $(seq "$REPEAT"); do
        start_server "$server" || break
        sleep 1
        before=$(rss "$server_pid" VmRSS) peak=$before
        db0=$(db_bytes "$state_dir") log0=$(stat -c %s "$server_log")
        ip netns exec "$c" "$gen" flood eth0 "$FLOOD_RATE" "$FLOOD_SECS" "$probe_mac" "$every" "$tail" >"$work/flood.out" &
        flood_pid=$!
        while kill -0 "$flood_pid" 2>/dev/null; do
            now=$(rss "$server_pid" VmRSS)
            ((now > peak)) && peak=$now
            sleep 0.25
        done
        wait "$flood_pid" || echo "the flood generator failed: $(cat "$work/flood.out")" >&2
        # Writing on after the flood: wait until the database is still.
        settle=0
        if [[ $server != dnsmasq ]]; then
            still=0 seen=$(db_touched "$state_dir")
            while ((settle < FLOOD_SETTLE && still < 2)); do
                sleep 1
                settle=$((settle + 1))
                now=$(db_touched "$state_dir")
                if [[ $now == "$seen" ]]; then still=$((still + 1)); else still=0 seen=$now; fi
                now=$(rss "$server_pid" VmRSS)
                ((now > peak)) && peak=$now
            done
            ((still >= 2)) || settle="$settle+ (still writing)"
        fi
        size=$(db_bytes "$state_dir")
        hwm=$(rss "$server_pid" VmHWM)
        ((hwm > peak)) && peak=$hwm
        after=$(rss "$server_pid" VmRSS)
        # Still answering HTTP afterwards (the daemon), and how fast.
        status=-
        if [[ $server != dnsmasq ]]; then
            status=$(ip netns exec "$a" curl -sf -o /dev/null -m 10 -w '%{http_code} in %{time_total}s' \
                "http://$server_ip:8080/api/status") || status="none in 10 s"
        fi
        summary=$(grep '^flood ' "$work/flood.out" || true)
        probes="$(probe_list flood) | $(probe_list after)"
        # Of the probes sent during the flood: how many, how many answered
        # within 100 ms, how many at all, and the slowest answer.
        read -r n n_fast n_answered slowest < <({ grep '^probe .*during=flood' "$work/flood.out" || true; } | awk '
            { n++ } $5 != "unanswered" { a++; v = substr($5, 12) + 0; if (v <= 100) f++; if (v > m) m = v }
            END { printf "%d %d %d %s\n", n, f, a, (a ? sprintf("%.1f", m) : "") }')
        ((n > n_flood)) && n_flood=$n
        grown=$(awk -v a="$db0" -v b="$size" 'BEGIN { printf "%.2f", (b - a) / 1048576 }')
        logged=$(awk -v a="$log0" -v b="$(stat -c %s "$server_log")" 'BEGIN { printf "%.1f", (b - a) / 1048576 }')
        echo "${label[$row]} flood run $run: $summary; probe ms (flood | after): $probes;" \
            "RSS MB $(mb "$before")/$(mb "$peak")/$(mb "$after"); DB +$grown MB (still after ${settle} s);" \
            "log +$logged MB; /api/status afterwards: $status" >&2
        flood[$row,$run]="$(field flood_replies "$summary");$probes;$(mb "$before")/$(mb "$peak")/$(mb "$after");$grown;$settle;$logged;$status"
        flood[$row,fast]="${flood[$row,fast]:-} $n_fast"
        flood[$row,answered]="${flood[$row,answered]:-} $n_answered"
        flood[$row,slowest]="${flood[$row,slowest]:-} $slowest"
        flood[$row,peak]="${flood[$row,peak]:-} $(mb "$peak")"
        flood[$row,grown]="${flood[$row,grown]:-} $grown"
        stop_server
    done
done

echo
echo "Forged flood: $FLOOD_RATE DISCOVERs/s from distinct unprofiled MACs for ${FLOOD_SECS}s;"
echo "probe $probe_mac (profiled) every 2 s, reply latency in ms (during the flood | ${FLOOD_TAIL}s after it)."
echo "Goals: every probe within 100 ms, RSS < 100 MB, DB growth < 10 MB."
printf '%-28s %-4s %-13s %-26s %-8s %-20s %-8s %-20s %s\n' server run "flood replies" "RSS MB before/peak/after" \
    "DB +MB" "DB still after s" "log +MB" "/api/status after" "probe ms (flood | after)"
for row in "${flood_servers[@]}"; do
    for run in $(seq "$REPEAT"); do
        [[ -n ${flood[$row,$run]:-} ]] || continue
        IFS=';' read -r replies probes rss_t grown settle logged status <<<"${flood[$row,$run]}"
        [[ $row == dnsmasq ]] && grown=- settle=- logged=-
        [[ $row == bare ]] && probes="(none sent)"
        printf '%-28s %-4s %-13s %-26s %-8s %-20s %-8s %-20s %s\n' "${label[$row]}" "$run" "$replies" \
            "$rss_t" "$grown" "$settle" "$logged" "$status" "$probes"
    done
done
echo "Median (min-max) over the runs, of the $n_flood probes sent during the flood:"
for row in "${flood_servers[@]}"; do
    probe_stats=
    # shellcheck disable=SC2086 # lists of numbers
    [[ $row != bare ]] && probe_stats="answered within 100 ms $(stats ${flood[$row,fast]:-}), at all $(stats ${flood[$row,answered]:-}); slowest answer $(stats ${flood[$row,slowest]:-}) ms; "
    # shellcheck disable=SC2086
    printf '%-28s %speak RSS %s MB%s\n' "${label[$row]}" "$probe_stats" "$(stats ${flood[$row,peak]:-})" \
        "$([[ $row != dnsmasq ]] && echo "; DB growth $(stats ${flood[$row,grown]:-}) MB")"
done
