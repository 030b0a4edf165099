#!/usr/bin/env python3
"""The switch port of a machine that is on VLAN VID tagged beside its
untagged network: frames the machine sends on TRUNK tagged VID leave
untagged by ACCESS (that VLAN's segment), and what comes in on ACCESS goes
to the machine on TRUNK tagged VID. Untagged frames are left to the bridge
TRUNK is a port of.

It stands in for a bridge with vlan_filtering where the kernel has neither
802.1Q nor bridge VLAN filtering (CONFIG_VLAN_8021Q and
CONFIG_BRIDGE_VLAN_FILTERING unset, as on the test machines). The kernel
still takes a received frame's tag into the packet's metadata, which a
packet socket reads as PACKET_AUXDATA.

Usage: vlan-switch.py TRUNK ACCESS VID
"""
import select
import socket
import struct
import sys

ETH_P_ALL = 0x0003
ETH_P_8021Q = 0x8100
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_OUTGOING = 4
TP_STATUS_VLAN_VALID = 1 << 4
# struct tpacket_auxdata: status, len, snaplen, mac, net, vlan_tci, vlan_tpid.
AUXDATA = struct.Struct("IIIHHHH")


def open_port(name):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    s.bind((name, 0))
    return s


def receive(s):
    """A frame that arrived on s (None for one s sent), and its VLAN ID."""
    frame, ancillary, _, address = s.recvmsg(65535, socket.CMSG_SPACE(AUXDATA.size))
    if address[2] == PACKET_OUTGOING:
        return None, None
    for level, kind, data in ancillary:
        if level == SOL_PACKET and kind == PACKET_AUXDATA:
            status, _, _, _, _, tci, _ = AUXDATA.unpack(data[: AUXDATA.size])
            if status & TP_STATUS_VLAN_VALID:
                return frame, tci & 0x0FFF
    return frame, None


def main():
    trunk_name, access_name, vid = sys.argv[1], sys.argv[2], int(sys.argv[3])
    trunk, access = open_port(trunk_name), open_port(access_name)
    tag = struct.pack("!HH", ETH_P_8021Q, vid)
    print(f"vlan-switch: VLAN {vid} tagged on {trunk_name}, untagged on {access_name}", flush=True)
    while True:
        ready, _, _ = select.select([trunk, access], [], [])
        for port in ready:
            frame, frame_vid = receive(port)
            if frame is None:
                continue
            if port is trunk and frame_vid == vid:
                access.send(frame)
            elif port is access:
                # After the two MAC addresses, as 802.1Q puts it.
                trunk.send(frame[:12] + tag + frame[12:])


if __name__ == "__main__":
    main()
