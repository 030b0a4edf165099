#!/usr/bin/env bash
# TFTP throughput on loopback: Kickstand vs tftp-hpa (in.tftpd) vs dnsmasq,
# all fetched with the same client, atftp, which is the only one of the
# Debian clients that speaks windowsize (RFC 7440). curl speaks blksize only
# and is run too for the lockstep rows. Prints figures; asserts nothing
# about speed. Every fetched file is compared with the source.
#
# Rows: one client at each blksize x windowsize; CONC clients at once
# (lockstep and windowed); RACK lockstep clients fetching a boot loader at
# once, as a rack powering on does (time to the last client, failures); and
# LOSS_CLIENTS lockstep clients through a seeded relay that drops a share of
# the datagrams in both directions (the kernel here has no netem).
#
# Needs: atftp, curl, tftpd-hpa (in.tftpd), dnsmasq (its TFTP always listens
# on port 69 of 127.0.0.1, so that port must be free). Run as root.
#
# Knobs: SIZE_MIB (100), BLKSIZES ("512 1468 8192"), WINDOWS ("1 4 16 64"),
# SERVERS ("kickstand tftp-hpa dnsmasq"), CONC (32), CONC_SIZE_MIB (20),
# RACK (200), RACK_SIZE_KIB (1024), LOSS ("0.01 0.05"), LOSS_CLIENTS (8),
# LOSS_SIZE_KIB (512), REPEAT (3: each figure is the median of REPEAT runs,
# all runs are logged, which shows how noisy the machine was), KS_ARGS
# (extra tftpd flags). Set CONC, RACK or LOSS to 0 / "" to skip those rows.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../../.." && pwd)
SIZE_MIB=${SIZE_MIB:-100}
BLKSIZES=${BLKSIZES:-"512 1468 8192"}
WINDOWS=${WINDOWS:-"1 4 16 64"}
SERVERS=${SERVERS:-"kickstand tftp-hpa dnsmasq"}
CONC=${CONC:-32}
CONC_SIZE_MIB=${CONC_SIZE_MIB:-20}
RACK=${RACK:-200}
RACK_SIZE_KIB=${RACK_SIZE_KIB:-1024}
LOSS=${LOSS-"0.01 0.05"}
LOSS_CLIENTS=${LOSS_CLIENTS:-8}
LOSS_SIZE_KIB=${LOSS_SIZE_KIB:-512}
REPEAT=${REPEAT:-3}
KS_PORT=${KS_PORT:-16969}
HPA_PORT=${HPA_PORT:-16970}
RELAY_PORT=${RELAY_PORT:-16971}
KS_ARGS=${KS_ARGS:-}   # extra flags for the Kickstand tftpd, e.g. "--threads 1"

for tool in atftp curl in.tftpd dnsmasq; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done

work=$(mktemp -d /tmp/ks-tftp-bench.XXXXXX)
server_pid=
relay_pid=
stop_pid() {
    if [[ -n $1 ]]; then
        kill -INT "$1" 2>/dev/null || true
        wait "$1" 2>/dev/null || true
    fi
}
stop_server() { stop_pid "$server_pid"; server_pid=; }
cleanup() { stop_pid "$relay_pid"; stop_server; rm -rf "$work"; }
trap cleanup EXIT

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
(cd "$repo" && cargo build --quiet --release -p kickstand-tftp --example tftpd --example lossy_relay)
tftpd=$CARGO_TARGET_DIR/release/examples/tftpd
lossy_relay=$CARGO_TARGET_DIR/release/examples/lossy_relay

# in.tftpd and dnsmasq drop privileges: the tree must be world-readable.
chmod 755 "$work"
mkdir -m 755 "$work/root" "$work/out"
head -c $((SIZE_MIB << 20)) /dev/urandom > "$work/root/bench.bin"
head -c $((CONC_SIZE_MIB << 20)) /dev/urandom > "$work/root/conc.bin"
head -c $((RACK_SIZE_KIB << 10)) /dev/urandom > "$work/root/loader.bin"
head -c $((LOSS_SIZE_KIB << 10)) /dev/urandom > "$work/root/lossy.bin"
for i in $(seq "$LOSS_CLIENTS"); do ln "$work/root/lossy.bin" "$work/root/lossy$i.bin"; done
echo ready > "$work/root/ready.txt"
chmod 644 "$work"/root/*
most=$((CONC > RACK ? CONC : RACK))
most=$((most > LOSS_CLIENTS ? most : LOSS_CLIENTS))

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
            --listen-address=127.0.0.1 --bind-interfaces --tftp-max=$((most * 2)) \
            --pid-file="$work/dnsmasq.pid" --user=root >"$log" 2>&1 & ;;
    esac
    server_pid=$!
    wait_ready "$(port_of "$1")" || { echo "$1 did not start:" >&2; cat "$log" >&2; return 1; }
}

wait_ready() {
    for _ in $(seq 50); do
        if curl -s -o /dev/null "tftp://127.0.0.1:$1/ready.txt"; then return 0; fi
        sleep 0.1
    done
    return 1
}

now() { date +%s.%N; }
rate() { awk -v mib="$1" -v s="$2" 'BEGIN { printf "%.1f", mib / s }'; }
median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

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

# group N PORT FILE BLKSIZE WINDOW -> "SECONDS FAILED": N atftp clients at
# once, time until the last one is done, and how many failed or got a
# different file. Client i fetches FILE's numbered link (lossy3.bin) when
# there is one, so each client gets its own losses from the relay.
group() {
    local n=$1 port=$2 file=$3 blksize=$4 window=$5 t0 t1 failed=0 pids=() name
    t0=$(now)
    for i in $(seq "$n"); do
        name=$file
        [[ -e $work/root/${file%.bin}$i.bin ]] && name=${file%.bin}$i.bin
        timeout 600 atftp --option "blksize $blksize" --option "windowsize $window" \
            -g -r "$name" -l "$work/out/c$i" 127.0.0.1 "$port" >"$work/out/c$i.log" 2>&1 &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || failed=$((failed + 1)); done
    t1=$(now)
    for i in $(seq "$n"); do cmp -s "$work/out/c$i" "$work/root/$file" || failed=$((failed + 1)); done
    rm -f "$work"/out/c*
    echo "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }') $failed"
}

# single CLIENT PORT BLKSIZE WINDOW -> median MiB/s of REPEAT fetches, or FAIL
single() {
    local secs all=
    for _ in $(seq "$REPEAT"); do
        secs=$(fetch "$1" "$2" bench.bin "$3" "$4" "$work/out/x")
        [[ $secs == fail ]] && { echo FAIL; return; }
        all="$all $secs"
    done
    echo "  runs (s):$all" >&2
    rate "$SIZE_MIB" "$(echo "$all" | median)"
}

# groups N PORT FILE BLKSIZE WINDOW -> median seconds of REPEAT group runs,
# followed by FAIL(n) with the failures of the worst run if any failed
groups() {
    local secs failed all= worst=0
    for _ in $(seq "$REPEAT"); do
        read -r secs failed < <(group "$@")
        all="$all $secs"
        ((failed > worst)) && worst=$failed
    done
    echo "  runs (s):$all" >&2
    secs=$(echo "$all" | median)
    if ((worst)); then echo "$secs FAIL($worst)"; else echo "$secs"; fi
}

declare -A result granted
ran=()
for server in $SERVERS; do
    if [[ $server == dnsmasq ]] && ss -lun | grep -q '127.0.0.1:69 \|0.0.0.0:69 \|\*:69 '; then
        echo "port 69 busy: skipping dnsmasq" >&2
        continue
    fi
    ran+=("$server")
    start_server "$server"
    port=$(port_of "$server")
    for blksize in $BLKSIZES; do
        for window in $WINDOWS; do
            result[$server,$blksize,$window]=$(single atftp "$port" "$blksize" "$window")
            # What the server grants, from the OACK of a small traced fetch.
            granted[$server,$blksize,$window]=$(atftp --trace --option "blksize $blksize" \
                --option "windowsize $window" -g -r ready.txt -l "$work/out/probe" 127.0.0.1 "$port" 2>&1 |
                grep 'received OACK' | grep -o 'windowsize: [0-9]*' | grep -o '[0-9]*$' || echo 1)
            echo "$server atftp blksize=$blksize windowsize=$window (granted ${granted[$server,$blksize,$window]}): ${result[$server,$blksize,$window]} MiB/s" >&2
        done
        result[$server,$blksize,curl]=$(single curl "$port" "$blksize" 1)
        echo "$server curl blksize=$blksize: ${result[$server,$blksize,curl]} MiB/s" >&2
    done
    if ((CONC)); then
        for spec in "1468 1" "1468 16"; do
            read -r blksize window <<<"$spec"
            secs=$(groups "$CONC" "$port" conc.bin "$blksize" "$window")
            key="$server,conc,$blksize,$window"
            read -r secs failed <<<"$secs"
            result[$key]=$(rate $((CONC * CONC_SIZE_MIB)) "$secs")${failed:+ $failed}
            echo "$server $CONC concurrent blksize=$blksize windowsize=$window: ${result[$key]} MiB/s total" >&2
        done
    fi
    if ((RACK)); then
        result[$server,rack]=$(groups "$RACK" "$port" loader.bin 1468 1)
        echo "$server $RACK concurrent ${RACK_SIZE_KIB} KiB at 1468/1: ${result[$server,rack]} s to the last" >&2
    fi
    for loss in $LOSS; do
        # The same seed for every server: each client loses the same
        # datagrams of its transfer (the relay spares the handshake, see
        # crates/tftp/tests/common/relay.rs).
        "$lossy_relay" --listen "127.0.0.1:$RELAY_PORT" --server "127.0.0.1:$port" \
            --loss "$loss" --seed 7 2>"$work/relay.log" &
        relay_pid=$!
        wait_ready "$RELAY_PORT" || { echo "relay did not start" >&2; cat "$work/relay.log" >&2; exit 1; }
        result[$server,loss,$loss]=$(groups "$LOSS_CLIENTS" "$RELAY_PORT" lossy.bin 1468 1)
        stop_pid "$relay_pid"
        relay_pid=
        echo "$server $LOSS_CLIENTS clients x ${LOSS_SIZE_KIB} KiB at 1468/1, $loss loss both ways: ${result[$server,loss,$loss]} s to the last ($(cat "$work/relay.log"))" >&2
    done
    stop_server
done

echo
echo "TFTP on loopback, client atftp unless noted; median of $REPEAT runs (all runs logged above)"
echo "Throughput, MiB/s, ${SIZE_MIB} MiB file (granted window in brackets)"
printf '%-26s' "blksize / window"
for server in "${ran[@]}"; do printf '%20s' "$server"; done
echo
for blksize in $BLKSIZES; do
    for window in $WINDOWS curl; do
        if [[ $window == curl ]]; then label="$blksize / 1 (curl)"; else label="$blksize / $window"; fi
        printf '%-26s' "$label"
        for server in "${ran[@]}"; do
            v=${result[$server,$blksize,$window]:-n/a}
            [[ $window != curl && -n ${granted[$server,$blksize,$window]:-} ]] && v="$v [${granted[$server,$blksize,$window]}]"
            printf '%20s' "$v"
        done
        echo
    done
done
if ((CONC)); then
    for spec in "1468 1" "1468 16"; do
        read -r blksize window <<<"$spec"
        printf '%-26s' "${CONC}x${CONC_SIZE_MIB}MiB $blksize/$window"
        for server in "${ran[@]}"; do printf '%20s' "${result[$server,conc,$blksize,$window]:-n/a}"; done
        echo
    done
fi
if ((RACK)) || [[ -n $LOSS ]]; then
    echo "Seconds to the last client (FAIL(n): n transfers of the worst run failed or differed)"
fi
if ((RACK)); then
    printf '%-26s' "${RACK}x${RACK_SIZE_KIB}KiB 1468/1"
    for server in "${ran[@]}"; do printf '%20s' "${result[$server,rack]:-n/a}"; done
    echo
fi
for loss in $LOSS; do
    printf '%-26s' "${LOSS_CLIENTS}x${LOSS_SIZE_KIB}KiB 1468/1 loss $loss"
    for server in "${ran[@]}"; do printf '%20s' "${result[$server,loss,$loss]:-n/a}"; done
    echo
done
