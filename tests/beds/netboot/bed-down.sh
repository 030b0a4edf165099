#!/bin/bash
# Removes everything bed-up.sh WORKDIR created: its processes (by the pids it
# recorded, nothing else) and both network namespaces. Safe to run twice.
set -euo pipefail

work=${1:?usage: bed-down.sh WORKDIR}
[[ -f $work/bed.env ]] || exit 0
# shellcheck disable=SC1091
source "$work/bed.env"

for pidfile in "$work"/*.pid; do
  [[ -f $pidfile ]] || continue
  pid=$(cat "$pidfile")
  if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
done

for n in "${NS:-}" "${ONS:-}"; do
  [[ -n $n ]] || continue
  if ip netns list | grep -qw -- "$n"; then ip netns delete "$n"; fi
done
rm -f "$work/bed.env"
