"""Backend servers for xdp-lb labs (embedded in the xdp-lb-lab crate).

usage: python3 -c <this script> http|udp PORT NAME

Answers every HTTP request (HTTP/1.1, keep-alive) or UDP datagram with NAME,
except GET /download/BYTES/PER_SECOND: BYTES bytes (byte i is i % 251), paced at
PER_SECOND in 16 KiB writes (a long transfer for failover tests),
listening on all addresses (IPv4 and IPv6) so it serves both its own address and
a VIP on `lo` (LVS-DR).
Prints "ready" on stdout once the socket is bound, then serves until killed.
"""

import select
import socket
import struct
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# linux/in.h; Python's socket module does not export it.
IP_PKTINFO = 8


def ready():
    print("ready", flush=True)


def serve_http(port, name):
    body = (name + "\n").encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes; without TCP_NODELAY the body
        # waits for the client's delayed ACK on every keep-alive request.
        disable_nagle_algorithm = True

        def answer(self, with_body):
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Backend", name)
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def do_GET(self):
            parts = self.path.strip("/").split("/")
            if len(parts) == 3 and parts[0] == "download":
                self.download(int(parts[1]), int(parts[2]))
            else:
                self.answer(True)

        def download(self, total, per_second):
            pattern = bytes(i % 251 for i in range(251)) * 80
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(total))
            self.send_header("X-Backend", name)
            self.end_headers()
            start = time.monotonic()
            sent = 0
            chunk = 16384
            while sent < total:
                n = min(chunk, total - sent)
                offset = sent % 251
                self.wfile.write(pattern[offset : offset + n])
                sent += n
                # Paced: the transfer lasts total / per_second seconds.
                ahead = sent / per_second - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)

        def do_HEAD(self):
            self.answer(False)

        def log_message(self, format, *args):
            pass

    class Server(ThreadingHTTPServer):
        # Dual stack: IPv4 clients arrive as v4-mapped addresses on the same socket.
        address_family = socket.AF_INET6
        allow_reuse_address = True
        daemon_threads = True
        request_queue_size = 256

        def server_bind(self):
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            super().server_bind()

    server = Server(("::", port), Handler)
    ready()
    server.serve_forever()


def serve_udp(port, name):
    reply = name.encode()
    # One socket per family: each reads the address a datagram was sent to from its
    # family's packet info, which a dual-stack socket would not give for both.
    v4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    v4.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    v4.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    v4.bind(("0.0.0.0", port))
    v6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    v6.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
    v6.bind(("::", port))
    ready()
    while True:
        readable, _, _ = select.select([v4, v6], [], [])
        for sock in readable:
            answer(sock, sock is v6, reply)


def answer(sock, ipv6, reply):
    _data, ancdata, _flags, peer = sock.recvmsg(65535, socket.CMSG_SPACE(20))
    # Reply from the address the datagram was sent to (the VIP in DR mode), not from
    # whatever source address the route would pick.
    anc = []
    for level, ctype, cdata in ancdata:
        if not ipv6 and level == socket.IPPROTO_IP and ctype == IP_PKTINFO and len(cdata) >= 12:
            _ifindex, _spec_dst, local = struct.unpack("i4s4s", cdata[:12])
            anc = [(socket.IPPROTO_IP, IP_PKTINFO, struct.pack("i4s4s", 0, local, bytes(4)))]
        if ipv6 and level == socket.IPPROTO_IPV6 and ctype == socket.IPV6_PKTINFO and len(cdata) >= 20:
            local, _ifindex = struct.unpack("16si", cdata[:20])
            anc = [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, struct.pack("16si", local, 0))]
    try:
        sock.sendmsg([reply], anc, 0, peer)
    except OSError as e:
        print(f"udp reply to {peer} failed: {e}", file=sys.stderr, flush=True)


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("http", "udp"):
        sys.exit("usage: backend_server.py http|udp PORT NAME")
    kind, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if kind == "http":
        serve_http(port, name)
    else:
        serve_udp(port, name)


if __name__ == "__main__":
    main()
