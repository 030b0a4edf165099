#!/usr/bin/env bash
# ipmi_sim's chassis_control program for one machine of the BMC bed: power
# and boot device, as ipmi_sim asks for them (`get power`, `set power 1`,
# `get boot`, `set boot pxe`; answers are `name:value` lines).
#
# Usage (by ipmi_sim, from lan.conf): chassis.sh WORK get|set power|boot [VALUE]
#
# Why a program and not ipmi_sim's `startcmd`: ipmi_sim 2.0.33 answers Set
# System Boot Options only through a chassis_control program (without one,
# `chassis bootdev` fails with "Invalid data field in request"), and once
# there is one it also owns power. So power is here: on starts the machine
# (WORK/machine.cmd, written by start.sh) in its own session, off kills it
# at once (a held power button), and the power state is whether it runs.
set -euo pipefail

work=$1
op=$2
name=$3
pidfile=$work/machine.pid

# True while the machine's process exists and is not a zombie (nothing may
# reap it: its parent, this script, is gone).
running() {
  local pid state
  [[ -f $pidfile ]] || return 1
  pid=$(<"$pidfile")
  state=$(ps -o stat= -p "$pid" 2>/dev/null) || return 1
  [[ $state != Z* ]]
}

power_on() {
  running && return 0
  local cmd
  eval "cmd=($(<"$work/machine.cmd"))"
  # The machine must not keep ipmi_sim's sockets (inherited through popen):
  # close every descriptor above stderr before exec.
  (
    for fd in "/proc/$BASHPID/fd/"*; do
      fd=${fd##*/}
      ((fd > 2)) && eval "exec $fd>&-" 2>/dev/null
    done
    exec setsid "${cmd[@]}"
  ) </dev/null >>"$work/machine.log" 2>&1 &
  echo $! >"$pidfile"
  echo "$(date +%s.%N) on $!" >>"$work/power.log"
}

power_off() {
  running || return 0
  local pid
  pid=$(<"$pidfile")
  kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 100); do
    running || break
    sleep 0.05
  done
  echo "$(date +%s.%N) off $pid" >>"$work/power.log"
}

case "$op $name" in
  "get power") running && echo "power:1" || echo "power:0" ;;
  "set power") if [[ ${4:?} == 1 ]]; then power_on; else power_off; fi ;;
  # What ipmi_sim keeps of a Set System Boot Options is the device alone
  # (none, pxe, default, cdrom, bios): not the EFI or persistent bits.
  "get boot") echo "boot:$(cat "$work/boot" 2>/dev/null || echo none)" ;;
  "set boot") echo "${4:?}" >"$work/boot" ;;
  *) echo "chassis.sh: cannot $op $name" >&2; exit 1 ;;
esac
