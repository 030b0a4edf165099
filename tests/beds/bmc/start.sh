#!/usr/bin/env bash
# Starts ipmi_sim (Debian's openipmi) as the BMC of one machine, on
# 127.0.0.1 with free ports; the machine is CMD…, started and killed by the
# BMC's power control (chassis.sh). Writes WORK/bmc.env (shell-sourceable)
# and returns once the BMC answers ipmitool. Stop with stop.sh WORK.
#
# Usage: start.sh WORK CMD…
#   CMD…  the machine. A QEMU command line (qemu-system-*) gets the BMC's
#         side of IPMI added: its KCS interface, connected to ipmi_sim's
#         VM serial port (-device ipmi-bmc-extern + isa-ipmi-kcs). Any other
#         command runs as given: a stand-in machine with no IPMI device
#         (`sleep infinity`), whose process is the power state.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
usage="usage: start.sh WORK CMD…"
mkdir -p "${1:?$usage}"
work=$(cd "$1" && pwd)
shift
(($#)) || { echo "$usage" >&2; exit 2; }
# lan.conf quotes paths with ' and the env file is sourced.
[[ $work != *[[:space:]\'\"\$\\]* ]] || { echo "start.sh: WORK must not contain whitespace, quotes, \$ or \\" >&2; exit 2; }
for tool in ipmi_sim ipmitool python3; do
  command -v "$tool" >/dev/null || { echo "start.sh: $tool missing (tests/setup-peers: openipmi, ipmitool)" >&2; exit 1; }
done

user="admin"
umask 077
# 16 characters: IPMI 2.0 passwords are at most 20.
od -An -N8 -tx1 /dev/urandom | tr -d ' \n' >"$work/bmc.pass"
password=$(<"$work/bmc.pass")

# ipmi_sim on ports probed free a moment before: another process (an
# ipmitool's source port, say) may take one in between, and ipmi_sim then
# dies at start. Such a start is tried again on new ports.
start_bmc() {
  read -r lan_port serial_port < <(python3 -c 'import socket
lan = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); lan.bind(("127.0.0.1", 0))
ser = socket.socket(); ser.bind(("127.0.0.1", 0))
print(lan.getsockname()[1], ser.getsockname()[1])')
  machine=("$@")
  if [[ ${1##*/} == qemu-system-* ]]; then
    machine+=(-chardev "socket,id=ipmi0,host=127.0.0.1,port=$serial_port,reconnect=1"
      -device "ipmi-bmc-extern,id=bmc0,chardev=ipmi0"
      -device "isa-ipmi-kcs,bmc=bmc0")
  fi
  printf '%q ' "${machine[@]}" >"$work/machine.cmd"

  mkdir -p "$work/state"
  rm -f "$work/boot" "$work/machine.pid"
  cat >"$work/lan.conf" <<CONF
name "kickstand-bed"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 $lan_port
    priv_limit admin
    guid a123456789abcdefa123456789abcdef
  endlan
  serial 15 127.0.0.1 $serial_port codec VM
  chassis_control "'$here/chassis.sh' '$work'"
  user 2 true "$user" "$password" admin 10 md5
CONF
  # `debug raw msg` logs to stdout every request ipmi_sim receives (LAN and
  # KCS) with its data bytes, and the bytes on the machine's serial link:
  # what ipmitool really sent, and whether the machine's firmware asked
  # anything.
  cat >"$work/bmc.emu" <<'EMU'
mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02
mc_enable 0x20
debug raw msg
EMU

  # Without -n ipmi_sim reads commands from stdin and crashes on one it cannot
  # poll (/dev/null), while with -n it logs nothing: stdin is a FIFO that it
  # holds open for writing too, so it never sees end of file.
  rm -f "$work/console"
  mkfifo "$work/console"
  ipmi_sim -c "$work/lan.conf" -f "$work/bmc.emu" -s "$work/state" \
    <>"$work/console" >"$work/ipmi_sim.log" 2>&1 &
  echo $! >"$work/ipmi_sim.pid"

  cat >"$work/bmc.env" <<ENV
BMC_HOST=127.0.0.1
BMC_PORT=$lan_port
BMC_USER=$user
BMC_PASSWORD_FILE=$work/bmc.pass
BMC_SERIAL_PORT=$serial_port
ENV

  for _ in $(seq 50); do
    if IPMI_PASSWORD=$password ipmitool -I lanplus -C 3 -H 127.0.0.1 -p "$lan_port" -U "$user" -E \
      -N 1 -R 1 chassis power status </dev/null >/dev/null 2>&1; then
      return 0
    fi
    kill -0 "$(<"$work/ipmi_sim.pid")" 2>/dev/null || return 1
    sleep 0.1
  done
  return 2
}

for _ in 1 2 3; do
  rc=0
  start_bmc "$@" || rc=$?
  ((rc == 0)) && exit 0
  ((rc == 1)) || break
  echo "start.sh: ipmi_sim ended at start (a port taken meanwhile?); again on other ports" >&2
  tail -n 5 "$work/ipmi_sim.log" >&2
done
echo "start.sh: ipmi_sim does not answer (log: $work/ipmi_sim.log):" >&2
tail -n 20 "$work/ipmi_sim.log" >&2
exit 1
