#!/usr/bin/env bash
# Prints figures; asserts nothing (not run by CI). Chained caches: two racks
# of BENCH_PER_RACK (8) dnf installers each, every rack on its own appliance,
# on cold caches, twice:
#   direct  — both appliances fetch from the mirror through the office proxy;
#   chained — both are children of a third appliance (the site cache,
#             `kickstand://…/centos`), which alone goes through the proxy.
# For each: wall time until the last install is done and the bytes the
# mirror sent, next to the bytes of one install (dnf straight through squid).
# Everything squid fetches shares one uplink of BENCH_UPLINK bytes/s (squid
# delay pool, default 2 MiB/s): the office's internet line, which is what
# two racks downloading the same files compete for.
#   KICKSTAND_BIN=target/release/kickstand chain-bench.sh WORKDIR
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"
if [[ $# -ne 1 || -z "${KICKSTAND_BIN:-}" ]]; then
    echo "usage: KICKSTAND_BIN=path [BENCH_UPLINK=2097152] [BENCH_PER_RACK=8] $0 WORKDIR" >&2
    exit 2
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"
work=$(bed_workdir "$1")
bed_require nginx squid dnf
uplink=${BENCH_UPLINK:-2097152}
per_rack=${BENCH_PER_RACK:-8}
pkgs=(ks-hello ks-payload)

"$here/stop.sh" "$work"
KS_UPLINK_RATE=$uplink "$here/start.sh" "$work"
# shellcheck source=/dev/null
source "$work/env"
ks_pids=()
stop_appliances() {
    local p
    for p in "${ks_pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${ks_pids[@]}"; do wait "$p" 2>/dev/null || true; done
    ks_pids=()
}
trap 'stop_appliances; "$here/stop.sh" "$work"' EXIT

# ks_serve NAME MIRROR_URL: a `kickstand serve` with a cold cache in
# WORKDIR/chain-NAME whose mirror `centos` is MIRROR_URL, the office proxy
# configured (a parent appliance is reached past it); sets ks_port.
ks_serve() {
    local url=$2 dir=$work/chain-$1
    rm -rf "$dir"
    mkdir -p "$dir"/{etc,tftp,templates,var/cache,var/state}
    ks_port=$(bed_free_port)
    cat >"$dir/etc/kickstand.yaml" <<YAML
server:
  address: 127.0.0.1
  bind: 127.0.0.1
  interfaces: []
  http_port: $ks_port
  https_port: 0
  tftp_port: 0
  syslog_port: 0
dhcp:
  mode: "off"
tftp:
  root: ../tftp
proxy:
  url: $KS_PROXY_URL
mirrors:
  centos: ["$url"]
cache:
  dir: ../var/cache
  max_size: 4GiB
paths:
  templates: ../templates
  state: ../var/state
YAML
    env -u http_proxy -u https_proxy -u HTTP_PROXY -u HTTPS_PROXY \
        "$KICKSTAND_BIN" serve --config "$dir/etc/kickstand.yaml" >"$dir/kickstand.log" 2>&1 &
    ks_pids+=($!)
    bed_wait_port "$ks_port"
}

mirror_lines() { wc -l <"$KS_NGINX_ACCESS_LOG"; }
# Body bytes the mirror sent after line $1 of its access log.
mirror_bytes_since() { tail -n +"$(($1 + 1))" "$KS_NGINX_ACCESS_LOG" | awk -F'\t' '{s += $5} END {print s + 0}'; }
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }

# racks RUN PORT...: per_rack installs against each appliance, all at once;
# prints the wall time and how many failed.
racks() {
    local run=$1 t0 t1 i port failed=0 pids=() p
    shift
    t0=$(date +%s.%N)
    for i in $(seq "$per_rack"); do
        for port in "$@"; do
            "$here/dnf-install.sh" "$work/$run-$port-$i" "http://127.0.0.1:$port/repo/centos/$KS_OS_PATH/" "${pkgs[@]}" \
                >"$work/$run-$port-$i.log" 2>&1 &
            pids+=($!)
        done
    done
    for p in "${pids[@]}"; do wait "$p" || failed=$((failed + 1)); done
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" -v f="$failed" -v n="${#pids[@]}" 'BEGIN {printf "%.2fs wall, %d of %d failed", b - a, f, n}'
}

# report LABEL MARK RESULT: one line of figures.
report() {
    local bytes
    bytes=$(mirror_bytes_since "$2")
    printf '%-8s %s; mirror sent %s (%s one install)\n' "$1" "$3" "$(mib "$bytes")" \
        "$(awk -v a="$bytes" -v b="$one" 'BEGIN {printf "%.2fx", a / b}')"
}

rm -rf "$work"/one "$work"/direct-* "$work"/chained-*
echo "uplink $(mib "$uplink")/s shared, 2 racks x $per_rack installers of ${pkgs[*]}, cores: $(nproc)"
mark=$(mirror_lines)
KS_DNF_PROXY=$KS_PROXY_URL "$here/dnf-install.sh" "$work/one" "$KS_MIRROR_HTTP_URL$KS_OS_PATH/" "${pkgs[@]}" >/dev/null
one=$(mirror_bytes_since "$mark")
echo "one install, dnf through squid: mirror sent $(mib "$one")"

ks_serve direct-a "$KS_MIRROR_HTTP_URL"
a=$ks_port
ks_serve direct-b "$KS_MIRROR_HTTP_URL"
b=$ks_port
mark=$(mirror_lines)
result=$(racks direct "$a" "$b")
report direct "$mark" "$result"
stop_appliances

ks_serve parent "$KS_MIRROR_HTTP_URL"
parent=$ks_port
ks_serve child-a "kickstand://127.0.0.1:$parent/centos"
a=$ks_port
ks_serve child-b "kickstand://127.0.0.1:$parent/centos"
b=$ks_port
mark=$(mirror_lines)
result=$(racks chained "$a" "$b")
report chained "$mark" "$result"
stop_appliances
