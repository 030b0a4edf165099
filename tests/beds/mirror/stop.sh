#!/usr/bin/env bash
# Stops what start.sh (and bench.sh) started under WORKDIR. Safe to repeat.
set -euo pipefail
if [[ $# -ne 1 ]]; then
    echo "usage: $0 WORKDIR" >&2
    exit 2
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"
[[ -d "$1" ]] || exit 0
work=$(cd "$1" && pwd)
# In parallel: squid alone takes ~4 s to shut down.
for pidfile in "$work/squid/squid.pid" "$work/nginx/nginx.pid" "$work/nginx-cache/nginx.pid"; do
    bed_kill_pidfile "$pidfile" &
done
wait
rm -f "$work/env"
