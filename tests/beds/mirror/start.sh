#!/usr/bin/env bash
# Starts the mirror bed under WORKDIR: nginx as the mirror (http and https,
# the https one with a test CA), squid as the office proxy, all on 127.0.0.1
# and ::1 with free ports. Writes WORKDIR/env (shell-sourceable) with the ports,
# URLs and log paths. Already running: a no-op.
#
# Environment knobs (read at start):
#   KS_MIRROR_LIMIT_RATE  nginx limit_rate for /centos/      (default 0 = none)
#   KS_MIRROR_SLOW_RATE   nginx limit_rate for /slow/centos/ (default 1m)
#   KS_SQUID_AUTH         user:password enables Basic proxy auth in squid
#   KS_UPLINK_RATE        bytes/s shared by everything squid fetches (default
#                         unlimited): the office's one internet uplink
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

if [[ $# -ne 1 ]]; then
    echo "usage: $0 WORKDIR" >&2
    exit 2
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"
work=$(bed_workdir "$1")
bed_require nginx squid openssl python3 rpmbuild createrepo_c

if [[ -f "$work/env" ]] && bed_alive "$work/nginx/nginx.pid" && bed_alive "$work/squid/squid.pid"; then
    exit 0
fi
"$here/stop.sh" "$work"
"$here/build-repo.sh" "$work"

limit_rate=${KS_MIRROR_LIMIT_RATE:-0}
slow_rate=${KS_MIRROR_SLOW_RATE:-1m}
auth=${KS_SQUID_AUTH:-}
uplink=${KS_UPLINK_RATE:-}

http_port=$(bed_free_port)
https_port=$(bed_free_port)
while [[ "$https_port" == "$http_port" ]]; do https_port=$(bed_free_port); done
squid_port=$(bed_free_port)
while [[ "$squid_port" == "$http_port" || "$squid_port" == "$https_port" ]]; do squid_port=$(bed_free_port); done

# --- test CA and server certificate -------------------------------------
tls="$work/tls"
mkdir -p "$tls"
if [[ ! -f "$tls/server.pem" ]]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$tls/ca.key" -out "$tls/ca.pem" -days 3650 -subj "/CN=Kickstand test CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$tls/server.key" -out "$tls/server.csr" -subj "/CN=localhost" 2>/dev/null
    printf '%s\n' "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost" "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >"$tls/server.ext"
    openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" \
        -CAcreateserial -days 825 -sha256 -extfile "$tls/server.ext" -out "$tls/server.pem" 2>/dev/null
fi

# --- nginx: the mirror ----------------------------------------------------
ng="$work/nginx"
mkdir -p "$ng/tmp"
: >"$ng/access.log"
cat >"$ng/nginx.conf" <<NGINX
daemon on;
master_process on;
worker_processes 1;
user root root;
pid $ng/nginx.pid;
error_log $ng/error.log info;
events { worker_connections 1024; }
http {
    # Tab-separated so tests can count fetches per file: port, method, URI,
    # status, bytes, time, client (squid's, over IPv4 or IPv6).
    log_format ks '\$server_port\t\$request_method\t\$request_uri\t\$status\t\$body_bytes_sent\t\$request_time\t\$remote_addr';
    access_log $ng/access.log ks;
    client_body_temp_path $ng/tmp/body;
    proxy_temp_path $ng/tmp/proxy;
    fastcgi_temp_path $ng/tmp/fastcgi;
    uwsgi_temp_path $ng/tmp/uwsgi;
    scgi_temp_path $ng/tmp/scgi;
    types { application/x-rpm rpm; application/xml xml; text/html html; }
    default_type application/octet-stream;
    sendfile on;
    server_tokens off;

    server {
        listen 127.0.0.1:$http_port;
        listen [::1]:$http_port;
        root $work/www;
        location / { limit_rate $limit_rate; }
        # The same tree, slowed down, so a test can act while a download runs.
        location /slow/ { alias $work/www/; limit_rate $slow_rate; }
    }
    server {
        listen 127.0.0.1:$https_port ssl;
        listen [::1]:$https_port ssl;
        server_name localhost;
        ssl_certificate $tls/server.pem;
        ssl_certificate_key $tls/server.key;
        root $work/www;
        location / { limit_rate $limit_rate; }
        location /slow/ { alias $work/www/; limit_rate $slow_rate; }
    }
}
NGINX
nginx -e "$ng/error.log" -p "$ng" -c "$ng/nginx.conf"

# --- squid: the office proxy ---------------------------------------------
sq="$work/squid"
mkdir -p "$sq"
: >"$sq/access.log"
auth_conf=""
proxy_user=""
proxy_password=""
if [[ -n "$auth" ]]; then
    proxy_user=${auth%%:*}
    proxy_password=${auth#*:}
    printf '%s:%s\n' "$proxy_user" "$(openssl passwd -apr1 "$proxy_password")" >"$sq/htpasswd"
    auth_conf="auth_param basic program /usr/lib/squid/basic_ncsa_auth $sq/htpasswd
auth_param basic realm kickstand-bed
auth_param basic credentialsttl 1 minute
acl authed proxy_auth REQUIRED
http_access deny !authed"
fi
uplink_conf=""
if [[ -n "$uplink" ]]; then
    # One class-1 pool is one bucket for all clients: what an uplink shared
    # by every appliance of the office looks like, unlike nginx's
    # per-connection limit_rate.
    uplink_conf="delay_pools 1
delay_class 1 1
delay_parameters 1 $uplink/$uplink
delay_access 1 allow all"
fi
cat >"$sq/squid.conf" <<SQUID
http_port 127.0.0.1:$squid_port
http_port [::1]:$squid_port
pid_filename $sq/squid.pid
cache_log $sq/cache.log
logformat ks %ts.%03tu %>a %rm %ru %>Hs %<st %Ss/%Sh
access_log stdio:$sq/access.log ks
cache_store_log none
coredump_dir $sq
netdb_filename none
pinger_enable off
icp_port 0
htcp_port 0
dns_nameservers 127.0.0.1
# The mirror over the family it was asked for (an IPv6-only office).
acl to_ipv6 dst ipv6
tcp_outgoing_address ::1 to_ipv6
tcp_outgoing_address 127.0.0.1 !to_ipv6
shutdown_lifetime 1 seconds
visible_hostname ks-bed-squid
# Nothing is cached here, so every fetch Kickstand makes shows up at nginx.
cache deny all
cache_mem 0 MB
$uplink_conf

acl office_clients src 127.0.0.1/32 ::1
acl mirror_host dst 127.0.0.1/32 ::1
acl mirror_http_port port $http_port
acl mirror_https_port port $https_port
acl CONNECT method CONNECT
http_access deny !office_clients
http_access deny !mirror_host
http_access deny CONNECT !mirror_https_port
http_access deny !CONNECT !mirror_http_port
$auth_conf
http_access allow office_clients
http_access deny all
SQUID
chown -R proxy:proxy "$sq"
chmod a+x "$work"
squid -f "$sq/squid.conf"

bed_wait_port "$http_port"
bed_wait_port "$https_port"
bed_wait_port "$squid_port"

cat >"$work/env.tmp" <<ENV
KS_BED_DIR=$work
KS_MIRROR_HTTP_PORT=$http_port
KS_MIRROR_HTTPS_PORT=$https_port
KS_SQUID_PORT=$squid_port
KS_PROXY_URL=http://127.0.0.1:$squid_port
KS_PROXY_USER=$proxy_user
KS_PROXY_PASSWORD=$proxy_password
KS_MIRROR_HTTP_URL=http://127.0.0.1:$http_port/centos/
KS_MIRROR_SLOW_URL=http://127.0.0.1:$http_port/slow/centos/
KS_MIRROR_HTTPS_URL=https://127.0.0.1:$https_port/centos/
KS_PROXY_URL6=http://[::1]:$squid_port
KS_MIRROR_HTTP_URL6=http://[::1]:$http_port/centos/
KS_MIRROR_HTTPS_URL6=https://[::1]:$https_port/centos/
KS_MIRROR_ROOT=$work/www/centos
KS_OS_PATH=9-stream/BaseOS/x86_64/os
KS_CA_PEM=$tls/ca.pem
KS_NGINX_ACCESS_LOG=$ng/access.log
KS_SQUID_ACCESS_LOG=$sq/access.log
ENV
mv "$work/env.tmp" "$work/env"
