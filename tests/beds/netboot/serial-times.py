#!/usr/bin/env python3
"""Watches a VM's serial log while it boots and prints, for each marker,
how many seconds after the start it first appeared.

Usage: serial-times.py LOG PID [--lines OUT] [--stop TEXT]... MARKER...
  Polls LOG every 0.1 s and returns when every MARKER has appeared, when a
  --stop TEXT appears (exit status 3), or when process PID (vm.sh) is gone.
  Prints "<seconds> <marker>" for each MARKER seen, "- <marker>" for the
  rest. Stopping the VM is the caller's job. --lines OUT also writes every
  console line to OUT prefixed with the second it first appeared.
The clock starts when this script starts: run it right after vm.sh.
"""
import os
import sys
import time

args = sys.argv[1:]
if len(args) < 2:
    raise SystemExit(__doc__)
log, pid = args[0], int(args[1])
stops, markers = [], []
lines_out = None
rest = args[2:]
while rest:
    if rest[0] == "--lines":
        lines_out = open(rest[1], "w")
        rest = rest[2:]
    elif rest[0] == "--stop":
        stops.append(rest[1])
        rest = rest[2:]
    else:
        markers.append(rest.pop(0))

start = time.monotonic()
seen = {}
stopped = None
done_lines = 0


def alive(p):
    try:
        os.kill(p, 0)
    except ProcessLookupError:
        return False
    # A zombie child of our caller counts as gone.
    try:
        with open(f"/proc/{p}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
    return True


while True:
    try:
        with open(log, "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        text = ""
    now = time.monotonic() - start
    if lines_out:
        # Complete lines only; firmware redraws with CR, so split on both.
        parts = text.replace("\r", "\n").split("\n")[:-1]
        for line in parts[done_lines:]:
            if line.strip():
                lines_out.write(f"{now:7.1f} {line}\n")
        done_lines = max(done_lines, len(parts))
        lines_out.flush()
    for m in markers:
        if m not in seen and m in text:
            seen[m] = now
    for s in stops:
        if s in text:
            stopped = s
    if stopped or len(seen) == len(markers) and markers or not alive(pid):
        break
    time.sleep(0.1)

for m in markers:
    print(f"{seen[m]:7.1f} {m}" if m in seen else f"      - {m}")
if stopped:
    print(f"stopped at: {stopped}")
    sys.exit(3)
