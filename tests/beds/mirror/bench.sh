#!/usr/bin/env bash
# Prints figures; asserts nothing. Compares Kickstand's repo proxy with nginx
# as a caching reverse proxy (proxy_cache_lock on) on the same mirror bed:
#   1. cold: 1 client, then 50 concurrent clients, on a cold 100 MiB file that
#      the mirror serves rate-limited (BENCH_RATE, default 20m = 20 MiB/s);
#      upstream fetches counted in the mirror's access log;
#   2. hot: 64 clients (wrk, BENCH_SECS seconds) on the cached file, next to
#      nginx serving the same file from disk;
#   3. 8 parallel dnf installs vs one (upstream bytes);
#   4. offline rack install: 8 parallel dnf installs of BaseOS + AppStream
#      packages, cold cache with the mirror up vs after `cache warm` with the
#      mirror and the office proxy stopped (wall time);
#   5. power-on burst (burst.sh): 200 machines, TFTP + 60 MiB initrd, vs
#      dnsmasq + nginx proxy_cache_lock (BENCH_BURST=0 skips it).
# Kickstand columns need KICKSTAND_BIN (a build whose `serve` answers /repo);
# without it only the nginx figures are printed. Kickstand goes through squid
# as configured; the nginx cache talks to the mirror directly (nginx cannot
# send absolute-form requests to a forward proxy); squid caches nothing, so
# the upstream count is comparable.
#   bench.sh WORKDIR
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"
if [[ $# -ne 1 ]]; then
    echo "usage: [KICKSTAND_BIN=path] [BENCH_RATE=20m] [BENCH_SECS=10] $0 WORKDIR" >&2
    exit 2
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"
work=$(bed_workdir "$1")
bed_require curl wrk nginx squid
rate=${BENCH_RATE:-20m}
secs=${BENCH_SECS:-10}
clients=50
hot_clients=64

"$here/stop.sh" "$work"
KS_MIRROR_SLOW_RATE=$rate KS_SQUID_AUTH=kick:secret "$here/start.sh" "$work"
# shellcheck source=/dev/null
source "$work/env"
trap '[[ -n "${ks_pid:-}" ]] && kill "$ks_pid" 2>/dev/null; "$here/stop.sh" "$work"' EXIT

# One 100 MiB file; every case gets its own hard link, hence its own cold URL.
bench_dir="$KS_MIRROR_ROOT/bench"
mkdir -p "$bench_dir"
[[ -f "$bench_dir/big.bin" ]] || head -c 100M /dev/urandom >"$bench_dir/big.bin"
for name in ks-single ks-many ng-single ng-many; do
    ln -f "$bench_dir/big.bin" "$bench_dir/$name.bin"
done
want=$(sha256sum "$bench_dir/big.bin" | cut -d' ' -f1)
size_want=$(stat -c %s "$bench_dir/big.bin")
# Cache-hit throughput uses the 4 MiB payload RPM: with 100 MiB bodies a
# 10 s wrk run completes too few requests to mean anything.
hot_rel="$KS_OS_PATH/Packages/ks-payload-1.0-1.noarch.rpm"
hot_want=$(sha256sum "$KS_MIRROR_ROOT/$hot_rel" | cut -d' ' -f1)

upstream_count() { grep -c -P "\tGET\t[^\t]*/bench/$1\.bin\t2" "$KS_NGINX_ACCESS_LOG" || true; }

# curl one URL N times at once; prints "max_s min_s whole_count". Bodies go
# to /dev/null (50 x 100 MiB on disk would measure the disk); "whole" means
# status 200 and all 100 MiB; one more fetch afterwards checks the sha256.
many() {
    local url=$1 n=$2 dir=$work/bench-out i
    rm -rf "$dir" && mkdir -p "$dir"
    for i in $(seq "$n"); do
        curl -sS -o /dev/null -w '%{http_code} %{time_total} %{size_download}\n' "$url" >"$dir/$i.meta" &
    done
    wait
    local ok=0 max=0 min=999999 code t size
    for i in $(seq "$n"); do
        read -r code t size <"$dir/$i.meta"
        [[ "$code" == 200 && "$size" == "$size_want" ]] && ok=$((ok + 1))
        max=$(awk -v a="$max" -v b="$t" 'BEGIN{print (b>a)?b:a}')
        min=$(awk -v a="$min" -v b="$t" 'BEGIN{print (b<a)?b:a}')
    done
    rm -rf "$dir"
    [[ "$(curl -sS "$url" | sha256sum | cut -d' ' -f1)" == "$want" ]] || ok="$ok (SHA256 MISMATCH)"
    echo "$max $min $ok"
}

# Warms the cache with the hot file and checks the bytes before wrk runs.
check_hot() {
    local got
    got=$(curl -sS "$1" | sha256sum | cut -d' ' -f1)
    [[ "$got" == "$hot_want" ]] || echo "  WARNING: $1 returned wrong bytes ($got)"
}

single() { curl -sS -o /dev/null -w '%{time_total}' "$1"; }

# wrk prints "Transfer/sec: X" and "Requests/sec: Y"; errors and non-2xx
# replies are shown so a fast wrong answer cannot pass for a fast one.
hot() {
    wrk -t2 -c"$hot_clients" -d"${secs}s" --latency "$1" 2>&1 |
        awk '/Requests\/sec/{r=$2} /Transfer\/sec/{t=$2} /^ +99%/{p=$2}
             /Socket errors/{e=$0} /Non-2xx/{n=$0}
             END{printf "%s req/s, %s/s, p99 %s%s%s\n", r, t, p, (e?" |"e:""), (n?" |"n:"")}'
}

report_cold() {
    local label=$1 single_t=$2 many_out=$3 fetches=$4 max min ok
    read -r max min ok <<<"$many_out"
    printf '%-10s cold 1 client: %6.2fs | %d clients: last %6.2fs first %6.2fs, %s/%d whole | upstream fetches: %s\n' \
        "$label" "$single_t" "$clients" "$max" "$min" "$ok" "$clients" "$fetches"
}

echo "mirror rate limit: $rate/s, file: 100 MiB, cores: $(nproc)"

# --- nginx as a caching reverse proxy ------------------------------------
nc="$work/nginx-cache"
rm -rf "$nc" && mkdir -p "$nc/tmp" "$nc/cache"
nc_port=$(bed_free_port)
cat >"$nc/nginx.conf" <<NGINX
daemon on;
worker_processes auto;
user root root;
pid $nc/nginx.pid;
error_log $nc/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $nc/tmp/body;
    proxy_temp_path $nc/tmp/proxy;
    fastcgi_temp_path $nc/tmp/fastcgi;
    uwsgi_temp_path $nc/tmp/uwsgi;
    scgi_temp_path $nc/tmp/scgi;
    sendfile on;
    proxy_cache_path $nc/cache levels=1:2 keys_zone=bench:10m max_size=4g inactive=1h use_temp_path=off;
    server {
        listen 127.0.0.1:$nc_port;
        # The same files straight from disk, with the same workers and no
        # access log: the fair "nginx from disk" figure.
        location /disk/ { alias $work/www/; }
        location / {
            proxy_pass http://127.0.0.1:$KS_MIRROR_HTTP_PORT;
            proxy_cache bench;
            proxy_cache_valid 200 1h;
            proxy_cache_lock on;
            proxy_cache_lock_timeout 10m;
            proxy_cache_lock_age 10m;
        }
    }
}
NGINX
nginx -e "$nc/error.log" -p "$nc" -c "$nc/nginx.conf"
bed_wait_port "$nc_port"
ng_base="http://127.0.0.1:$nc_port/slow/centos/bench"
t1=$(single "$ng_base/ng-single.bin")
out=$(many "$ng_base/ng-many.bin" "$clients")
report_cold "nginx-lock" "$t1" "$out" "$(upstream_count ng-many)"

echo "hot, 4 MiB file, $hot_clients clients, ${secs}s each:"
check_hot "http://127.0.0.1:$nc_port/disk/centos/$hot_rel"
echo "  nginx from disk:   $(hot "http://127.0.0.1:$nc_port/disk/centos/$hot_rel")"
check_hot "http://127.0.0.1:$nc_port/centos/$hot_rel"
echo "  nginx proxy_cache: $(hot "http://127.0.0.1:$nc_port/centos/$hot_rel")"
bed_kill_pidfile "$nc/nginx.pid"

# --- Kickstand -------------------------------------------------------------
if [[ -z "${KICKSTAND_BIN:-}" ]]; then
    echo "kickstand: skipped (set KICKSTAND_BIN to a kickstand binary)"
    exit 0
fi
ks="$work/ks"
mkdir -p "$ks/etc" "$ks/tftp" "$ks/templates" "$ks/var/cache" "$ks/var/state"
rm -rf "$ks/var/cache"/*
ks_port=$(bed_free_port)
cat >"$ks/etc/kickstand.yaml" <<YAML
server:
  address: 127.0.0.1
  bind: 127.0.0.1
  interfaces: []
  http_port: $ks_port
  tftp_port: $(bed_free_port)
dhcp:
  mode: "off"
tftp:
  root: ../tftp
proxy:
  url: $KS_PROXY_URL
  username: $KS_PROXY_USER
  password: $KS_PROXY_PASSWORD
mirrors:
  centos: [$KS_MIRROR_HTTP_URL]
  slow: [$KS_MIRROR_SLOW_URL]
  # Two more names for the same mirror: separate cache keys, so the dnf
  # comparison below starts cold twice.
  dnfone: [$KS_MIRROR_HTTP_URL]
  dnfeight: [$KS_MIRROR_HTTP_URL]
  # The offline rack comparison: cold with the mirror up, then warmed.
  rackon: [$KS_MIRROR_HTTP_URL]
  rackoff: [$KS_MIRROR_HTTP_URL]
mirror_ca_file: $KS_CA_PEM
cache:
  dir: ../var/cache
  max_size: 4GiB
paths:
  templates: ../templates
  state: ../var/state
YAML
env -u http_proxy -u https_proxy -u HTTP_PROXY -u HTTPS_PROXY \
    "$KICKSTAND_BIN" serve --config "$ks/etc/kickstand.yaml" >"$ks/kickstand.log" 2>&1 &
ks_pid=$!
bed_wait_port "$ks_port"
ks_base="http://127.0.0.1:$ks_port/repo/slow/bench"
if [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$ks_port/repo/centos/$KS_OS_PATH/.treeinfo")" != 200 ]]; then
    echo "kickstand: skipped (it does not serve /repo yet; see $ks/kickstand.log)"
    exit 0
fi
t1=$(single "$ks_base/ks-single.bin")
out=$(many "$ks_base/ks-many.bin" "$clients")
report_cold "kickstand" "$t1" "$out" "$(upstream_count ks-many)"
check_hot "http://127.0.0.1:$ks_port/repo/centos/$hot_rel"
echo "  kickstand cache:   $(hot "http://127.0.0.1:$ks_port/repo/centos/$hot_rel")"

# --- 8 parallel dnf installs vs one -----------------------------------------
# Upstream bytes (the mirror's access log, body bytes) for one dnf install,
# then for 8 installs at once of the same packages on a cold cache.
upstream_bytes_since() { tail -n +"$(($1 + 1))" "$KS_NGINX_ACCESS_LOG" | awk -F'\t' '{s += $5} END {print s + 0}'; }
dnf_pkgs=(ks-hello ks-payload)
mark=$(wc -l <"$KS_NGINX_ACCESS_LOG")
"$here/dnf-install.sh" "$work/dnf-one" "http://127.0.0.1:$ks_port/repo/dnfone/$KS_OS_PATH/" "${dnf_pkgs[@]}" >/dev/null
one=$(upstream_bytes_since "$mark")
mark=$(wc -l <"$KS_NGINX_ACCESS_LOG")
dnf_pids=()
for i in $(seq 8); do
    "$here/dnf-install.sh" "$work/dnf-eight-$i" "http://127.0.0.1:$ks_port/repo/dnfeight/$KS_OS_PATH/" "${dnf_pkgs[@]}" >/dev/null &
    dnf_pids+=($!)
done
wait "${dnf_pids[@]}"
eight=$(upstream_bytes_since "$mark")
echo "dnf install ${dnf_pkgs[*]}: upstream bytes, 1 install: $one; 8 parallel installs: $eight ($(awk -v a="$eight" -v b="$one" 'BEGIN {printf "%.3f", a / b}')x)"
# Peak memory of the daemon over the whole run: 50 clients streaming the
# cold 100 MiB file, 64 on hits, 8 dnf installs. Bounded by clients, not
# by file size (no whole-file buffering).
echo "kickstand peak RSS so far: $(awk '/VmHWM/ {print $2, $3}' "/proc/$ks_pid/status")"

# --- offline rack install ----------------------------------------------------
# 8 installers at once, BaseOS + AppStream packages. First cold with the
# mirror up (every file goes Kickstand -> squid -> nginx once), then after
# `cache warm` of both repos with nginx and squid stopped.
appstream=9-stream/AppStream/x86_64/os
rack_pkgs=(ks-hello ks-payload ks-app)
rack() {
    local name=$1 i t0 t1 pids=() failed=0
    t0=$(date +%s.%N)
    for i in $(seq 8); do
        KS_DNF_EXTRA_REPOS="appstream=http://127.0.0.1:$ks_port/repo/$name/$appstream/" \
            "$here/dnf-install.sh" "$work/$name-$i" "http://127.0.0.1:$ks_port/repo/$name/$KS_OS_PATH/" "${rack_pkgs[@]}" \
            >"$work/$name-$i.log" 2>&1 &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || failed=$((failed + 1)); done
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" -v f="$failed" 'BEGIN {printf "%.2fs, %d of 8 failed", b - a, f}'
}
echo "offline rack install, 8 dnf installs of ${rack_pkgs[*]} at once:"
echo "  mirror up, cold cache:              $(rack rackon)"
warm_t0=$(date +%s.%N)
for repo in "$KS_OS_PATH" "$appstream"; do
    "$KICKSTAND_BIN" --config "$ks/etc/kickstand.yaml" cache warm "rackoff/$repo" >"$work/warm.log" 2>&1 ||
        echo "  WARNING: cache warm rackoff/$repo failed: $(tail -3 "$work/warm.log")"
done
warm_t1=$(date +%s.%N)
bed_kill_pidfile "$work/squid/squid.pid"
bed_kill_pidfile "$work/nginx/nginx.pid"
echo "  cache warm of both repos:           $(awk -v a="$warm_t0" -v b="$warm_t1" 'BEGIN {printf "%.2fs", b - a}')"
echo "  mirror and proxy stopped, warmed:   $(rack rackoff)"
echo "kickstand peak RSS: $(awk '/VmHWM/ {print $2, $3}' "/proc/$ks_pid/status")"
kill "$ks_pid" 2>/dev/null || true
ks_pid=

if [[ "${BENCH_BURST:-1}" != 0 ]]; then
    "$here/burst.sh" "$work/burst"
fi
