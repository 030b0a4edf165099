#!/usr/bin/env bash
# Read flood on the HTTP front, on loopback: one LAN address polling the
# read-only views as hard as it can must not hold up a machine fetching its
# boot script. The whole daemon (`kickstand serve`, release build, the
# shipped settings apart from ports, paths and addresses, SQLite state,
# default log level) with `dhcp.unknown: discover`.
#
# 1. DISCOVERED (1000) machines are discovered the way a LAN makes them:
#    each, from its own address in 127.1.0.0/16, fetches its discovery
#    script (GET /boot/<mac>.ipxe) and reports from the same address to the
#    URL the script names (GET /api/discover/<mac>?uuid=…&serial=……).
#    `/api/discovered` must then list them all.
# 2. Idle: the probe machine (a profiled host, from 127.2.0.1) fetches its
#    boot script sequentially, a new connection each time, for IDLE_SECS
#    (5): latency p50 / p99 / max, requests done.
# 3. Flood: wrk, CONNS (64) connections from 127.0.0.1, one thread,
#    alternating /api/status and /metrics for FLOOD_SECS (20) s, while the
#    probe machine does the same as in 2: the flood's req/s, the probe's
#    p50 / p99 / max and requests done, the daemon's peak RSS.
#    Goals: probe p99 <= 50 ms, RSS < 150 MB.
# The flood is run REPEAT (3) times; each figure is the median (min-max) of
# the runs, every run logged as it happens. Prints figures; asserts nothing.
#
# Needs: wrk, curl, python3, cargo (tests/setup-peers). Any user.
# Usage: read-flood.sh   Knobs: DISCOVERED, CONNS, FLOOD_SECS, IDLE_SECS, REPEAT.
set -euo pipefail

DISCOVERED=${DISCOVERED:-1000}
CONNS=${CONNS:-64}
FLOOD_SECS=${FLOOD_SECS:-20}
IDLE_SECS=${IDLE_SECS:-5}
REPEAT=${REPEAT:-3}
probe_mac=52:54:00:00:00:01
probe_ip=127.2.0.1

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../../.." && pwd)
for tool in wrk curl python3 cargo; do
    command -v "$tool" >/dev/null || { echo "missing $tool (tests/setup-peers)" >&2; exit 1; }
done
((DISCOVERED <= 65000)) || { echo "DISCOVERED must be at most 65000" >&2; exit 2; }

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
(cd "$repo" && cargo build --quiet --release -p kickstand)
kickstand=$CARGO_TARGET_DIR/release/kickstand

work=$(mktemp -d /tmp/ks-read-flood.XXXXXX)
daemon_pid=
cleanup() {
    if [[ -n $daemon_pid ]]; then
        kill -INT "$daemon_pid" 2>/dev/null || true
        wait "$daemon_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
port=$(free_port)

# --- the daemon: shipped OS definitions and defaults, one profiled host ----
# The mirrors are a closed local port: nothing here downloads.
site=$work/site
mkdir -p "$site" "$work/tftp"
cp "$repo"/profiles/os/*.yaml "$repo/profiles/groups.yaml" "$site/"
printf 'hosts:\n  "%s":\n    hostname: probe01\n' "$probe_mac" >"$site/hosts.yaml"
cat >"$site/kickstand.yaml" <<YAML
server:
  address: 127.0.0.1
  bind: 127.0.0.1
  interfaces: []
  http_port: $port
  tftp_port: $(free_port)
  syslog_port: $(free_port)
dhcp:
  mode: "off"
  unknown: discover
  uefi_loader: ipxe.efi
tftp:
  root: ../tftp
mirrors:
  centos: [http://127.0.0.1:9/]
  rocky: [http://127.0.0.1:9/]
  alma: [http://127.0.0.1:9/]
cache:
  dir: ../var/cache
  max_size: 20GiB
  revalidate_after: 30s
paths:
  templates: $repo/templates
  state: ../var/state
YAML
"$kickstand" --config "$site/kickstand.yaml" check >"$work/check.log" 2>&1 ||
    { echo "kickstand check refused the profiles:" >&2; tail -20 "$work/check.log" >&2; exit 1; }
env -u KICKSTAND_LOG -u RUST_LOG "$kickstand" --config "$site/kickstand.yaml" serve >"$work/daemon.log" 2>&1 &
daemon_pid=$!
base=http://127.0.0.1:$port
for _ in $(seq 100); do
    curl -sf -o /dev/null "$base/api/status" && break
    kill -0 "$daemon_pid" 2>/dev/null || break
    sleep 0.1
done
kill -0 "$daemon_pid" 2>/dev/null || { echo "the daemon did not start:" >&2; tail -20 "$work/daemon.log" >&2; exit 1; }

# --- the clients ---------------------------------------------------------------
# discover.py PORT COUNT: COUNT machines, machine i from 127.1.(i/250).(i%250+1)
# with MAC 02:00:00:00:00:00 + i, 16 at a time: the discovery script, then
# the report to the URL it names, both from the machine's address.
cat >"$work/discover.py" <<'PY'
import concurrent.futures, http.client, re, sys, time, urllib.parse
port, count = int(sys.argv[1]), int(sys.argv[2])

def machine(i):
    src = f"127.1.{i // 250}.{i % 250 + 1}"
    mac = f"02:00:00:00:{i >> 8:02x}:{i & 255:02x}"
    c = http.client.HTTPConnection("127.0.0.1", port, source_address=(src, 0), timeout=60)
    c.request("GET", f"/boot/{mac}.ipxe")
    r = c.getresponse()
    script = r.read().decode()
    m = re.search(r"imgfetch (\S+?)\?", script)
    if r.status != 200 or not m:
        return f"script {r.status}"
    query = urllib.parse.urlencode({
        "uuid": f"00000000-0000-4000-8000-{i:012d}", "serial": f"SN{i:05d}",
        "manufacturer": "QEMU", "product": "Standard PC (Q35 + ICH9, 2009)",
        "platform": "efi", "buildarch": "x86_64", "memsize": "4096", "nic0": mac,
    }, quote_via=urllib.parse.quote)
    c.request("GET", f"{urllib.parse.urlsplit(m.group(1)).path}?{query}")
    r = c.getresponse()
    r.read()
    c.close()
    return None if r.status == 200 else f"report {r.status}"

t0 = time.monotonic()
with concurrent.futures.ThreadPoolExecutor(16) as pool:
    failed = [e for e in pool.map(machine, range(count)) if e]
print(f"machines={count} failed={len(failed)} seconds={time.monotonic() - t0:.1f}"
      + (f" first_failure={failed[0]!r}" if failed else ""))
PY
# probe.py PORT SRC MAC SECONDS: the machine's boot script, sequentially, a
# new connection each time (as firmware does), one every 5 ms at most, for
# SECONDS; latency percentiles in ms. Paced so that a run's closed
# connections (TIME_WAIT for a minute) never use up the source address's
# ephemeral ports: an error then is the daemon's, not the client's.
cat >"$work/probe.py" <<'PY'
import http.client, math, sys, time
port, src, mac, secs = int(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
lat, errors = [], 0
end = time.monotonic() + secs
next_at = time.perf_counter()
while time.monotonic() < end:
    time.sleep(max(0.0, next_at - time.perf_counter()))
    next_at = time.perf_counter() + 0.005
    t = time.perf_counter()
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, source_address=(src, 0), timeout=30)
        c.request("GET", f"/boot/{mac}.ipxe")
        r = c.getresponse()
        body = r.read()
        c.close()
        ok = r.status == 200 and body.startswith(b"#!ipxe")
    except OSError:
        ok = False
    if ok:
        lat.append((time.perf_counter() - t) * 1e3)
    else:
        errors += 1
lat.sort()
def pct(q):
    return lat[max(0, math.ceil(len(lat) * q) - 1)] if lat else float("nan")
print(f"requests={len(lat)} errors={errors} p50_ms={pct(0.5):.1f} p99_ms={pct(0.99):.1f} max_ms={pct(1):.1f}")
PY
cat >"$work/views.lua" <<'LUA'
-- Alternates the two read-only views a dashboard and a scraper poll.
local paths = { "/api/status", "/metrics" }
local n = 0
request = function()
    n = n + 1
    return wrk.format("GET", paths[n % 2 + 1])
end
LUA

# The probe host's boot script must be an install script, or the probe
# measures something else.
curl -sf --interface "$probe_ip" "$base/boot/$probe_mac.ipxe" | grep -q 'inst.ks=' ||
    { echo "the probe host gets no install script:" >&2; curl -s "$base/boot/$probe_mac.ipxe" >&2; exit 1; }

# --- 1. discovered machines --------------------------------------------------
out=$(python3 "$work/discover.py" "$port" "$DISCOVERED")
listed=$(curl -sf -m 30 "$base/api/discovered" | python3 -c 'import json, sys; print(len(json.load(sys.stdin)))' || echo "?")
echo "discovery: $out; /api/discovered lists $listed" >&2

field() { { grep -o "\b$1=[^ ]*" <<<"$2" || true; } | head -n 1 | cut -d= -f2; }
stats() {
    printf '%s\n' "$@" | { grep . || true; } | sort -g |
        awk '{ v[NR] = $1 } END { if (!NR) { print "-"; exit }
              printf "%s (%s-%s)", v[int((NR + 1) / 2)], v[1], v[NR] }'
}
hwm_mb() { awk '$1 == "VmHWM:" { printf "%.1f", $2 / 1024 }' "/proc/$daemon_pid/status"; }
rss_mb() { awk '$1 == "VmRSS:" { printf "%.1f", $2 / 1024 }' "/proc/$daemon_pid/status"; }

# --- 2. idle, 3. flood -----------------------------------------------------------
idle=$(python3 "$work/probe.py" "$port" "$probe_ip" "$probe_mac" "$IDLE_SECS")
echo "idle probe: $idle" >&2
declare -A col
for run in $(seq "$REPEAT"); do
    wrk -t1 -c"$CONNS" -d"${FLOOD_SECS}s" --latency -s "$work/views.lua" "$base" >"$work/wrk.out" 2>&1 &
    wrk_pid=$!
    sleep 0.5
    probe=$(python3 "$work/probe.py" "$port" "$probe_ip" "$probe_mac" "$((FLOOD_SECS - 1))")
    wait "$wrk_pid" || true
    rps=$(awk '/Requests\/sec/ { print $2 }' "$work/wrk.out")
    flood_p99=$(awk '$1 == "99%" { print $2 }' "$work/wrk.out")
    bad=$(grep -E 'Non-2xx|Socket errors' "$work/wrk.out" | tr -s ' ' | paste -sd';' || true)
    echo "flood run $run: wrk ${rps:-?} req/s, its p99 ${flood_p99:-?}${bad:+, $bad}; probe: $probe; daemon RSS now $(rss_mb) MB, peak $(hwm_mb) MB" >&2
    for f in requests p50_ms p99_ms max_ms errors; do col[$f]="${col[$f]:-} $(field "$f" "$probe")"; done
    col[rps]="${col[rps]:-} ${rps:-}"
    sleep 1
done
peak=$(hwm_mb)

# shellcheck disable=SC2086 # lists of numbers
{
    echo
    echo "HTTP read flood on loopback: $CONNS wrk connections alternating /api/status and /metrics,"
    echo "${FLOOD_SECS}s per run, $DISCOVERED discovered machines ($listed listed); a profiled host's boot"
    echo "script fetched sequentially from another address. Median (min-max) of $REPEAT runs."
    echo "Goals: boot script p99 <= 50 ms, RSS < 150 MB."
    printf '%-34s %-22s %-22s %-22s %-22s %s\n' "" "p50 ms" "p99 ms" "max ms" "requests" "errors"
    printf '%-34s %-22s %-22s %-22s %-22s %s\n' "boot script, idle (${IDLE_SECS}s)" "$(field p50_ms "$idle")" \
        "$(field p99_ms "$idle")" "$(field max_ms "$idle")" "$(field requests "$idle")" "$(field errors "$idle")"
    printf '%-34s %-22s %-22s %-22s %-22s %s\n' "boot script, under the flood" "$(stats ${col[p50_ms]})" \
        "$(stats ${col[p99_ms]})" "$(stats ${col[max_ms]})" "$(stats ${col[requests]})" "$(stats ${col[errors]})"
    echo "flood req/s: $(stats ${col[rps]})"
    echo "daemon peak RSS (VmHWM): $peak MB"
}
