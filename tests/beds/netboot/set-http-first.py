#!/usr/bin/env python3
"""Moves the NIC's UEFI HTTP boot (IPv4) option to the front of BootOrder in
an OVMF/AAVMF variable store.

Usage: set-http-first.py VARS_FILE MAC
The store must already hold the boot options OVMF creates for the NIC
("UEFI HTTPv4 (MAC:525400123456)"): vm.sh boots the VM once, cut off from
the network, until the firmware starts its first boot option, which is when
those options and BootOrder have been written. OVMF re-sorts BootOrder by
QEMU's bootindex at every boot but keeps the relative order of options on
the same device, so HTTPv4 stays ahead of PXEv4 on that NIC.

Needs virt-firmware (PyPI; Debian 12 has no python3-virt-firmware).
"""
import struct
import sys

from virt.firmware.efi import bootentry
from virt.firmware.varstore import autodetect

if len(sys.argv) != 3:
    raise SystemExit(__doc__)
path, mac = sys.argv[1], sys.argv[2].replace(":", "").upper()

store = autodetect.open_varstore(path)
if store is None:
    raise SystemExit(f"set-http-first: {path} is not a variable store")
varlist = store.get_varlist()

order_var = varlist.get("BootOrder")
if order_var is None:
    raise SystemExit(f"set-http-first: {path} has no BootOrder (was the VM primed?)")
order = [struct.unpack_from("<H", order_var.data, i)[0] for i in range(0, len(order_var.data), 2)]

want = f"UEFI HTTPv4 (MAC:{mac})"
found = None
titles = []
for index in order:
    var = varlist.get(f"Boot{index:04X}")
    if var is None:
        continue
    title = str(bootentry.BootEntry(data=var.data).title)
    titles.append(f"Boot{index:04X} {title}")
    if title == want:
        found = index
if found is None:
    raise SystemExit(f"set-http-first: no option {want!r} in BootOrder: {titles}")

order_var.set_boot_order([found] + [i for i in order if i != found])
store.write_varstore(path, varlist)
print(f"set-http-first: Boot{found:04X} {want} first (was: {', '.join(titles)})")
