"""The pods' health endpoint: ``GET /health`` answers ``ok``; ``GET /slow/N`` answers
after N seconds; ``GET /bytes/N`` streams N bytes (a long transfer for cases that need
one). Run as
``python -m netlab.lab.health_server PORT [dual-stack]`` inside a pod's namespace."""

from __future__ import annotations

import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path == "/health":
            body = b"ok\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path.startswith("/slow/") and self.path[6:].isdigit():
            # A request that stays open for N seconds (at most 30): a flow to look at.
            time.sleep(min(int(self.path[6:]), 30))
            body = b"ok\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path.startswith("/bytes/") and self.path[7:].isdigit():
            size = min(int(self.path[7:]), 1 << 30)
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            chunk = b"x" * 65536
            while size > 0:
                self.wfile.write(chunk[: min(size, len(chunk))])
                size -= len(chunk)
        else:
            self.send_error(404)

    def log_message(self, format: str, *args: object) -> None:
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True


class Server6(Server):
    address_family = socket.AF_INET6
    v6only = 1

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, self.v6only)
        super().server_bind()


class DualStackServer(Server6):
    """One listener for both families, like a Go server on ``:PORT``: IPv4 clients get
    AF_INET6 sockets holding v4-mapped addresses."""

    v6only = 0


def main() -> None:
    # By default separate IPv4 and IPv6 listeners: IPv4 connections get AF_INET sockets.
    # ``dual-stack`` makes one listener for both, the other shape pods have.
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
    if sys.argv[2:] == ["dual-stack"]:
        DualStackServer(("::", port), Handler).serve_forever()
        return
    v6 = Server6(("::", port), Handler)
    threading.Thread(target=v6.serve_forever, daemon=True).start()
    Server(("0.0.0.0", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
