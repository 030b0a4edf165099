#!/usr/bin/env python3
"""Lists the DHCP (and ProxyDHCP port 4011) packets of a pcap file and,
optionally, saves each one's UDP payload as a raw file.

Usage: pcap-dhcp.py CAPTURE.pcap [--save DIR]
Prints one line per packet: time since the first DHCP packet, ports, message
type, client MAC, siaddr, file, and options 54 (server), 60 (vendor class),
77 (user class), 93 (client arch), 97 (UUID), 43 (PXE vendor options).
With --save, writes DIR/NN-<src ip>.<port>-<dst ip>.<port>-<type>-<mac>.bin
(the exact UDP payload, i.e. the BOOTP/DHCP message as it was sent).

Reads classic pcap (what tcpdump -w writes) with Ethernet link type; the
parsing is by hand because it is a few lines and keeps the bed free of a
packet library.
"""
import os
import struct
import sys

TYPES = {1: "DISCOVER", 2: "OFFER", 3: "REQUEST", 4: "DECLINE", 5: "ACK",
         6: "NAK", 7: "RELEASE", 8: "INFORM"}


def packets(path):
    with open(path, "rb") as f:
        head = f.read(24)
        magic = struct.unpack("<I", head[:4])[0]
        if magic in (0xA1B2C3D4, 0xA1B23C4D):
            end = "<"
        elif magic in (0xD4C3B2A1, 0x4D3CB2A1):
            end = ">"
        else:
            raise SystemExit(f"{path}: not a classic pcap file")
        nano = magic in (0xA1B23C4D, 0x4D3CB2A1)
        linktype = struct.unpack(end + "I", head[20:24])[0]
        if linktype != 1:
            raise SystemExit(f"{path}: link type {linktype}, want Ethernet (1)")
        while True:
            rec = f.read(16)
            if len(rec) < 16:
                return
            sec, frac, incl, _ = struct.unpack(end + "IIII", rec)
            data = f.read(incl)
            yield sec + frac / (1e9 if nano else 1e6), data


def udp(frame):
    """(src port, dst port, payload, src ip, dst ip) of an IPv4/UDP
    Ethernet frame, or None."""
    off = 12
    ethertype = struct.unpack("!H", frame[off:off + 2])[0]
    off += 2
    if ethertype == 0x8100:  # VLAN tag
        ethertype = struct.unpack("!H", frame[off + 2:off + 4])[0]
        off += 4
    if ethertype != 0x0800:
        return None
    ihl = (frame[off] & 0x0F) * 4
    if frame[off + 9] != 17:
        return None
    u = off + ihl
    sport, dport, length = struct.unpack("!HHH", frame[u:u + 6])
    src = ".".join(str(b) for b in frame[off + 12:off + 16])
    dst = ".".join(str(b) for b in frame[off + 16:off + 20])
    return sport, dport, frame[u + 8:u + length], src, dst


def options(msg):
    opts = {}
    i = 240
    while i < len(msg):
        code = msg[i]
        if code == 255:
            break
        if code == 0:
            i += 1
            continue
        n = msg[i + 1]
        opts.setdefault(code, b"")
        opts[code] += msg[i + 2:i + 2 + n]
        i += 2 + n
    return opts


def describe(msg):
    if len(msg) < 240 or msg[236:240] != b"\x63\x82\x53\x63":
        return None
    o = options(msg)
    mac = ":".join(f"{b:02x}" for b in msg[28:34])
    siaddr = ".".join(str(b) for b in msg[20:24])
    fname = msg[108:236].split(b"\0", 1)[0].decode(errors="replace")
    kind = TYPES.get(o.get(53, b"\0")[0], "?")
    parts = [f"op={msg[0]}", kind, mac, f"siaddr={siaddr}"]
    if fname:
        parts.append(f"file={fname!r}")
    if 54 in o:
        parts.append("server=" + ".".join(str(b) for b in o[54]))
    if 60 in o:
        parts.append(f"opt60={o[60].decode(errors='replace')!r}")
    if 77 in o:
        parts.append(f"opt77={o[77]!r}")
    if 93 in o:
        parts.append("opt93=" + ",".join(str(struct.unpack('!H', o[93][i:i + 2])[0]) for i in range(0, len(o[93]) - 1, 2)))
    if 97 in o:
        parts.append("opt97=" + o[97].hex())
    if 43 in o:
        parts.append("opt43=" + o[43].hex())
    if 55 in o:
        parts.append("opt55=" + ",".join(str(b) for b in o[55]))
    parts.append(f"len={len(msg)}")
    return kind, mac, " ".join(parts)


def main():
    args = sys.argv[1:]
    if not args:
        raise SystemExit(__doc__)
    save = None
    if "--save" in args:
        i = args.index("--save")
        save = args[i + 1]
        del args[i:i + 2]
        os.makedirs(save, exist_ok=True)
    t0 = None
    n = 0
    for ts, frame in packets(args[0]):
        u = udp(frame)
        if not u or not ({67, 68, 4011} & {u[0], u[1]}):
            continue
        d = describe(u[2])
        if not d:
            continue
        t0 = ts if t0 is None else t0
        n += 1
        print(f"{ts - t0:8.3f} {u[3]}:{u[0]}->{u[4]}:{u[1]} {d[2]}")
        if save:
            name = f"{n:02d}-{u[3]}.{u[0]}-{u[4]}.{u[1]}-{d[0].lower()}-{d[1].replace(':', '')}.bin"
            with open(os.path.join(save, name), "wb") as f:
                f.write(u[2])


main()
