#!/usr/bin/env bash
# Power-on burst: BURST_CLIENTS (200) machines, each from its own loopback
# address, fetch ipxe.efi over TFTP and then a BURST_MIB (60) MiB initrd over
# HTTP, all at once, from a cold cache. The mirror (nginx) sits in a network
# namespace behind a veth whose egress is shaped with tc tbf to BURST_RATE
# (200mbit) in total; the office proxy (squid, caching nothing) is in front
# of it. Prints, for Kickstand and for dnsmasq's TFTP + nginx with
# proxy_cache_lock: the time until the last machine has both files, how
# many had both whole, and the bytes the mirror sent (goal: one copy).
# Asserts nothing. Root; dnsmasq's TFTP listens on 127.0.0.1:69, which must
# be free.
#   KICKSTAND_BIN=target/release/kickstand burst.sh WORKDIR
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"
if [[ $# -ne 1 || -z "${KICKSTAND_BIN:-}" ]]; then
    echo "usage: KICKSTAND_BIN=path [BURST_CLIENTS=200] [BURST_MIB=60] [BURST_RATE=200mbit] $0 WORKDIR" >&2
    exit 2
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"
work=$(bed_workdir "$1")
bed_require nginx squid dnsmasq curl ip tc
clients=${BURST_CLIENTS:-200}
mib=${BURST_MIB:-60}
rate=${BURST_RATE:-200mbit}
loader=/usr/lib/ipxe/ipxe.efi
[[ -f "$loader" ]] || { echo "missing $loader (Debian's ipxe package)" >&2; exit 1; }

ns=ksburst$$
host_if=ksbh$$
ns_if=ksbm$$
# A private /30 on a veth that only this script's namespace sees.
host_ip=10.213.77.1
mirror_ip=10.213.77.2
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for f in "$work/mirror/nginx.pid" "$work/ngcache/nginx.pid" "$work/squid/squid.pid"; do
        bed_kill_pidfile "$f"
    done
    ip link del "$host_if" 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
}
trap cleanup EXIT

chmod a+x "$work"
mkdir -p "$work/www" "$work/mirror/tmp" "$work/ngcache/tmp" "$work/squid" "$work/tftp" "$work/ks"/{etc,templates,var/cache,var/state}
[[ -f "$work/www/initrd.img" && $(stat -c %s "$work/www/initrd.img") == $((mib << 20)) ]] ||
    head -c $((mib << 20)) /dev/urandom >"$work/www/initrd.img"
# Each run gets its own cold name.
ln -f "$work/www/initrd.img" "$work/www/initrd-ks.img"
ln -f "$work/www/initrd.img" "$work/www/initrd-ng.img"
touch -d '-1 day' "$work/www"/*.img
chmod -R a+rX "$work/www"
cp "$loader" "$work/tftp/ipxe.efi"
chmod -R a+rX "$work/tftp"

# --- the mirror, in its namespace, behind the shaped veth ------------------
ip netns add "$ns"
ip link add "$host_if" type veth peer name "$ns_if"
ip link set "$ns_if" netns "$ns"
ip addr add "$host_ip/30" dev "$host_if"
ip link set "$host_if" up
ip netns exec "$ns" ip addr add "$mirror_ip/30" dev "$ns_if"
ip netns exec "$ns" ip link set "$ns_if" up
ip netns exec "$ns" ip link set lo up
# Mirror → appliance is the direction that carries the initrd.
ip netns exec "$ns" tc qdisc add dev "$ns_if" root tbf rate "$rate" burst 256kb latency 400ms
: >"$work/mirror/access.log"
cat >"$work/mirror/nginx.conf" <<NGINX
daemon on;
worker_processes 1;
user root root;
pid $work/mirror/nginx.pid;
error_log $work/mirror/error.log warn;
events { worker_connections 4096; }
http {
    log_format b '\$request_uri\t\$status\t\$body_bytes_sent';
    access_log $work/mirror/access.log b;
    client_body_temp_path $work/mirror/tmp/body;
    proxy_temp_path $work/mirror/tmp/proxy;
    fastcgi_temp_path $work/mirror/tmp/fastcgi;
    uwsgi_temp_path $work/mirror/tmp/uwsgi;
    scgi_temp_path $work/mirror/tmp/scgi;
    sendfile on;
    server { listen $mirror_ip:8080; root $work/www; }
}
NGINX
ip netns exec "$ns" nginx -e "$work/mirror/error.log" -p "$work/mirror" -c "$work/mirror/nginx.conf"

# --- squid, the office proxy, caching nothing -------------------------------
squid_port=$(bed_free_port)
cat >"$work/squid/squid.conf" <<SQUID
http_port 127.0.0.1:$squid_port
pid_filename $work/squid/squid.pid
cache_log $work/squid/cache.log
access_log none
cache_store_log none
coredump_dir $work/squid
netdb_filename none
pinger_enable off
icp_port 0
htcp_port 0
dns_nameservers 127.0.0.1
shutdown_lifetime 1 seconds
visible_hostname ks-burst-squid
cache deny all
cache_mem 0 MB
acl office_clients src 127.0.0.1/32
acl mirror dst $mirror_ip/32
http_access allow office_clients mirror
http_access deny all
SQUID
chown -R proxy:proxy "$work/squid"
squid -f "$work/squid/squid.conf"
bed_wait_port "$squid_port"

upstream_bytes() { awk -F'\t' -v f="$1" '$1 ~ f {s += $3} END {print s + 0}' "$work/mirror/access.log"; }

# 200 machines at once: TFTP, then HTTP, each from 127.0.2.N (one host each,
# as the per-address connection caps see them). Prints "seconds whole".
burst() {
    local tftp_port=$1 url=$2 out=$work/burst-out i
    rm -rf "$out" && mkdir -p "$out"
    local t0 t1
    t0=$(date +%s.%N)
    for i in $(seq "$clients"); do
        local src=127.0.$((2 + i / 250)).$((1 + i % 250))
        (
            curl -s --interface "$src" -o /dev/null -w '%{size_download}' \
                "tftp://127.0.0.1:$tftp_port/ipxe.efi" >"$out/$i.tftp" || true
            curl -s --interface "$src" -o /dev/null -w '%{http_code} %{size_download}' \
                "$url" >"$out/$i.http" || true
        ) &
    done
    wait
    t1=$(date +%s.%N)
    local whole=0 loader_size
    loader_size=$(stat -c %s "$work/tftp/ipxe.efi")
    for i in $(seq "$clients"); do
        [[ "$(cat "$out/$i.tftp")" == "$loader_size" && "$(cat "$out/$i.http")" == "200 $((mib << 20))" ]] &&
            whole=$((whole + 1))
    done
    awk -v a="$t0" -v b="$t1" -v w="$whole" 'BEGIN {printf "%.2f %d\n", b - a, w}'
}

report() {
    local label=$1 result=$2 bytes=$3 secs whole
    read -r secs whole <<<"$result"
    printf '%-28s last machine done after %7.2fs, %d/%d with both files whole, mirror sent %d MiB (%.2f copies)\n' \
        "$label" "$secs" "$whole" "$clients" "$((bytes >> 20))" "$(awk -v b="$bytes" -v m="$mib" 'BEGIN {print b / (m * 1048576)}')"
}

echo "power-on burst: $clients machines, ipxe.efi over TFTP + $mib MiB initrd over HTTP, mirror at $rate behind squid"

# --- dnsmasq's TFTP + nginx proxy_cache_lock --------------------------------
ng_port=$(bed_free_port)
cat >"$work/ngcache/nginx.conf" <<NGINX
daemon on;
worker_processes auto;
user root root;
pid $work/ngcache/nginx.pid;
error_log $work/ngcache/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $work/ngcache/tmp/body;
    proxy_temp_path $work/ngcache/tmp/proxy;
    fastcgi_temp_path $work/ngcache/tmp/fastcgi;
    uwsgi_temp_path $work/ngcache/tmp/uwsgi;
    scgi_temp_path $work/ngcache/tmp/scgi;
    sendfile on;
    proxy_cache_path $work/ngcache/cache levels=1:2 keys_zone=burst:10m max_size=4g inactive=1h use_temp_path=off;
    server {
        listen 127.0.0.1:$ng_port;
        location / {
            # nginx cannot send absolute-form requests to a forward proxy:
            # it reaches the mirror directly, through the same shaped veth.
            proxy_pass http://$mirror_ip:8080;
            proxy_cache burst;
            proxy_cache_valid 200 1h;
            proxy_cache_lock on;
            proxy_cache_lock_timeout 10m;
            proxy_cache_lock_age 10m;
        }
    }
}
NGINX
rm -rf "$work/ngcache/cache"
nginx -e "$work/ngcache/error.log" -p "$work/ngcache" -c "$work/ngcache/nginx.conf"
bed_wait_port "$ng_port"
dnsmasq -d -C /dev/null --port=0 --enable-tftp --tftp-root="$work/tftp" \
    --listen-address=127.0.0.1 --bind-interfaces --tftp-max=$((clients * 2)) \
    --pid-file="$work/dnsmasq.pid" --user=root >"$work/dnsmasq.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do curl -s -o /dev/null tftp://127.0.0.1:69/ipxe.efi && break; sleep 0.1; done
result=$(burst 69 "http://127.0.0.1:$ng_port/initrd-ng.img")
report "dnsmasq + nginx cache_lock" "$result" "$(upstream_bytes initrd-ng)"
kill "${pids[-1]}" 2>/dev/null || true
bed_kill_pidfile "$work/ngcache/nginx.pid"

# --- Kickstand ---------------------------------------------------------------
ks_port=$(bed_free_port)
tftp_port=$(bed_free_port)
rm -rf "$work/ks/var/cache"/*
printf '#!ipxe\n' >"$work/ks/templates/boot.ipxe.j2"
cat >"$work/ks/etc/kickstand.yaml" <<YAML
server:
  address: 127.0.0.1
  bind: 127.0.0.1
  interfaces: []
  http_port: $ks_port
  tftp_port: $tftp_port
  syslog_port: 0
dhcp:
  mode: "off"
tftp:
  root: ../../tftp
proxy:
  url: http://127.0.0.1:$squid_port
mirrors:
  burst: [http://$mirror_ip:8080/]
cache:
  dir: ../var/cache
  max_size: 4GiB
paths:
  templates: ../templates
  state: ../var/state
YAML
env -u http_proxy -u https_proxy -u HTTP_PROXY -u HTTPS_PROXY \
    "$KICKSTAND_BIN" serve --config "$work/ks/etc/kickstand.yaml" >"$work/ks/kickstand.log" 2>&1 &
ks_pid=$!
pids+=("$ks_pid")
bed_wait_port "$ks_port"
result=$(burst "$tftp_port" "http://127.0.0.1:$ks_port/repo/burst/initrd-ks.img")
report "kickstand" "$result" "$(upstream_bytes initrd-ks)"
echo "kickstand peak RSS during the burst: $(awk '/VmHWM/ {print $2, $3}' "/proc/$ks_pid/status")"
