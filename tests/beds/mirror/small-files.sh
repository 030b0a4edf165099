#!/usr/bin/env bash
# Small-file cache hits: the whole daemon's repo proxy (`kickstand serve`,
# release build, the shipped settings apart from ports, paths and the
# mirror, SQLite state, default log level) against nginx serving the same
# files from disk. Prints figures; asserts nothing.
#
# FILES (2000) 16 KiB packages in a repo with createrepo_c's repodata (one
# small RPM under FILES names) on the bed's nginx mirror, reached through
# squid as the office proxy (start.sh). As dnf does, the repodata is
# fetched through Kickstand first (so every package is checked against its
# checksum), then one pass caches the packages; a second pass must be all
# hits (checked in /metrics: hits up by FILES, no new miss, nothing new in
# the mirror's access log). Then wrk,
# CONNS (64) connections and two threads, cycling over the FILES paths
# (small-files.lua) for SECS (10) s, against Kickstand's
# /repo/centos/small/Packages/… and against an nginx of its own with a
# default-ish config (worker_processes auto, sendfile on, access_log on)
# serving the mirror's tree from disk; REPEAT (3) runs each, alternating.
# Median (min-max) of req/s, p50 and p99 latency, and the ratio of the
# req/s medians.
#
#   small-files.sh WORKDIR   (KICKSTAND_BIN=path to skip the cargo build)
# Needs: what start.sh needs (nginx, squid, rpmbuild, createrepo_c), wrk,
# curl, cargo.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"
if [[ $# -ne 1 ]]; then
    echo "usage: [KICKSTAND_BIN=path] [FILES=2000] [CONNS=64] [SECS=10] [REPEAT=3] $0 WORKDIR" >&2
    exit 2
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../../.." && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"
work=$(bed_workdir "$1")
bed_require curl wrk nginx squid rpmbuild createrepo_c
FILES=${FILES:-2000}
CONNS=${CONNS:-64}
SECS=${SECS:-10}
REPEAT=${REPEAT:-3}

if [[ -z ${KICKSTAND_BIN:-} ]]; then
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
    (cd "$repo" && cargo build --quiet --release -p kickstand)
    KICKSTAND_BIN=$CARGO_TARGET_DIR/release/kickstand
fi

ks_pid=
cleanup() {
    if [[ -n $ks_pid ]]; then
        kill -INT "$ks_pid" 2>/dev/null || true
        wait "$ks_pid" 2>/dev/null || true
    fi
    bed_kill_pidfile "$work/nginx-disk/nginx.pid"
    "$here/stop.sh" "$work"
}
trap cleanup EXIT
"$here/stop.sh" "$work"
"$here/start.sh" "$work"
# shellcheck source=/dev/null
source "$work/env"

# --- the files: FILES x 16 KiB packages in a repo, dated a day back ------------
# As dnf fetches them: real RPMs (one built with 10 KiB of random payload,
# which with its header makes 16 KiB, copied under FILES names) listed in
# createrepo_c's repodata, so the
# cache checks each against the checksum primary.xml gives (a file no
# checksum vouches for is revalidated with the mirror on every hit).
small_repo=$KS_MIRROR_ROOT/small
small=$small_repo/Packages
name() { printf 'ks-small-%04d-1.0-1.noarch.rpm' "$1"; }
if [[ ! -f $small/$(name $((FILES - 1))) || -f $small/$(name "$FILES") || ! -f $small_repo/repodata/repomd.xml ]]; then
    rm -rf "$small_repo" "$work/small-rpm"
    mkdir -p "$small" "$work/small-rpm"/{BUILD,BUILDROOT,RPMS,SOURCES,SPECS,SRPMS}
    cat >"$work/small-rpm/ks-small.spec" <<'SPEC'
Name:           ks-small
Version:        1.0
Release:        1
Summary:        Kickstand small-file bench package
License:        Apache-2.0
BuildArch:      noarch
AutoReqProv:    no

%description
A small package, many copies: what a dnf transaction fetches most.

%install
mkdir -p %{buildroot}/usr/share/ks-small
head -c 10240 /dev/urandom > %{buildroot}/usr/share/ks-small/data

%files
/usr/share/ks-small/data
SPEC
    rpmbuild -bb --quiet \
        --define "_topdir $work/small-rpm" \
        --define "_binary_payload w0.ufdio" \
        --define "debug_package %{nil}" \
        --define "_build_id_links none" \
        "$work/small-rpm/ks-small.spec" >/dev/null
    one=$(echo "$work"/small-rpm/RPMS/noarch/ks-small-*.rpm)
    for i in $(seq 0 $((FILES - 1))); do cp "$one" "$small/$(name "$i")"; done
    createrepo_c --quiet --no-database "$small_repo" >/dev/null
    touch -d '1 day ago' "$small"/* "$small_repo"/repodata/*
fi
echo "package size: $(stat -c %s "$small/$(name 0)") bytes" >&2

# --- nginx from disk, default-ish --------------------------------------------
nd=$work/nginx-disk
mkdir -p "$nd/tmp"
nd_port=$(bed_free_port)
cat >"$nd/nginx.conf" <<NGINX
daemon on;
worker_processes auto;
user root root;
pid $nd/nginx.pid;
error_log $nd/error.log warn;
events { worker_connections 1024; }
http {
    access_log $nd/access.log combined;
    client_body_temp_path $nd/tmp/body;
    proxy_temp_path $nd/tmp/proxy;
    fastcgi_temp_path $nd/tmp/fastcgi;
    uwsgi_temp_path $nd/tmp/uwsgi;
    scgi_temp_path $nd/tmp/scgi;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    server {
        listen 127.0.0.1:$nd_port;
        root $work/www;
    }
}
NGINX
: >"$nd/access.log"
nginx -e "$nd/error.log" -p "$nd" -c "$nd/nginx.conf"
bed_wait_port "$nd_port"

# --- Kickstand: the mirror through squid ---------------------------------------
ks=$work/ks-small
rm -rf "$ks"
mkdir -p "$ks/etc" "$ks/tftp"
ks_port=$(bed_free_port)
cat >"$ks/etc/kickstand.yaml" <<YAML
server:
  address: 127.0.0.1
  bind: 127.0.0.1
  interfaces: []
  http_port: $ks_port
  tftp_port: $(bed_free_port)
  syslog_port: $(bed_free_port)
dhcp:
  mode: "off"
tftp:
  root: ../tftp
proxy:
  url: $KS_PROXY_URL
mirrors:
  centos: [$KS_MIRROR_HTTP_URL]
cache:
  dir: ../var/cache
  max_size: 20GiB
  revalidate_after: 30s
paths:
  templates: $repo/templates
  state: ../var/state
YAML
env -u http_proxy -u https_proxy -u HTTP_PROXY -u HTTPS_PROXY -u KICKSTAND_LOG -u RUST_LOG \
    "$KICKSTAND_BIN" --config "$ks/etc/kickstand.yaml" serve >"$ks/kickstand.log" 2>&1 &
ks_pid=$!
bed_wait_port "$ks_port"
kill -0 "$ks_pid" 2>/dev/null || { echo "kickstand did not start:" >&2; tail -20 "$ks/kickstand.log" >&2; exit 1; }

ks_url=http://127.0.0.1:$ks_port/repo/centos/small/Packages/
nd_url=http://127.0.0.1:$nd_port/centos/small/Packages/

# metric NAME -> its value in Kickstand's /metrics
metric() { curl -sf "http://127.0.0.1:$ks_port/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
mirror_gets() { grep -c -P "\tGET\t[^\t]*/small/Packages/" "$KS_NGINX_ACCESS_LOG" || true; }

# pass LABEL: every file once, sequentially on one connection (curl -K);
# sets pass_secs
pass() {
    local t0 t1 codes
    for i in $(seq 0 $((FILES - 1))); do
        printf 'url = "%s%s"\noutput = "/dev/null"\n' "$ks_url" "$(name "$i")"
    done >"$ks/pass.curl"
    t0=$(date +%s.%N)
    codes=$(curl -s -K "$ks/pass.curl" -w '%{http_code} %{size_download}\n' | sort | uniq -c | tr -s ' ' | paste -sd';')
    t1=$(date +%s.%N)
    pass_secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
    echo "$1 pass: $FILES files in $pass_secs s; count status bytes:$codes" >&2
}

# The repodata first, as dnf does: the cache learns every package's checksum.
ks_repo=http://127.0.0.1:$ks_port/repo/centos/small
curl -sf "$ks_repo/repodata/repomd.xml" -o "$ks/repomd.xml"
for href in $(grep -o 'href="repodata/[^"]*"' "$ks/repomd.xml" | cut -d'"' -f2); do
    curl -sf "$ks_repo/$href" -o /dev/null
done
hits0=$(metric kickstand_cache_hits_total) misses0=$(metric kickstand_cache_misses_total) gets0=$(mirror_gets)
pass cold
cold_secs=$pass_secs
hits1=$(metric kickstand_cache_hits_total) misses1=$(metric kickstand_cache_misses_total) gets1=$(mirror_gets)
pass warm
warm_secs=$pass_secs
hits2=$(metric kickstand_cache_hits_total) misses2=$(metric kickstand_cache_misses_total) gets2=$(mirror_gets)
echo "cold pass: misses +$((misses1 - misses0)), hits +$((hits1 - hits0)), mirror GETs +$((gets1 - gets0))" >&2
echo "warm pass: hits +$((hits2 - hits1)), misses +$((misses2 - misses1)), mirror GETs +$((gets2 - gets1))" >&2
for i in 0 $((FILES / 2)) $((FILES - 1)); do
    curl -sf "$ks_url$(name "$i")" | cmp -s - "$small/$(name "$i")" ||
        echo "WARNING: kickstand served other bytes for $(name "$i")" >&2
done
warm_ok=yes
((hits2 - hits1 == FILES && misses2 == misses1 && gets2 == gets1)) || warm_ok=no

# --- wrk, alternating ------------------------------------------------------------
cat >"$ks/small-files.lua" <<'LUA'
-- Cycles over COUNT files named ks-small-NNNN-1.0-1.noarch.rpm under the
-- prefix given after `--`; each thread starts at its own offset.
local threads, prefix, count, n = 0, "/", 2000, 0
setup = function(thread)
    thread:set("id", threads)
    threads = threads + 1
end
init = function(args)
    prefix = args[1]
    count = tonumber(args[2])
    n = (id * 997) % count
end
request = function()
    n = (n + 1) % count
    return wrk.format("GET", string.format("%sks-small-%04d-1.0-1.noarch.rpm", prefix, n))
end
LUA
# to_ms "1.23ms" / "850.00us" / "1.20s" -> milliseconds
to_ms() { awk -v v="$1" 'BEGIN { u = v; sub(/[0-9.]+/, "", u); x = v + 0
    printf "%.2f", (u == "us") ? x / 1000 : (u == "s") ? x * 1000 : x }'; }
declare -A col
for run in $(seq "$REPEAT"); do
    for server in kickstand nginx; do
        url=$ks_url
        [[ $server == nginx ]] && url=$nd_url
        wrk -t2 -c"$CONNS" -d"${SECS}s" --latency -s "$ks/small-files.lua" "$url" -- \
            "/${url#http://*/}" "$FILES" >"$ks/wrk.out" 2>&1
        rps=$(awk '/Requests\/sec/ { print $2 }' "$ks/wrk.out")
        p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$ks/wrk.out")")
        p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$ks/wrk.out")")
        bad=$(grep -E 'Non-2xx|Socket errors' "$ks/wrk.out" | tr -s ' ' | paste -sd';' || true)
        echo "$server run $run: $rps req/s, p50 $p50 ms, p99 $p99 ms${bad:+, $bad}" >&2
        col[$server,rps]="${col[$server,rps]:-} $rps"
        col[$server,p50]="${col[$server,p50]:-} $p50"
        col[$server,p99]="${col[$server,p99]:-} $p99"
    done
done
misses3=$(metric kickstand_cache_misses_total) gets3=$(mirror_gets)

stats() {
    printf '%s\n' "$@" | { grep . || true; } | sort -g |
        awk '{ v[NR] = $1 } END { if (!NR) { print "-"; exit }
              printf "%s (%s-%s)", v[int((NR + 1) / 2)], v[1], v[NR] }'
}
median() { printf '%s\n' "$@" | { grep . || true; } | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
# shellcheck disable=SC2086 # lists of numbers
{
    echo
    echo "Small-file cache hits: $FILES distinct 16 KiB files, wrk $CONNS connections x 2 threads cycling"
    echo "over them, ${SECS}s per run; median (min-max) of $REPEAT runs. Cached by Kickstand first:"
    echo "second pass all hits: $warm_ok; during wrk: misses +$((misses3 - misses2)), mirror GETs +$((gets3 - gets2))."
    printf '%-34s %-28s %-24s %s\n' "" "req/s" "p50 ms" "p99 ms"
    printf '%-34s %-28s %-24s %s\n' "kickstand /repo (cache hits)" "$(stats ${col[kickstand,rps]})" \
        "$(stats ${col[kickstand,p50]})" "$(stats ${col[kickstand,p99]})"
    printf '%-34s %-28s %-24s %s\n' "nginx from disk (peer)" "$(stats ${col[nginx,rps]})" \
        "$(stats ${col[nginx,p50]})" "$(stats ${col[nginx,p99]})"
    awk -v k="$(median ${col[kickstand,rps]})" -v n="$(median ${col[nginx,rps]})" \
        'BEGIN { printf "kickstand / nginx req/s: %.2f (nginx %.1fx kickstand)\n", k / n, n / k }'
    echo "sequential passes, one curl connection: cold (misses through squid) ${cold_secs}s, warm (hits) ${warm_secs}s"
    echo "kickstand peak RSS (VmHWM): $(awk '$1 == "VmHWM:" { printf "%.1f MB", $2 / 1024 }' "/proc/$ks_pid/status")"
}
