#!/usr/bin/env bash
# Starts sushy-tools' Redfish emulator (PyPI; its fake driver: machines that
# are only state) on 127.0.0.1 with a free port, over HTTPS with a
# certificate for IP 127.0.0.1 from a CA of its own, and an htpasswd file,
# with SYSTEMS machines in
# POWER ("On" or "Off"), booting from disk in legacy mode (so a PXE
# override in UEFI mode shows). Returns once it answers. Writes
# WORK/redfish.env (sourceable):
#   REDFISH_PORT, REDFISH_FINGERPRINT (the certificate's SHA-256, AB:CD:…),
#   REDFISH_CA (WORK/ca.pem, the CA that signed it),
#   REDFISH_USER (admin), REDFISH_PASSWORD_FILE (WORK/bmc.pass, 0600),
#   REDFISH_PID
# System i (1…SYSTEMS) is /redfish/v1/Systems/5a0b1c2d-0000-4000-8000-<i,
# 12 digits>, named node<i>. Every reset the emulator takes is a line
# `System "<uuid>" power state set to "<ResetType>"` in WORK/emulator.log,
# with every request it answered. Stop it with `kill $REDFISH_PID`.
#
# Usage: redfish-start.sh WORK POWER [SYSTEMS]
set -euo pipefail

usage="usage: redfish-start.sh WORK On|Off [SYSTEMS]"
mkdir -p "${1:?$usage}"
work=$(cd "$1" && pwd)
power=${2:?$usage}
systems=${3:-1}
[[ $power == On || $power == Off ]] || { echo "$usage" >&2; exit 2; }
# The emulator's config is Python with these paths in quotes.
[[ $work != *[[:space:]\'\"\$\\]* ]] || { echo "redfish-start.sh: WORK must not contain whitespace, quotes, \$ or \\" >&2; exit 2; }
python3 -c 'import sushy_tools' 2>/dev/null || { echo "redfish-start.sh: sushy-tools missing (tests/setup-peers)" >&2; exit 1; }

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
openssl req -x509 "${ec[@]}" -days 2 -subj /CN=kickstand-test-bmc-ca \
  -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
openssl req "${ec[@]}" -subj /CN=127.0.0.1 -keyout "$work/key.pem" -out "$work/cert.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$work/cert.ext"
openssl x509 -req -in "$work/cert.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
  -days 2 -extfile "$work/cert.ext" -out "$work/cert.pem" 2>/dev/null
fingerprint=$(openssl x509 -in "$work/cert.pem" -noout -fingerprint -sha256 | sed 's/.*=//')
(umask 077 && od -An -N8 -tx1 /dev/urandom | tr -d ' \n' >"$work/bmc.pass")
htpasswd -nbB admin "$(<"$work/bmc.pass")" >"$work/htpasswd"
{
  echo "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'"
  echo "SUSHY_EMULATOR_LISTEN_PORT = $port"
  echo "SUSHY_EMULATOR_SSL_CERT = '$work/cert.pem'"
  echo "SUSHY_EMULATOR_SSL_KEY = '$work/key.pem'"
  echo "SUSHY_EMULATOR_AUTH_FILE = '$work/htpasswd'"
  echo "SUSHY_EMULATOR_STATE_DIR = '$work/sushy-state'"
  echo "SUSHY_EMULATOR_FAKE_DRIVER = True"
  echo "SUSHY_EMULATOR_FAKE_SYSTEMS = ["
  for i in $(seq "$systems"); do
    printf "  {'uuid': '5a0b1c2d-0000-4000-8000-%012d', 'name': 'node%d', 'power_state': '%s',\n" "$i" "$i" "$power"
    echo "   'boot_device': 'Hdd', 'boot_mode': 'Legacy', 'external_notifier': False, 'nics': []},"
  done
  echo "]"
} >"$work/emulator.conf"
# sushy-emulator itself, with Python's root logger at INFO: the emulator
# logs each reset it takes, and werkzeug each request, at INFO, which its
# own command line leaves out.
SUSHY_EMULATOR_CONFIG=$work/emulator.conf setsid python3 -c '
import logging, sys
logging.getLogger().setLevel(logging.INFO)
from sushy_tools.emulator.main import main
sys.exit(main())' </dev/null >"$work/emulator.log" 2>&1 &
pid=$!
for _ in $(seq 150); do
  curl -sfk "https://127.0.0.1:$port/redfish/v1/" >/dev/null && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.2
done
curl -sfk "https://127.0.0.1:$port/redfish/v1/" >/dev/null ||
  { echo "redfish-start.sh: the emulator did not start:" >&2; cat "$work/emulator.log" >&2; kill "$pid" 2>/dev/null; exit 1; }
cat >"$work/redfish.env" <<ENV
REDFISH_PORT=$port
REDFISH_FINGERPRINT=$fingerprint
REDFISH_CA=$work/ca.pem
REDFISH_USER=admin
REDFISH_PASSWORD_FILE=$work/bmc.pass
REDFISH_PID=$pid
ENV
