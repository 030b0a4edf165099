#!/usr/bin/env bash
# TFTP throughput on loopback: Kickstand vs tftp-hpa (in.tftpd) vs dnsmasq,
# all fetched with the same client, atftp, which is the only one of the
# Debian clients that speaks windowsize (RFC 7440). curl speaks blksize only
# and is run too for the lockstep rows. Prints MiB/s; asserts nothing about
# speed. Every fetched file is compared with the source.
#
# Needs: atftp, curl, tftpd-hpa (in.tftpd), dnsmasq (its TFTP always listens
# on port 69 of 127.0.0.1, so that port must be free). Run as root.
#
# Knobs: SIZE_MIB (100), BLKSIZES ("512 1468 8192"), WINDOWS ("1 4 16 64"),
# SERVERS ("kickstand tftp-hpa dnsmasq"), CONC (32), CONC_SIZE_MIB (20),
# REPEAT (1: each single-client figure is the best of REPEAT runs, which
# tames noise on a busy machine), KS_ARGS (extra tftpd flags).
set -euo pipefail

repo=$(cd "$(dirname "$0")/../../.." && pwd)
SIZE_MIB=${SIZE_MIB:-100}
BLKSIZES=${BLKSIZES:-"512 1468 8192"}
WINDOWS=${WINDOWS:-"1 4 16 64"}
SERVERS=${SERVERS:-"kickstand tftp-hpa dnsmasq"}
CONC=${CONC:-32}
CONC_SIZE_MIB=${CONC_SIZE_MIB:-20}
REPEAT=${REPEAT:-1}
KS_PORT=${KS_PORT:-16969}
HPA_PORT=${HPA_PORT:-16970}
KS_ARGS=${KS_ARGS:-}   # extra flags for the Kickstand tftpd, e.g. "--threads 1"

for tool in atftp curl in.tftpd dnsmasq; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done

work=$(mktemp -d /tmp/ks-tftp-bench.XXXXXX)
server_pid=
stop_server() {
    if [[ -n $server_pid ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=
    fi
}
cleanup() { stop_server; rm -rf "$work"; }
trap cleanup EXIT

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
(cd "$repo" && cargo build --quiet --release -p kickstand-tftp --example tftpd)
tftpd=$CARGO_TARGET_DIR/release/examples/tftpd

# in.tftpd and dnsmasq drop privileges: the tree must be world-readable.
chmod 755 "$work"
mkdir -m 755 "$work/root" "$work/out"
head -c $((SIZE_MIB << 20)) /dev/urandom > "$work/root/bench.bin"
head -c $((CONC_SIZE_MIB << 20)) /dev/urandom > "$work/root/conc.bin"
echo ready > "$work/root/ready.txt"
chmod 644 "$work"/root/*

port_of() {
    case $1 in
        kickstand) echo "$KS_PORT" ;;
        tftp-hpa) echo "$HPA_PORT" ;;
        dnsmasq) echo 69 ;;
    esac
}

start_server() {
    local log=$work/$1.log
    case $1 in
        # shellcheck disable=SC2086 # KS_ARGS is a list of flags
        kickstand) "$tftpd" --root "$work/root" --listen "127.0.0.1:$KS_PORT" $KS_ARGS >"$log" 2>&1 & ;;
        tftp-hpa) in.tftpd -L -s "$work/root" -a "127.0.0.1:$HPA_PORT" >"$log" 2>&1 & ;;
        dnsmasq) dnsmasq -d -C /dev/null --port=0 --enable-tftp --tftp-root="$work/root" \
            --listen-address=127.0.0.1 --bind-interfaces --tftp-max=$((CONC * 2)) \
            --pid-file="$work/dnsmasq.pid" --user=root >"$log" 2>&1 & ;;
    esac
    server_pid=$!
    local port
    port=$(port_of "$1")
    for _ in $(seq 50); do
        if curl -s -o /dev/null "tftp://127.0.0.1:$port/ready.txt"; then return 0; fi
        sleep 0.1
    done
    echo "$1 did not start:" >&2
    cat "$log" >&2
    return 1
}

now() { date +%s.%N; }
rate() { awk -v mib="$1" -v s="$2" 'BEGIN { printf "%.1f", mib / s }'; }

# best CLIENT PORT FILE BLKSIZE WINDOW OUT -> fastest of REPEAT fetches
best() {
    local secs best=
    for _ in $(seq "$REPEAT"); do
        secs=$(fetch "$@")
        [[ $secs == fail ]] && { echo fail; return; }
        if [[ -z $best ]] || awk -v a="$secs" -v b="$best" 'BEGIN { exit !(a < b) }'; then best=$secs; fi
    done
    echo "$best"
}

# fetch CLIENT PORT FILE BLKSIZE WINDOW OUT -> prints seconds, or "fail"
fetch() {
    local client=$1 port=$2 file=$3 blksize=$4 window=$5 out=$6 t0 t1
    t0=$(now)
    if [[ $client == atftp ]]; then
        timeout 300 atftp --option "blksize $blksize" --option "windowsize $window" \
            -g -r "$file" -l "$out" 127.0.0.1 "$port" >"$out.log" 2>&1 || { echo fail; return; }
    else
        timeout 300 curl -s --tftp-blksize "$blksize" -o "$out" "tftp://127.0.0.1:$port/$file" \
            >"$out.log" 2>&1 || { echo fail; return; }
    fi
    t1=$(now)
    cmp -s "$out" "$work/root/$file" || { echo fail; return; }
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'
}

declare -A result granted
for server in $SERVERS; do
    if [[ $server == dnsmasq ]] && ss -lun | grep -q '127.0.0.1:69 \|0.0.0.0:69 \|\*:69 '; then
        echo "port 69 busy: skipping dnsmasq" >&2
        continue
    fi
    start_server "$server"
    port=$(port_of "$server")
    for blksize in $BLKSIZES; do
        for window in $WINDOWS; do
            secs=$(best atftp "$port" bench.bin "$blksize" "$window" "$work/out/x")
            # What the server grants, from the OACK of a small traced fetch.
            granted[$server,$blksize,$window]=$(atftp --trace --option "blksize $blksize" \
                --option "windowsize $window" -g -r ready.txt -l "$work/out/probe" 127.0.0.1 "$port" 2>&1 |
                grep 'received OACK' | grep -o 'windowsize: [0-9]*' | grep -o '[0-9]*$' || echo 1)
            if [[ $secs == fail ]]; then result[$server,$blksize,$window]=FAIL
            else result[$server,$blksize,$window]=$(rate "$SIZE_MIB" "$secs"); fi
            echo "$server atftp blksize=$blksize windowsize=$window (granted ${granted[$server,$blksize,$window]}): ${result[$server,$blksize,$window]} MiB/s" >&2
        done
        secs=$(best curl "$port" bench.bin "$blksize" 1 "$work/out/x")
        if [[ $secs == fail ]]; then result[$server,$blksize,curl]=FAIL
        else result[$server,$blksize,curl]=$(rate "$SIZE_MIB" "$secs"); fi
        echo "$server curl blksize=$blksize: ${result[$server,$blksize,curl]} MiB/s" >&2
    done
    # Concurrency: CONC atftp clients at once, lockstep and windowed.
    for spec in "1468 1" "1468 16"; do
        read -r blksize window <<<"$spec"
        t0=$(now)
        pids=()
        for i in $(seq "$CONC"); do
            timeout 300 atftp --option "blksize $blksize" --option "windowsize $window" \
                -g -r conc.bin -l "$work/out/c$i" 127.0.0.1 "$port" >"$work/out/c$i.log" 2>&1 &
            pids+=($!)
        done
        failed=0
        for p in "${pids[@]}"; do wait "$p" || failed=$((failed + 1)); done
        t1=$(now)
        for i in $(seq "$CONC"); do cmp -s "$work/out/c$i" "$work/root/conc.bin" || failed=$((failed + 1)); done
        rm -f "$work"/out/c*
        secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
        key="$server,conc,$blksize,$window"
        if ((failed)); then result[$key]="FAIL($failed)"
        else result[$key]=$(rate $((CONC * CONC_SIZE_MIB)) "$secs"); fi
        echo "$server $CONC concurrent blksize=$blksize windowsize=$window: ${result[$key]} MiB/s total" >&2
    done
    stop_server
done

echo
echo "TFTP throughput, MiB/s, ${SIZE_MIB} MiB file on loopback (client atftp unless noted; granted window in brackets)"
printf '%-22s' "blksize / window"
for server in $SERVERS; do printf '%20s' "$server"; done
echo
for blksize in $BLKSIZES; do
    for window in $WINDOWS curl; do
        if [[ $window == curl ]]; then label="$blksize / 1 (curl)"; else label="$blksize / $window"; fi
        printf '%-22s' "$label"
        for server in $SERVERS; do
            v=${result[$server,$blksize,$window]:-n/a}
            [[ $window != curl && -n ${granted[$server,$blksize,$window]:-} ]] && v="$v [${granted[$server,$blksize,$window]}]"
            printf '%20s' "$v"
        done
        echo
    done
done
for spec in "1468 1" "1468 16"; do
    read -r blksize window <<<"$spec"
    printf '%-22s' "${CONC}x${CONC_SIZE_MIB}MiB $blksize/$window"
    for server in $SERVERS; do printf '%20s' "${result[$server,conc,$blksize,$window]:-n/a}"; done
    echo
done
