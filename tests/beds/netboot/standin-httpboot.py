#!/usr/bin/env python3
"""Stand-in ProxyDHCP for UEFI HTTP boot, used only to check the netboot bed.

dnsmasq's proxy mode answers only vendor class PXEClient, so this plays the
part of Kickstand's ProxyDHCP for HTTP boot clients: to a DHCPDISCOVER with
option 60 "HTTPClient:Arch:..." it sends a proxy OFFER (no address: yiaddr
0.0.0.0) with option 60 "HTTPClient", option 54 and the boot URL in the
`file` field and option 67. The office DHCP server gives the address; EDK2's
HttpBootDxe combines its offer ("DhcpOnly") with this one ("ProxyIpUri").
Everything else (PXEClient, iPXE, other DHCP) is left alone.

Usage: standin-httpboot.py INTERFACE SERVER_IP HOSTS_DIR ARCH=URL...
  e.g. ksbr0 10.77.0.1 WORK/standin-hosts 16=http://10.77.0.1:8081/loaders/ipxe.efi
  ARCH is the client architecture (option 93): 16 x64 HTTP, 19 arm64 HTTP.
  HOSTS_DIR is the stand-in dnsmasq's hosts directory (bed-host.sh): only a
  MAC tagged set:ks-httpboot there is answered (and not if also tagged
  set:ks-ignore), so a host's HTTP boot attempt fails as it would where
  nobody serves HTTP boot unless a test asks for it.
Logs one line per DISCOVER it sees and per OFFER it sends.
Hand-written because it is ~100 lines and no Debian DHCP server does a
proxy offer for HTTPClient.
"""
import os
import socket
import struct
import sys

SO_BINDTODEVICE = 25

iface, server, hosts_dir = sys.argv[1], sys.argv[2], sys.argv[3]
urls = {}
for arg in sys.argv[4:]:
    arch, url = arg.split("=", 1)
    urls[int(arch)] = url


def tags(mac):
    """The tags bed-host.sh gave MAC (dnsmasq's hosts-dir format)."""
    found = set()
    try:
        names = os.listdir(hosts_dir)
    except OSError:
        return found
    for name in names:
        if name.startswith("."):
            continue
        try:
            with open(os.path.join(hosts_dir, name)) as f:
                for line in f:
                    fields = line.strip().lower().split(",")
                    if fields[0] == mac:
                        found.update(t[4:] for t in fields[1:] if t.startswith("set:"))
        except OSError:
            continue
    return found


def options(msg):
    opts = {}
    i = 240
    while i < len(msg) and msg[i] != 255:
        if msg[i] == 0:
            i += 1
            continue
        opts[msg[i]] = opts.get(msg[i], b"") + msg[i + 2:i + 2 + msg[i + 1]]
        i += 2 + msg[i + 1]
    return opts


def offer(req, url, kind):
    opt = bytearray()

    def put(code, data):
        opt.extend(bytes([code, len(data)]) + data)

    put(53, bytes([kind]))
    put(54, socket.inet_aton(server))
    put(60, b"HTTPClient")
    put(67, url.encode())
    opt.append(255)
    head = struct.pack("!BBBB4sHH4s4s4s4s16s64s128s", 2, 1, 6, 0, req[4:8], 0,
                       0x8000, b"\0" * 4, b"\0" * 4, socket.inet_aton(server),
                       b"\0" * 4, req[28:44], b"", url.encode()[:127])
    msg = head + b"\x63\x82\x53\x63" + bytes(opt)
    return msg + b"\0" * max(0, 300 - len(msg))


sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
# dnsmasq holds 0.0.0.0:67 on the same interface; both sockets set
# SO_REUSEADDR, so the kernel hands each broadcast DISCOVER to both.
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, iface.encode())
sock.bind(("0.0.0.0", 67))
print(f"standin-httpboot: on {iface}, answering HTTPClient for arch {sorted(urls)}", flush=True)

while True:
    msg, peer = sock.recvfrom(65535)
    if len(msg) < 240 or msg[0] != 1 or msg[236:240] != b"\x63\x82\x53\x63":
        continue
    o = options(msg)
    vendor = o.get(60, b"")
    if not vendor.startswith(b"HTTPClient"):
        continue
    kind = o.get(53, b"\0")[0]
    mac = ":".join(f"{b:02x}" for b in msg[28:34])
    arch = struct.unpack("!H", o[93][:2])[0] if len(o.get(93, b"")) >= 2 else None
    print(f"standin-httpboot: {mac} type {kind} arch {arch} vendor {vendor.decode(errors='replace')!r}", flush=True)
    # HTTP boot sends DISCOVER, then REQUEST to the address server only.
    if kind != 1 or arch not in urls:
        continue
    t = tags(mac)
    if "ks-httpboot" not in t or "ks-ignore" in t:
        print(f"standin-httpboot: {mac} not answered (tags {sorted(t)})", flush=True)
        continue
    sock.sendto(offer(msg, urls[arch], 2), ("255.255.255.255", 68))
    print(f"standin-httpboot: {mac} offered {urls[arch]}", flush=True)
