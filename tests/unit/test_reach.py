"""The reachability probes tell "the node failed" from "our probe could not run"."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from netlab.collectors import reach
from netlab.targets import LocalTarget


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> int:
    httpd = HTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_address[1]
    httpd.shutdown()


def test_a_busy_local_port_is_not_a_node_failure(server: int) -> None:
    """curl cannot bind the client port (held here, as TIME_WAIT holds it between runs):
    the attempt is marked as not run, with the reason, instead of counting as a failure."""
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        tcp, web = reach.http(LocalTarget(), "127.0.0.1", server, "/", timeout=2, local_port=port)
    assert not tcp.ran and not web.ran
    assert "local port busy" in web.detail


def test_a_free_port_answers(server: int) -> None:
    tcp, web = reach.http(LocalTarget(), "127.0.0.1", server, "/", timeout=2)
    assert tcp.ran and tcp.ok and web.ok and web.detail == "HTTP 200"
