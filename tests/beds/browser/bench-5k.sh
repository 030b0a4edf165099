#!/bin/bash
# Benchmarks the status page and /api/hosts at 5,000 hosts: a figure for
# the notes, not a test (it asserts nothing but that everything ran).
#
# Usage: bench-5k.sh
# Environment:
#   KICKSTAND_BIN  the kickstand binary; default target/release/kickstand
#                  (under $CARGO_TARGET_DIR when set): build it with
#                  `cargo build --release -p kickstand` first
#   RUNS           page loads to take the median of (default 5)
#
# What it does: copies profiles/ and templates/ to a temp dir, adds 4,996
# generated host profiles to the shipped four (5,000), starts `kickstand
# serve` on loopback (DHCP and TFTP off, as the shipped config has them),
# then prints
#   - the time from navigation to the first paint of the hosts table in
#     Debian's Chromium, per load and the median (bench_5k.py);
#   - GET /api/hosts: bytes, time to the first byte and to the last;
#   - GET /api/status, whole and as the page polls it (one page of 100):
#     bytes and time;
#   - the daemon's RSS (VmRSS) and its peak (VmHWM) after all that.
# Needs python3 with Playwright and /usr/bin/chromium (tests/setup-peers).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../../.." && pwd)
target=$(cd "$repo" && realpath -m "${CARGO_TARGET_DIR:-target}")
bin=${KICKSTAND_BIN:-$target/release/kickstand}
runs=${RUNS:-5}
hosts=5000

say() { echo "bench-5k: $*" >&2; }
die() { say "$*"; exit 1; }

[[ -x $bin ]] || die "no kickstand binary at $bin (cargo build --release -p kickstand)"
for tool in curl python3 /usr/bin/chromium; do
  command -v "$tool" >/dev/null || die "$tool missing (tests/setup-peers installs it)"
done

work=$(mktemp -d /tmp/ks-bench5k-XXXXXX)
pid=""
cleanup() {
  if [[ -n $pid ]]; then kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; fi
  rm -rf "$work"
}
trap cleanup EXIT

cp -r "$repo/profiles" "$repo/templates" "$work/"
# Ports the kernel picks (the daemon logs them), as the tests' Bed does.
sed -i -e 's/http_port: 8080/http_port: 0/' -e 's/https_port: 8443/https_port: 0/' \
  -e 's/tftp_port: 6969/tftp_port: 0/' -e 's/syslog_port: 5514/syslog_port: 0/' \
  "$work/profiles/kickstand.yaml"
shipped=$(cat "$work/profiles/hosts/"*.yaml | grep -c 'hostname:')
python3 - "$work/profiles/hosts/big.yaml" $((hosts - shipped)) <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    f.write("hosts:\n")
    for i in range(n):
        f.write(f'  "52:54:01:{i >> 16:02x}:{(i >> 8) & 0xff:02x}:{i & 0xff:02x}":\n'
                f"    hostname: big{i:04}\n")
PY

KICKSTAND_LOG=info NO_COLOR=1 "$bin" --config "$work/profiles/kickstand.yaml" serve \
  >"$work/kickstand.log" 2>&1 </dev/null &
pid=$!
for _ in $(seq 300); do
  grep -q 'kickstand ready' "$work/kickstand.log" && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/kickstand.log" >&2; die "kickstand serve exited"; }
  sleep 0.1
done
grep -q 'kickstand ready' "$work/kickstand.log" || die "kickstand not ready in 30 s"
addr=$(grep -m1 'http listening' "$work/kickstand.log" | grep -o 'addr=[^ ]*' | cut -d= -f2)
base=http://$addr
count=$(curl -sf "$base/api/hosts" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
[[ $count == "$hosts" ]] || die "/api/hosts lists $count hosts, not $hosts"
say "kickstand serve ($bin) with $count hosts at $base"

python3 "$here/bench_5k.py" "$base" "$runs"
curl -sf -o /dev/null -w 'GET /api/hosts: %{size_download} bytes, first byte %{time_starttransfer} s, last %{time_total} s\n' \
  "$base/api/hosts"
# What one poll of the page costs, against the whole rack's document.
for query in "" "?rows=100&page=0&sort=phase&dir=1&filter="; do
  curl -sf -o /dev/null -w "GET /api/status$query: %{size_download} bytes in %{time_total} s\n" \
    "$base/api/status$query"
done
awk '/^VmRSS|^VmHWM/ {printf "daemon %s %d MiB\n", $1, $2 / 1024}' "/proc/$pid/status"
