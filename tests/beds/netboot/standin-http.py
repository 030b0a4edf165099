#!/usr/bin/env python3
"""Stand-in for Kickstand's HTTP side, used only to check the netboot bed.

Serves /boot/<mac>.ipxe (a script booting the stand-in installer from the
bed's mirror), /ks/<mac> (a minimal kickstart) and accepts
POST /api/hosts/<mac>/installed. Every request is logged to stdout.
Usage: standin-http.py ADDRESS PORT STATEDIR MIRROR_TREE
"""
import http.server
import os
import re
import sys
import urllib.parse

address, port, state, tree = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


class Handler(http.server.BaseHTTPRequestHandler):
    def reply(self, code, body):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        # iPXE percent-encodes the colons of a MAC in a DHCP-supplied URL.
        path = urllib.parse.unquote(self.path)
        m = re.match(r"^/boot/(.+)\.ipxe$", path)
        if m and MAC.match(m.group(1)):
            mac = m.group(1)
            if os.path.exists(os.path.join(state, mac + ".installed")):
                return self.reply(200, "#!ipxe\necho local boot\nexit\n")
            pxe = f"http://{address}:8081/{tree}/images/pxeboot"
            return self.reply(200, (
                "#!ipxe\n"
                f"kernel {pxe}/vmlinuz initrd=initrd.img console=ttyS0 "
                f"inst.ks=http://{address}:{port}/ks/{mac}\n"
                f"initrd {pxe}/initrd.img\n"
                "boot\n"))
        m = re.match(r"^/ks/(.+)$", path)
        if m and MAC.match(m.group(1)):
            return self.reply(200, "text\nurl --url=http://mirror/\n%packages\n@core\n%end\n")
        self.reply(404, "not found\n")

    def do_POST(self):
        m = re.match(r"^/api/hosts/(.+)/installed$", urllib.parse.unquote(self.path))
        if m and MAC.match(m.group(1)):
            open(os.path.join(state, m.group(1) + ".installed"), "w").close()
            return self.reply(200, "ok\n")
        self.reply(404, "not found\n")

    def log_message(self, fmt, *args):
        print("standin-http: " + fmt % args, flush=True)


http.server.ThreadingHTTPServer((address, port), Handler).serve_forever()
