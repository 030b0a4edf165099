#!/usr/bin/env bash
# What the status page's BMC polling costs, through the whole daemon
# (`kickstand serve` with its state, logging and every other module on):
# HOSTS host profiles, each a system of one Redfish emulator (sushy-tools,
# fake driver, over HTTPS pinned by fingerprint, with an htpasswd file),
# polled every 5 s for SECONDS. Prints the daemon's CPU time and RSS beside
# the same daemon with `power.poll_interval: off`, and the requests per
# second the BMCs received. Asserts nothing.
#
# Usage (after tests/setup-peers): tests/beds/bmc/poll-bench.sh [HOSTS] [SECONDS]
#   KICKSTAND_BIN=path   the binary (default: target/release/kickstand, built)
set -euo pipefail
cd "$(dirname "$0")/../../.."

hosts=${1:-500}
seconds=${2:-60}
bin=${KICKSTAND_BIN:-target/release/kickstand}
[[ -n ${KICKSTAND_BIN:-} ]] || cargo build --release --locked -p kickstand >&2
work=$(mktemp -d /tmp/ks-pollbench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# --- the BMCs: one emulator, one system per host ------------------------------
tests/beds/bmc/redfish-start.sh "$work/bmc" On "$hosts"
# shellcheck disable=SC1091
source "$work/bmc/redfish.env"
pids+=("$REDFISH_PID")
uuid() { printf '5a0b1c2d-0000-4000-8000-%012d' "$1"; }

# --- the daemon: the sample profiles and HOSTS hosts with a BMC ---------------
cp -r profiles templates "$work/"
sed -i -e 's/http_port: 8080/http_port: 0/' -e 's/https_port: 8443/https_port: 0/' \
  -e 's/tftp_port: 6969/tftp_port: 0/' -e 's/syslog_port: 5514/syslog_port: 0/' "$work/profiles/kickstand.yaml"
mkdir -p "$work/profiles/bmc"
install -m 600 "$REDFISH_PASSWORD_FILE" "$work/profiles/bmc/rack.pass"
{
  printf 'groups:\n  bench:\n    match: { hostname: ["b*"] }\n    profile:\n      bmc:\n'
  printf '        driver: redfish\n        address: https://127.0.0.1:%s\n' "$REDFISH_PORT"
  printf '        username: %s\n        password_file: ../bmc/rack.pass\n        tls: "%s"\nhosts:\n' "$REDFISH_USER" "$REDFISH_FINGERPRINT"
  for i in $(seq "$hosts"); do
    printf '  "52:54:01:%02x:%02x:%02x":\n    hostname: b%d\n    bmc: { system: /redfish/v1/Systems/%s }\n' \
      $((i >> 16 & 255)) $((i >> 8 & 255)) $((i & 255)) "$i" "$(uuid "$i")"
  done
} >"$work/profiles/hosts/bench.yaml"

ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
rss_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
requests() { grep -c 'GET /redfish/v1/Systems/' "$work/bmc/emulator.log" || true; }

# One run, poll_interval as given: writes "cpu_ticks×100/s rss_mib hwm_mib
# requests polled_on" to WORK/result-INTERVAL once the daemon has stopped.
run() {
  local interval=$1 log=$work/kickstand-$1.log pid c0 c1 r0 r1 on
  sed -i "s/^  poll_interval: .*/  poll_interval: $interval/" "$work/profiles/kickstand.yaml"
  rm -rf "$work/var"
  "$bin" --config "$work/profiles/kickstand.yaml" serve 2>"$log" &
  pid=$!
  pids+=("$pid")
  for _ in $(seq 300); do grep -q 'kickstand ready' "$log" && break; sleep 0.1; done
  grep -q 'kickstand ready' "$log" || { echo "kickstand did not start:" >&2; cat "$log" >&2; exit 1; }
  sleep 5 # the first round, and start-up, settle
  c0=$(cpu_ticks "$pid") r0=$(requests)
  sleep "$seconds"
  c1=$(cpu_ticks "$pid") r1=$(requests)
  on=$(curl -sf "http://$(cat "$work/var/state/http.addr")/api/hosts" |
    python3 -c 'import json, sys; print(sum(1 for h in json.load(sys.stdin) if (h.get("power") or {}).get("state") == "on"))')
  local result="$(((c1 - c0) * 100 / ticks)) $(($(rss_kib "$pid" VmRSS) / 1024)) $(($(rss_kib "$pid" VmHWM) / 1024)) $((r1 - r0)) $on"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  echo "$result" >"$work/result-$interval"
}

run 5s
run off
read -r cpu_on rss_on hwm_on req_on polled <"$work/result-5s"
read -r cpu_off rss_off hwm_off req_off _ <"$work/result-off"
emulator_cpu=$(($(cpu_ticks "$REDFISH_PID") * 100 / ticks))
pct() { awk -v c="$1" -v s="$seconds" 'BEGIN { printf "%.2f %%", c / 100 / s * 100 }'; }
cat <<REPORT
BMC status polling: $hosts hosts on one Redfish emulator (HTTPS, pinned), ${seconds} s per run
                                   poll every 5 s       poll off
kickstand CPU (of one core)        $(pct "$cpu_on")              $(pct "$cpu_off")
kickstand RSS / peak (MiB)         $rss_on / $hwm_on             $rss_off / $hwm_off
requests to the BMCs               $req_on ($(awk -v r="$req_on" -v s="$seconds" 'BEGIN { printf "%.1f", r / s }')/s)     $req_off
hosts shown powered on             $polled of $hosts
the emulator's own CPU, all runs   $((emulator_cpu / 100)).$(printf '%02d' $((emulator_cpu % 100))) s
at the default 60 s: $(awk -v h="$hosts" 'BEGIN { printf "%.1f", h / 60 }') requests/s to the BMCs
REPORT
