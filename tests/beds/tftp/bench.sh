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
# the datagrams in both directions (the kernel here has no netem). With BOOT,
# the RACK row also runs on the whole daemon, its clients fetching an OS
# tree's shim (os/<os>/EFI/BOOT/BOOTX64.EFI, the same RACK_SIZE_KIB bytes)
# from its warm repo cache, and again cold: each cold run starts with an
# empty cache, so they are served while the one download from a local
# mirror, paced at MIRROR_KIBS, arrives.
#
# Needs: atftp, curl, tftpd-hpa (in.tftpd), dnsmasq (its TFTP always listens
# on port 69 of 127.0.0.1, so that port must be free), python3 (the mirror of
# the boot-file rows). Run as root.
#
# Knobs: SIZE_MIB (100), BLKSIZES ("512 1468 8192"), WINDOWS ("1 4 16 64"),
# SERVERS ("kickstand tftp-hpa dnsmasq"), CONC (32), CONC_SIZE_MIB (20),
# RACK (200), RACK_SIZE_KIB (1024), BOOT (1), MIRROR_KIBS (4096), LOSS ("0.01 0.05"), LOSS_CLIENTS (8),
# LOSS_SIZE_KIB (512), REPEAT (3: each figure is the median of REPEAT runs,
# all runs are logged, which shows how noisy the machine was), KS_ARGS
# (extra tftpd flags). Set CONC, RACK, BOOT or LOSS to 0 / "" to skip those
# rows.
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
BOOT=${BOOT:-1}
((RACK)) || BOOT=0   # the boot-file rows are the rack row on the daemon
LOSS=${LOSS-"0.01 0.05"}
LOSS_CLIENTS=${LOSS_CLIENTS:-8}
LOSS_SIZE_KIB=${LOSS_SIZE_KIB:-512}
REPEAT=${REPEAT:-3}
KS_PORT=${KS_PORT:-16969}
HPA_PORT=${HPA_PORT:-16970}
RELAY_PORT=${RELAY_PORT:-16971}
# The daemon of the boot-file rows: TFTP, HTTP, and the mirror it downloads from.
DAEMON_PORT=${DAEMON_PORT:-16972}
DAEMON_HTTP_PORT=${DAEMON_HTTP_PORT:-16973}
MIRROR_PORT=${MIRROR_PORT:-16974}
MIRROR_KIBS=${MIRROR_KIBS:-4096}   # the mirror's pace, KiB/s
KS_ARGS=${KS_ARGS:-}   # extra flags for the Kickstand tftpd, e.g. "--threads 1"

for tool in atftp curl in.tftpd dnsmasq; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done

work=$(mktemp -d /tmp/ks-tftp-bench.XXXXXX)
server_pids=()
relay_pid=
daemon_pid=
mirror_pid=
stop_pid() {
    if [[ -n $1 ]]; then
        kill -INT "$1" 2>/dev/null || true
        wait "$1" 2>/dev/null || true
    fi
}
cleanup() {
    stop_pid "$relay_pid"
    stop_pid "$daemon_pid"
    stop_pid "$mirror_pid"
    for pid in "${server_pids[@]}"; do stop_pid "$pid"; done
    rm -rf "$work"
}
trap cleanup EXIT

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
(cd "$repo" && cargo build --quiet --release -p kickstand-tftp --example tftpd --example lossy_relay)
tftpd=$CARGO_TARGET_DIR/release/examples/tftpd
lossy_relay=$CARGO_TARGET_DIR/release/examples/lossy_relay
if ((BOOT)); then
    (cd "$repo" && cargo build --quiet --release -p kickstand)
    kickstand=$CARGO_TARGET_DIR/release/kickstand
fi

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
        daemon) echo "$DAEMON_PORT" ;;
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
    # Ready, and still running: not another server answering on its port.
    if ! wait_ready "$(port_of "$1")" || ! kill -0 "$!" 2>/dev/null; then
        echo "$1 did not start:" >&2
        cat "$log" >&2
        return 1
    fi
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

# group N PORT FILE BLKSIZE WINDOW [REMOTE] -> "SECONDS FAILED": N atftp
# clients at once, time until the last one is done, and how many failed or
# got a file other than root/FILE. They ask for REMOTE if given, else for
# FILE, or for FILE's numbered link (lossy3.bin) when there is one, so each
# client gets its own losses from the relay.
group() {
    local n=$1 port=$2 file=$3 blksize=$4 window=$5 remote=${6:-} t0 t1 failed=0 pids=() name
    t0=$(now)
    for i in $(seq "$n"); do
        name=${remote:-$file}
        [[ -z $remote && -e $work/root/${file%.bin}$i.bin ]] && name=${file%.bin}$i.bin
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

# The whole daemon for the boot-file rows: an OS whose tree is on a local
# mirror (the paced script below, logging every request), so os/bench/EFI/
# BOOT/BOOTX64.EFI over TFTP comes from the repo cache. The daemon's settings are
# the shipped ones apart from ports and paths: boot files are revalidated
# with the mirror after 30 s, and every transfer is logged and recorded.
shim=os/bench/EFI/BOOT/BOOTX64.EFI
if ((BOOT)); then
    mkdir -p "$work/mirror/tree/EFI/BOOT" "$work/site" "$work/var"
    cp "$work/root/loader.bin" "$work/mirror/tree/EFI/BOOT/BOOTX64.EFI"
    # The repo proxy does not cache a file modified on the mirror seconds
    # ago (it may still be being written): this one was published long ago.
    touch -d '1 day ago' "$work/mirror/tree/EFI/BOOT/BOOTX64.EFI"
    cat >"$work/site/kickstand.yaml" <<YAML
server:
  address: 127.0.0.1
  bind: 127.0.0.1
  interfaces: []
  http_port: $DAEMON_HTTP_PORT
  tftp_port: $DAEMON_PORT
  syslog_port: 0
dhcp:
  mode: "off"
tftp:
  root: ../root
mirrors:
  bench: [http://127.0.0.1:$MIRROR_PORT/]
cache:
  dir: ../var/cache
  max_size: 1GiB
paths:
  templates: $repo/templates
  state: ../var/state
YAML
    cat >"$work/site/os.yaml" <<YAML
os:
  bench:
    title: Bench tree
    mirror: bench
    tree: tree
    kickstart: centos-stream-9.ks.j2
YAML
    # A mirror that sends at MIRROR_KIBS, as one reached through an office
    # uplink does, so the cold rows' transfers follow a download still in
    # progress. It logs each request as http.server does.
    cat >"$work/mirror.py" <<'PY'
import email.utils, http.server, os, signal, sys, time
root, port, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) * 1024
# A background job of a script starts with SIGINT ignored; cleanup sends it.
signal.signal(signal.SIGINT, signal.default_int_handler)

class Paced(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_HEAD(self):
        return self.head()

    def do_GET(self):
        path = self.head()
        if path:
            with open(path, "rb") as f:
                while chunk := f.read(16384):
                    self.wfile.write(chunk)
                    time.sleep(len(chunk) / rate)

    def head(self):
        path = os.path.join(root, self.path.split("?")[0].lstrip("/"))
        if ".." in self.path or not os.path.isfile(path):
            self.send_error(404)
            return None
        st = os.stat(path)
        self.send_response(200)
        self.send_header("Content-Length", str(st.st_size))
        self.send_header("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))
        self.end_headers()
        return path

http.server.ThreadingHTTPServer(("127.0.0.1", port), Paced).serve_forever()
PY
    python3 "$work/mirror.py" "$work/mirror" "$MIRROR_PORT" "$MIRROR_KIBS" >"$work/mirror.log" 2>&1 &
    mirror_pid=$!
    for _ in $(seq 50); do
        curl -sfI -o /dev/null "http://127.0.0.1:$MIRROR_PORT/tree/EFI/BOOT/BOOTX64.EFI" && break
        sleep 0.1
    done
    # Answered by this mirror, not by something else on its port.
    kill -0 "$mirror_pid" 2>/dev/null || { echo "the mirror did not start:" >&2; cat "$work/mirror.log" >&2; exit 1; }
fi

# start_daemon: the daemon on an empty cache (its state is kept)
start_daemon() {
    stop_pid "$daemon_pid"
    rm -rf "$work/var/cache"
    "$kickstand" --config "$work/site/kickstand.yaml" serve >>"$work/daemon.log" 2>&1 &
    daemon_pid=$!
    if ! wait_ready "$DAEMON_PORT" || ! kill -0 "$daemon_pid" 2>/dev/null; then
        echo "the daemon did not start:" >&2
        tail -20 "$work/daemon.log" >&2
        exit 1
    fi
}

# mirror_gets -> how many GETs of the shim the mirror has answered
mirror_gets() { grep -c "\"GET /tree/EFI/BOOT/BOOTX64.EFI " "$work/mirror.log" || true; }

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

# rows KEY N FILE BLKSIZE WINDOW [RELAY_LOSS]: REPEAT group runs per server;
# the rack row also on the daemon, which serves FILE's bytes as the shim
rows() {
    local key=$1 n=$2 file=$3 blksize=$4 window=$5 loss=${6:-} port secs failed servers remote
    servers=("${ran[@]}")
    [[ $key == rack ]] && ((BOOT)) && servers+=(daemon)
    for _ in $(seq "$REPEAT"); do
        for server in "${servers[@]}"; do
            port=$(port_of "$server")
            remote=
            [[ $server == daemon ]] && remote=$shim
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
            read -r secs failed < <(group "$n" "$port" "$file" "$blksize" "$window" "$remote")
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
# The shim from the daemon's repo cache, cold: each run starts on an empty
# cache. The last run leaves the daemon running with it cached for the
# rack row, which it joins warm.
downloads=
if ((BOOT)); then
    for _ in $(seq "$REPEAT"); do
        start_daemon
        before=$(mirror_gets)
        read -r secs failed < <(group "$RACK" "$DAEMON_PORT" loader.bin 1468 1 "$shim")
        record daemon boot-cold "$secs/$failed"
        downloads="$downloads $(($(mirror_gets) - before))"
    done
    result[daemon,boot-cold]=$(median_of daemon boot-cold)
    echo "daemon $RACK concurrent shim from a cold repo cache: ${result[daemon,boot-cold]} s to the last; mirror downloads per run:$downloads" >&2
fi
if ((RACK)); then
    rows rack "$RACK" loader.bin 1468 1
    for server in "${ran[@]}" $( ((BOOT)) && echo daemon); do
        result[$server,rack]=$(median_of "$server" rack)
        echo "$server $RACK concurrent ${RACK_SIZE_KIB} KiB at 1468/1: ${result[$server,rack]} s to the last" >&2
    done
fi
if ((BOOT)); then
    stop_pid "$daemon_pid"
    daemon_pid=
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
if ((BOOT)); then
    echo
    echo "The daemon, the same $RACK clients fetching $shim (those bytes) from its repo cache:"
    printf '%-26s%20s\n' "warm (the rack row's runs)" "${result[daemon,rack]}"
    printf '%-26s%20s\n' "cold" "${result[daemon,boot-cold]}"
    echo "mirror downloads of the shim per cold run:$downloads"
fi
