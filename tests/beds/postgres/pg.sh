#!/bin/bash
# A PostgreSQL server of a test's own, from Debian's postgresql package:
# initdb + pg_ctl in DIR, run as the unprivileged `postgres` user when the
# test runs as root (initdb refuses root), listening on no TCP port, only
# on a Unix socket in DIR. The state crate's suite and the daemon's shared-
# state tests both start their servers with it.
#
#   pg.sh start DIR   initdb (first time) and start; prints the libpq
#                     connection string on stdout
#   pg.sh stop DIR    fast stop (the data stays: `start` again resumes it)
#   pg.sh kill DIR    immediate stop, for cleanup after a failed test
set -euo pipefail

action=${1:?usage: pg.sh start|stop|kill DIR}
dir=${2:?usage: pg.sh start|stop|kill DIR}
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

case $action in
  start)
    if [[ ! -f $dir/data/PG_VERSION ]]; then
      "${run[@]}" "$bin/initdb" -D "$dir/data" -U kickstand -A trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    "${run[@]}" "$bin/pg_ctl" start -D "$dir/data" -w -l "$dir/server.log" \
      -o "-k $dir -c listen_addresses=''" >/dev/null \
      || { cat "$dir/server.log" >&2; exit 1; }
    echo "host=$dir port=5432 user=kickstand dbname=postgres"
    ;;
  stop) "${run[@]}" "$bin/pg_ctl" stop -D "$dir/data" -m fast -w >/dev/null ;;
  kill) "${run[@]}" "$bin/pg_ctl" stop -D "$dir/data" -m immediate -w >/dev/null 2>&1 || true ;;
  *) echo "pg.sh: unknown action $action" >&2; exit 2 ;;
esac
