#!/usr/bin/env python3
"""Stand-in for Kickstand's HTTP side, used only to check the netboot bed.

Serves /boot/standin.ipxe (the URL ProxyDHCP hands every iPXE: it chains
to /boot/<mac>.ipxe), /boot/<mac>.ipxe (STATEDIR/boot/<mac>.ipxe if
bed-host.sh put one there, else a script booting the stand-in installer from
the bed's mirror), /ks/<mac> (a minimal kickstart) and accepts
POST /api/hosts/<mac>/installing|installed (STATEDIR/<mac>.<phase>). Every
request is logged.
Usage: standin-http.py ADDRESS PORT STATEDIR MIRROR_TREE
"""
import http.server
import os
import re
import socketserver
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
        if path == "/boot/standin.ipxe":
            # One URL for every machine; iPXE fills in ${mac} itself.
            return self.reply(200, f"#!ipxe\nchain http://{address}:{port}/boot/${{mac}}.ipxe\n")
        m = re.match(r"^/boot/(.+)\.ipxe$", path)
        if m and MAC.match(m.group(1)):
            own = os.path.join(state, "boot", m.group(1) + ".ipxe")
            if os.path.exists(own):
                with open(own) as f:
                    return self.reply(200, f.read())
            pxe = f"http://{address}:8081/{tree}/images/pxeboot"
            return self.reply(200, (
                "#!ipxe\n"
                f"kernel {pxe}/vmlinuz initrd=initrd.img console=ttyS0 "
                f"inst.ks=http://{address}:{port}/ks/${{mac}}\n"
                f"initrd --name initrd.img {pxe}/initrd.img\n"
                "boot\n"))
        m = re.match(r"^/ks/([^?]+)", path)
        if m and MAC.match(m.group(1)):
            # Callbacks as Kickstand writes them: the kickstart's own URLs,
            # with a (here meaningless) build token.
            base = f"http://{address}:{port}/api/hosts/{m.group(1)}"
            return self.reply(200, (
                "text\nurl --url=http://mirror/\n%packages\n@core\n%end\n"
                f"%pre\ncurl -X POST '{base}/installing?token=standin'\n%end\n"
                f"%post\ncurl -X POST '{base}/installed?token=standin'\n%end\n"
                f"%onerror\ncurl -X POST '{base}/failed?token=standin'\n%end\n"))
        self.reply(404, "not found\n")

    def do_POST(self):
        path = urllib.parse.unquote(self.path).split("?")[0]
        m = re.match(r"^/api/hosts/(.+)/(installing|installed|failed)$", path)
        if m and MAC.match(m.group(1)):
            open(os.path.join(state, m.group(1) + "." + m.group(2)), "w").close()
            return self.reply(200, "ok\n")
        self.reply(404, "not found\n")

    def log_message(self, fmt, *args):
        print("standin-http: " + fmt % args, flush=True)


class Server(http.server.ThreadingHTTPServer):
    def server_bind(self):
        # HTTPServer.server_bind looks up the FQDN of the address; there is
        # no DNS in the bed, so that only costs a resolver timeout.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = address, port


Server((address, port), Handler).serve_forever()
