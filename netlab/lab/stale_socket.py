"""The two ends of the connections that leave case 000's stale sockmap entries.

``python -m netlab.lab.stale_socket server LAB PORT`` is a pod's previous incarnation:
it accepts connections on PORT and holds them, reading nothing, until killed. When its
pod is deleted while this process lives on (a leaked process or socket), the server
sockets stay ESTABLISHED in a namespace nobody can reach, and their sockhash entries,
keyed for the node's client ports, stay with them.

``python -m netlab.lab.stale_socket client LAB ADDR PORT LOCAL_PORT...`` is the node's
client: it connects to ADDR:PORT from each LOCAL_PORT, prints ``connected``, and on
SIGTERM closes every socket with a zero linger (an RST, no TIME_WAIT), so the ports are
free again at once, as a client that gave up.

``LAB`` (``<prefix>-<scenario>``) is on the command line so that teardown finds these
processes by name even after their namespace has lost its name.
"""

from __future__ import annotations

import signal
import socket
import struct
import sys
import time


def server(port: int) -> None:
    # Dual-stack, like a Go server on ":8080": IPv4 clients get AF_INET6 sockets holding
    # v4-mapped addresses, which Cilium keys as IPv4.
    listener = socket.socket(socket.AF_INET6)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    listener.bind(("::", port))
    listener.listen(64)
    held = []
    print("listening", flush=True)
    while True:
        conn, _ = listener.accept()
        held.append(conn)


def client(address: str, port: int, local_ports: list[int]) -> None:
    held = []
    for local in local_ports:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", local))
        sock.settimeout(5)
        sock.connect((address, port))
        held.append(sock)

    def close(*_: object) -> None:
        for sock in held:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        print("closed", flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, close)
    print("connected", flush=True)
    while True:
        time.sleep(3600)


def main() -> None:
    mode, args = sys.argv[1], sys.argv[3:]
    if mode == "server":
        server(int(args[0]))
    else:
        client(args[0], int(args[1]), [int(p) for p in args[2:]])


if __name__ == "__main__":
    main()
