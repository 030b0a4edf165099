#!/usr/bin/env bash
# Stops what start.sh started under WORK: the machine (killed, as a power
# cut) and ipmi_sim. Safe to repeat.
set -euo pipefail
work=${1:?usage: stop.sh WORK}
[[ -d $work ]] || exit 0
for pidfile in "$work/machine.pid" "$work/ipmi_sim.pid"; do
  if [[ -f $pidfile ]]; then
    kill -KILL "$(<"$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
  fi
done
rm -f "$work/console" "$work/bmc.env"
