#!/usr/bin/env python3
"""Print the distinct DHCP payloads of a pcap (Ethernet/IPv4/UDP) as hex,
one fixture per packet: pcap2hex.py FILE.pcap [MAX]  (first MAX distinct)."""
import struct
import sys

def payloads(path):
    data = open(path, "rb").read()
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    off = 24
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack(endian + "IIII", data[off:off + 16])
        frame = data[off + 16:off + 16 + incl]
        off += 16 + incl
        if len(frame) < 42 or frame[12:14] != b"\x08\x00":
            continue
        ihl = (frame[14] & 0x0F) * 4
        udp = 14 + ihl
        sport, dport = struct.unpack(">HH", frame[udp:udp + 4])
        yield sport, dport, frame[udp + 8:]

def main():
    limit = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    seen = set()
    for sport, dport, p in payloads(sys.argv[1]):
        # secs (bytes 8..10) and xid differ between retries; compare the rest.
        key = p[:4] + p[10:]
        if key in seen:
            continue
        seen.add(key)
        print(f"# udp {sport} -> {dport}, {len(p)} bytes")
        for i in range(0, len(p), 32):
            print(p[i:i + 32].hex())
        print()
        limit -= 1
        if limit == 0:
            break

main()
