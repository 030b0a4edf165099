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
server_pids=()
relay_pid=
stop_pid() {
    if [[ -n $1 ]]; then
        kill -INT "$1" 2>/dev/null || true
        wait "$1" 2>/dev/null || true
    fi
}
cleanup() {
    stop_pid "$relay_pid"
    for pid in "${server_pids[@]}"; do stop_pid "$pid"; done
    rm -rf "$work"
}
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
    server_pids+=($!)
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

# Runs per server and row: seconds, "fail" for a failed single fetch, or
# "SECONDS/FAILED" for a group of clients.
declare -A runs result granted

# record SERVER KEY VALUE: one run of a row
record() { runs[$1,$2]="${runs[$1,$2]:-} $3"; }

# median_of SERVER KEY -> median seconds of the runs, FAIL when a single
# fetch failed, or "SECONDS FAIL(n)" with the worst run's failures
median_of() {
    local all=${runs[$1,$2]:-} secs worst=0 v
    echo "$1 $2 runs (s):$all" >&2
    [[ $all == *fail* ]] && { echo FAIL; return; }
    secs=$(for v in $all; do echo "${v%/*}"; done | median)
    for v in $all; do [[ $v == */* ]] && ((${v#*/} > worst)) && worst=${v#*/}; done
    if ((worst)); then echo "$secs FAIL($worst)"; else echo "$secs"; fi
}

# rated SERVER KEY MIB -> MiB/s from the median, keeping any FAIL mark
rated() {
    local m
    m=$(median_of "$1" "$2")
    [[ $m == FAIL ]] && { echo FAIL; return; }
    read -r secs failed <<<"$m"
    echo "$(rate "$3" "$secs")${failed:+ $failed}"
}

ran=()
for server in $SERVERS; do
    if [[ $server == dnsmasq ]] && ss -lun | grep -q '127.0.0.1:69 \|0.0.0.0:69 \|\*:69 '; then
        echo "port 69 busy: skipping dnsmasq" >&2
        continue
    fi
    ran+=("$server")
    start_server "$server"
done

for blksize in $BLKSIZES; do
    for window in $WINDOWS curl; do
        client=atftp w=$window
        [[ $window == curl ]] && client=curl w=1
        for _ in $(seq "$REPEAT"); do
            for server in "${ran[@]}"; do
                record "$server" "$blksize,$window" "$(fetch "$client" "$(port_of "$server")" bench.bin "$blksize" "$w" "$work/out/x")"
            done
        done
        for server in "${ran[@]}"; do
            result[$server,$blksize,$window]=$(rated "$server" "$blksize,$window" "$SIZE_MIB")
            if [[ $window != curl ]]; then
                # What the server grants, from the OACK of a small traced fetch.
                granted[$server,$blksize,$window]=$(atftp --trace --option "blksize $blksize" \
                    --option "windowsize $window" -g -r ready.txt -l "$work/out/probe" 127.0.0.1 "$(port_of "$server")" 2>&1 |
                    grep 'received OACK' | grep -o 'windowsize: [0-9]*' | grep -o '[0-9]*$' || echo 1)
            fi
            echo "$server $client blksize=$blksize windowsize=$w (granted ${granted[$server,$blksize,$window]:-1}): ${result[$server,$blksize,$window]} MiB/s" >&2
        done
    done
done

# rows KEY N FILE BLKSIZE WINDOW [RELAY_LOSS]: REPEAT group runs per server
rows() {
    local key=$1 n=$2 file=$3 blksize=$4 window=$5 loss=${6:-} port secs failed
    for _ in $(seq "$REPEAT"); do
        for server in "${ran[@]}"; do
            port=$(port_of "$server")
            if [[ -n $loss ]]; then
                # The same seed for every server: each client loses the same
                # datagrams of its transfer (the relay spares the handshake,
                # see crates/tftp/tests/common/relay.rs).
                "$lossy_relay" --listen "127.0.0.1:$RELAY_PORT" --server "127.0.0.1:$port" \
                    --loss "$loss" --seed 7 2>"$work/relay.log" &
                relay_pid=$!
                wait_ready "$RELAY_PORT" || { echo "relay did not start" >&2; cat "$work/relay.log" >&2; exit 1; }
                port=$RELAY_PORT
            fi
            read -r secs failed < <(group "$n" "$port" "$file" "$blksize" "$window")
            record "$server" "$key" "$secs/$failed"
            if [[ -n $loss ]]; then
                stop_pid "$relay_pid"
                relay_pid=
                echo "$server $key: relay $(cat "$work/relay.log")" >&2
            fi
        done
    done
}

if ((CONC)); then
    for spec in "1468 1" "1468 16"; do
        read -r blksize window <<<"$spec"
        rows "conc,$blksize,$window" "$CONC" conc.bin "$blksize" "$window"
        for server in "${ran[@]}"; do
            result[$server,conc,$blksize,$window]=$(rated "$server" "conc,$blksize,$window" $((CONC * CONC_SIZE_MIB)))
            echo "$server $CONC concurrent blksize=$blksize windowsize=$window: ${result[$server,conc,$blksize,$window]} MiB/s total" >&2
        done
    done
fi
if ((RACK)); then
    rows rack "$RACK" loader.bin 1468 1
    for server in "${ran[@]}"; do
        result[$server,rack]=$(median_of "$server" rack)
        echo "$server $RACK concurrent ${RACK_SIZE_KIB} KiB at 1468/1: ${result[$server,rack]} s to the last" >&2
    done
fi
for loss in $LOSS; do
    rows "loss,$loss" "$LOSS_CLIENTS" lossy.bin 1468 1 "$loss"
    for server in "${ran[@]}"; do
        result[$server,loss,$loss]=$(median_of "$server" "loss,$loss")
        echo "$server $LOSS_CLIENTS clients x ${LOSS_SIZE_KIB} KiB at 1468/1, $loss loss both ways: ${result[$server,loss,$loss]} s to the last" >&2
    done
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
