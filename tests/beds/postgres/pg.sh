#!/bin/bash
# A PostgreSQL server of a test's own, from Debian's postgresql package:
# initdb + pg_ctl in DIR, run as the unprivileged `postgres` user when the
# test runs as root (initdb refuses root), listening on no TCP port, only
# on a Unix socket in DIR. The state crate's suite and the daemon's shared-
# state tests both start their servers with it.
#
#   pg.sh start DIR      initdb (first time) and start; prints the libpq
#                        connection string on stdout
#   pg.sh start-tls DIR  the same, and TLS on 127.0.0.1 at a free TCP port
#                        (below); prints the TCP connection string (no
#                        password, no sslmode). `start` resumes it as made.
#   pg.sh start-on DIR ADDRESS
#                        initdb (first time) and start taking TCP at
#                        ADDRESS (port 5432) from its own subnet, without
#                        TLS or a password: for a bed that runs it inside
#                        a network namespace of its own (`ip netns exec`),
#                        which only the bed's namespaces reach, and cuts
#                        the links to it. Prints the connection string.
#   pg.sh start-standby DIR PRIMARY
#                        a streaming-replication standby of the `start-tls`
#                        server in PRIMARY (pg_basebackup -R), read-only,
#                        with the same TLS and password on a free TCP port
#                        of its own; prints its TCP connection string
#   pg.sh promote DIR    pg_ctl promote: the standby in DIR takes writes
#   pg.sh psql DIR SQL   runs SQL over DIR's Unix socket; prints the rows,
#                        one per line, columns separated by `|`
#   pg.sh stop DIR       fast stop (the data stays: `start` again resumes it)
#   pg.sh kill DIR       immediate stop: a crash, or cleanup after a failed
#                        test
#
# The TLS server is what a site's shared database should look like, so the
# tests can prove what goes over the wire: a CA made here, openssl in DIR/tls
# (ca.pem; other-ca.pem is a second CA that signed nothing, for refusals), a
# server certificate for 127.0.0.1 and localhost signed by the first,
# `ssl = on`, and a pg_hba.conf that takes TCP only over TLS (`hostssl`,
# so the server itself refuses plain text) with a password (SCRAM) that is
# in DIR/password (mode 0600); the Unix socket stays `trust`.
set -euo pipefail

usage="usage: pg.sh start|start-tls|start-on|start-standby|promote|psql|stop|kill DIR [ADDRESS|PRIMARY|SQL]"
action=${1:?$usage}
dir=${2:?$usage}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[[ -x $bin/initdb ]] || { echo "pg.sh: PostgreSQL is not installed (no /usr/lib/postgresql/<version>/bin/initdb): run tests/setup-peers" >&2; exit 1; }

run=()
if [[ $(id -u) == 0 ]]; then
  id postgres >/dev/null 2>&1 || { echo "pg.sh: no postgres user: run tests/setup-peers" >&2; exit 1; }
  chown postgres: "$dir"
  run=(runuser -u postgres --)
fi

# Files the server reads must be its own: PostgreSQL refuses a key that
# others could read, and runs as `postgres` when the test is root.
own() {
  if ((${#run[@]})); then chown postgres: "$@"; fi
}

make_tls() {
  local t=$dir/tls
  mkdir -p "$t"
  local ca=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign)
  openssl req -x509 "${ca[@]}" -keyout "$t/ca.key" -out "$t/ca.pem" \
    -subj "/CN=Kickstand test CA" 2>/dev/null
  openssl req -x509 "${ca[@]}" -keyout "$t/other-ca.key" -out "$t/other-ca.pem" \
    -subj "/CN=Another CA" 2>/dev/null
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$t/server.key" -out "$t/server.csr" -subj "/CN=localhost" 2>/dev/null
  printf '%s\n' 'subjectAltName=IP:127.0.0.1,DNS:localhost' 'basicConstraints=CA:FALSE' \
    'keyUsage=critical,digitalSignature' 'extendedKeyUsage=serverAuth' >"$t/server.ext"
  openssl x509 -req -in "$t/server.csr" -CA "$t/ca.pem" -CAkey "$t/ca.key" -CAcreateserial \
    -days 3 -extfile "$t/server.ext" -out "$t/server.pem" 2>/dev/null
  chmod 600 "$t/server.key"
  own "$t/server.key" "$t/server.pem"
}

# Tries ports until the server gets one: a port picked as free may be
# taken by someone else by the time the server binds it.
start_on_free_port() {
  local port
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    port=$((20000 + RANDOM % 40000))
    printf 'port = %s\n' "$port" >"$dir/data/kickstand-port.conf"
    own "$dir/data/kickstand-port.conf"
    if "${run[@]}" "$bin/pg_ctl" start -D "$dir/data" -w -l "$dir/server.log" -o "-k $dir" >/dev/null 2>&1; then
      echo "$port" >"$dir/port"
      return 0
    fi
    grep -q "could not bind\|could not create any TCP/IP sockets" "$dir/server.log" || break
  done
  cat "$dir/server.log" >&2
  exit 1
}

case $action in
  start)
    if [[ ! -f $dir/data/PG_VERSION ]]; then
      "${run[@]}" "$bin/initdb" -D "$dir/data" -U kickstand -A trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    listen=(-c "listen_addresses=''")
    # A TLS server keeps its TCP address (postgresql.conf says which).
    [[ -f $dir/port ]] && listen=()
    "${run[@]}" "$bin/pg_ctl" start -D "$dir/data" -w -l "$dir/server.log" \
      -o "-k $dir ${listen[*]}" >/dev/null \
      || { cat "$dir/server.log" >&2; exit 1; }
    if [[ -f $dir/port ]]; then
      echo "host=127.0.0.1 port=$(cat "$dir/port") user=kickstand dbname=postgres"
    else
      echo "host=$dir port=5432 user=kickstand dbname=postgres"
    fi
    ;;
  start-tls)
    if [[ ! -f $dir/data/PG_VERSION ]]; then
      make_tls
      (umask 077 && openssl rand -hex 16 >"$dir/password")
      own "$dir/password"
      "${run[@]}" "$bin/initdb" -D "$dir/data" -U kickstand --auth-local=trust \
        --auth-host=scram-sha-256 --pwfile="$dir/password" -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
      cat >"$dir/data/pg_hba.conf" <<EOF
local   all all                trust
hostssl all all 127.0.0.1/32   scram-sha-256
hostssl all all ::1/128        scram-sha-256
hostssl replication all 127.0.0.1/32 scram-sha-256
EOF
      cat >>"$dir/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
ssl = on
ssl_cert_file = '$dir/tls/server.pem'
ssl_key_file = '$dir/tls/server.key'
include_if_exists = 'kickstand-port.conf'
EOF
      own "$dir/data/pg_hba.conf" "$dir/data/postgresql.conf"
    fi
    start_on_free_port
    echo "host=127.0.0.1 port=$(cat "$dir/port") user=kickstand dbname=postgres"
    ;;
  start-on)
    address=${3:?usage: pg.sh start-on DIR ADDRESS}
    if [[ ! -f $dir/data/PG_VERSION ]]; then
      "${run[@]}" "$bin/initdb" -D "$dir/data" -U kickstand -A trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
      printf '%s\n' 'local all all trust' 'host all all samenet trust' >"$dir/data/pg_hba.conf"
      printf "listen_addresses = '%s'\n" "$address" >>"$dir/data/postgresql.conf"
      own "$dir/data/pg_hba.conf" "$dir/data/postgresql.conf"
    fi
    "${run[@]}" "$bin/pg_ctl" start -D "$dir/data" -w -l "$dir/server.log" -o "-k $dir" >/dev/null \
      || { cat "$dir/server.log" >&2; exit 1; }
    echo "host=$address port=5432 user=kickstand dbname=postgres"
    ;;
  start-standby)
    primary=$(cd "${3:?$usage}" && pwd)
    [[ -f $primary/port ]] || { echo "pg.sh: $primary is not a start-tls server" >&2; exit 1; }
    if [[ ! -f $dir/data/PG_VERSION ]]; then
      cp -r "$primary/tls" "$primary/password" "$dir/"
      own -R "$dir/tls" "$dir/password"
      # -R: standby.signal, and the primary's address in
      # postgresql.auto.conf, to which the password is added (the
      # standby reconnects with it when the stream breaks).
      conninfo="host=127.0.0.1 port=$(cat "$primary/port") user=kickstand sslmode=require"
      "${run[@]}" env PGPASSWORD="$(cat "$primary/password")" "$bin/pg_basebackup" \
        -d "$conninfo" -D "$dir/data" -R -X stream >"$dir/basebackup.log" 2>&1 \
        || { cat "$dir/basebackup.log" >&2; exit 1; }
      printf "primary_conninfo = '%s password=%s'\n" "$conninfo" "$(cat "$primary/password")" \
        >>"$dir/data/postgresql.auto.conf"
      # Its own copy of the TLS files, not the primary's.
      sed -i "s|$primary/tls/|$dir/tls/|" "$dir/data/postgresql.conf"
    fi
    start_on_free_port
    echo "host=127.0.0.1 port=$(cat "$dir/port") user=kickstand dbname=postgres"
    ;;
  promote) "${run[@]}" "$bin/pg_ctl" promote -D "$dir/data" -w >/dev/null ;;
  psql)
    # The socket's name carries the server's port.
    port=5432
    [[ -f $dir/port ]] && port=$(cat "$dir/port")
    "${run[@]}" "$bin/psql" -h "$dir" -p "$port" -U kickstand -d postgres -XAtq -v ON_ERROR_STOP=1 \
      -c "${3:?$usage}"
    ;;
  stop) "${run[@]}" "$bin/pg_ctl" stop -D "$dir/data" -m fast -w >/dev/null ;;
  kill) "${run[@]}" "$bin/pg_ctl" stop -D "$dir/data" -m immediate -w >/dev/null 2>&1 || true ;;
  *) echo "pg.sh: unknown action $action" >&2; exit 2 ;;
esac
