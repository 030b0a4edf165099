#!/bin/bash
# Makes the status page screenshot of the documentation (docs/status-page.png):
# the page during a real QEMU install of two machines on the netboot bed
# (tests/beds/netboot), one installed and one installing, plus a host that
# never booted and a machine Kickstand discovered.
#
# Usage (as root): screenshot.sh OUT.png
# Environment:
#   KICKSTAND_BIN   the kickstand binary (debug or release); default: built
#                   with `cargo build -p kickstand` into $CARGO_TARGET_DIR
#                   (or target/)
#   KS_STANDIN_DIR  the bed's stand-in cache (default: its own,
#                   target/tmp/screenshot-standin, apart from the one the
#                   netboot tests read)
#   KEEP_WORK=1     keep the work directory (logs) after the run
#
# What it does: brings up the bed with `kickstand serve` in Kickstand's
# place (site config as Bed::write_site in crates/daemon/tests/netboot.rs,
# `dhcp.unknown: discover`), boots a stranger (BIOS) until it is discovered
# and falls through to its missing disk, boots rack1-node01 (BIOS) until it
# has installed and powered off, then boots rack1-node02 and, as soon as
# GET /api/hosts says it is installing, takes the full-page shot 1280 px
# wide with Chromium from inside the namespace, and lets it finish. The
# stand-in installer reports `installed` some 0.1 s after it fetched its
# kickstart; rack1-node02's profile asks it to stay installing for a while
# (`# KS-STANDIN-INSTALL-SECS:` in its kickstart, an opt-in of
# build-initrd.sh's /init), so the shot is no race. Everything is torn down
# on exit, also on failure. Takes 2-3 minutes (three TCG boots).
set -euo pipefail

out=${1:?usage: screenshot.sh OUT.png}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../../.." && pwd)
bed=$repo/tests/beds/netboot
appliance=http://10.77.0.1:8080
tree=standin/9/BaseOS/x86_64/os

node01=52:54:00:10:00:01
node02=52:54:00:10:00:02
node03=52:54:00:10:00:03
stranger=52:54:00:7e:00:01
# How long rack1-node02's stand-in install lasts: time enough to start the
# browser and load the page, under TCG on a busy machine.
install_secs=40

say() { echo "screenshot: $*" >&2; }
die() { say "$*"; exit 1; }

[[ $(id -u) == 0 ]] || die "needs root (network namespaces, QEMU on a tap device)"
for tool in ip curl python3 qemu-system-x86_64 /usr/bin/chromium; do
  command -v "$tool" >/dev/null || die "$tool missing (tests/setup-peers installs it)"
done
python3 -c 'import playwright' 2>/dev/null || die "Playwright for Python missing (tests/setup-peers installs it)"
mkdir -p "$(dirname "$out")"
out=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")

started=$SECONDS
# cargo resolves a relative CARGO_TARGET_DIR against where it runs: $repo.
target=$(cd "$repo" && realpath -m "${CARGO_TARGET_DIR:-target}")
if [[ -z ${KICKSTAND_BIN:-} ]]; then
  say "building kickstand (cargo build -p kickstand)"
  (cd "$repo" && cargo build -q -p kickstand)
  KICKSTAND_BIN=$target/debug/kickstand
fi
[[ -x $KICKSTAND_BIN ]] || die "no kickstand binary at $KICKSTAND_BIN"
KICKSTAND_BIN=$(readlink -f "$KICKSTAND_BIN")

work=$(mktemp -d /tmp/ks-screenshot-XXXXXX)
vm=""

# Stops the running QEMU by the pid file vm.sh has it write (-pidfile,
# written as QEMU starts, removed when it exits); vm.sh then returns.
stop_qemu() {
  local pid
  pid=$(cat "$work/qemu.pid" 2>/dev/null) || return 0
  if [[ $pid =~ ^[0-9]+$ ]]; then kill "$pid" 2>/dev/null || true; fi
}

cleanup() {
  local rc=$?
  set +e
  "$bed/bed-down.sh" "$work" || say "bed-down.sh failed: namespaces may be left over (ip netns list)"
  [[ -n $vm ]] && wait "$vm" 2>/dev/null
  if ((rc != 0)); then
    for log in "$work"/kickstand.log "$work"/*.serial.log; do
      [[ -f $log ]] && { echo "===== $log (last 40 lines)"; tail -n 40 "$log"; echo; } >&2
    done
  fi
  if [[ ${KEEP_WORK:-} == 1 ]]; then say "work directory kept: $work"; else rm -rf "$work"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "bringing up the netboot bed in $work"
KS_STANDIN_DIR=${KS_STANDIN_DIR:-$target/tmp/screenshot-standin} KS_MIRROR_TREE=$tree \
  "$bed/bed-up.sh" "$work"
# shellcheck disable=SC1091
source "$work/bed.env"

# The site, as Bed::write_site writes it: the boot loaders installed the way
# an appliance gets them, the bed's mirror reached directly.
"$repo/image/install-bootloaders.sh" "$work/tftp" >&2
mkdir -p "$work/site"
cat >"$work/site/kickstand.yaml" <<YAML
server:
  address: 10.77.0.1
  bind: 0.0.0.0
  interfaces: [ksbr0]
  http_port: 8080
  tftp_port: 69
dhcp:
  mode: proxy
  unknown: discover
  uefi_loader: ipxe.efi
tftp:
  root: ../tftp
mirrors:
  bed: [http://127.0.0.1:8081/]
cache:
  dir: ../cache
  max_size: 1GiB
paths:
  templates: $repo/templates
  state: ../state
YAML
cat >"$work/site/rack1.yaml" <<YAML
defaults:
  timezone: UTC
  root_password_hash: "\$6\$kickstand\$7nnnz58yhhGqh4hFM4Ph9yOkPehrOLT.DgrbuBQQD.ozFzzuJQvJKjE.Mgvl4FzX9K6BdB05rk7bZb0PkRJD4."
os:
  standin-9:
    title: Installer stand-in
    mirror: bed
    tree: $tree
    kickstart: centos-stream-9.ks.j2
    boot_args: console=ttyS0
hosts:
  "$node01":
    hostname: rack1-node01
    os: standin-9
  "$node02":
    hostname: rack1-node02
    os: standin-9
    kickstart:
      # The stand-in installer stays installing this long (build-initrd.sh).
      pre: "# KS-STANDIN-INSTALL-SECS: $install_secs"
  "$node03":
    hostname: rack1-node03
    os: standin-9
YAML

ip netns exec "$NS" env KICKSTAND_LOG=info NO_COLOR=1 "$KICKSTAND_BIN" serve \
  --config "$work/site/kickstand.yaml" >"$work/kickstand.log" 2>&1 </dev/null &
# ip netns exec execs kickstand: this is its pid, which bed-down.sh stops.
echo $! >"$work/kickstand.pid"
for _ in $(seq 150); do
  ip netns exec "$NS" curl -sf -m 2 -o /dev/null "$appliance/status" && break
  kill -0 "$(cat "$work/kickstand.pid")" 2>/dev/null || die "kickstand serve exited early"
  sleep 0.2
done
ip netns exec "$NS" curl -sf -m 2 -o /dev/null "$appliance/status" || die "kickstand did not answer /status within 30 s"

api() { ip netns exec "$NS" curl -sS -f -m 10 "$@"; }

# The phase of MAC in GET /api/hosts ("absent" when it is not listed, empty
# when the API did not answer).
phase() {
  api "$appliance/api/hosts" 2>/dev/null | python3 -c '
import json, sys
mac = sys.argv[1]
print(next((h["phase"].lower() for h in json.load(sys.stdin) if h["mac"] == mac), "absent"))
' "$1" 2>/dev/null || true
}

# Starts one BIOS machine on the bed (vm.sh in the background; its pid in $vm).
start_vm() {
  local name=$1 mac=$2
  "$bed/vm.sh" "$work" bios "$mac" "$work/$name.serial.log" 240 \
    >"$work/$name.vm.log" 2>&1 </dev/null &
  vm=$!
}

# Waits for the running VM to power off (or hit vm.sh's hard timeout), or
# until TEXT shows on its console, then stops it.
wait_vm() {
  local name=$1 text=${2:-}
  while kill -0 "$vm" 2>/dev/null; do
    if [[ -n $text ]] && grep -qaF "$text" "$work/$name.serial.log" 2>/dev/null; then
      stop_qemu
      break
    fi
    sleep 0.25
  done
  wait "$vm" || true
  vm=""
}

t0=$SECONDS
say "booting a machine with no profile ($stranger): discovered, falls through to its (missing) disk"
start_vm stranger "$stranger"
wait_vm stranger "No bootable device"
api "$appliance/api/discovered" | grep -qi "$stranger" || die "$stranger was not discovered"
say "  discovered after $((SECONDS - t0)) s"

t0=$SECONDS
say "booting rack1-node01 ($node01) to installed"
start_vm node01 "$node01"
wait_vm node01
[[ $(phase "$node01") == installed ]] || die "rack1-node01 did not install (phase $(phase "$node01"))"
say "  installed after $((SECONDS - t0)) s"

t0=$SECONDS
say "booting rack1-node02 ($node02): the shot is taken while it is installing"
start_vm node02 "$node02"
while kill -0 "$vm" 2>/dev/null && [[ $(phase "$node02") != installing ]]; do sleep 0.5; done
[[ $(phase "$node02") == installing ]] || die "rack1-node02 never showed installing (phase $(phase "$node02"))"
say "  installing after $((SECONDS - t0)) s"
# A few seconds in the phase, as an operator would find it.
sleep 3
ip netns exec "$NS" python3 "$here/screenshot.py" "$appliance" "$out" \
  "$node01=installed" "$node02=installing" "$node03=new"
[[ $(phase "$node02") == installing ]] || die "rack1-node02 left installing before the shot was taken: raise install_secs"
say "  shot taken; waiting for rack1-node02 to finish"
wait_vm node02
[[ $(phase "$node02") == installed ]] || die "rack1-node02 did not install (phase $(phase "$node02"))"
say "  installed after $((SECONDS - t0)) s"
say "wrote $out ($(stat -c %s "$out") bytes) in $((SECONDS - started)) s"
