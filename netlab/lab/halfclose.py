"""Case 001's traffic pattern: a client that pulls over two connections, one of which
the server half-closes early (as git's smart protocol can), and that later sends on the
half-closed one.

``python -m netlab.lab.halfclose server PORT`` runs in the "remote" namespace;
``python -m netlab.lab.halfclose client ADDRESS PORT SECONDS`` runs in a pod, prints one
JSON line and exits (``noise ADDRESS PORT`` sends other traffic, a datagram every 50 ms): ``half_closed_send`` is ``"ok"`` when the late data got through and
the kernel's error (``ECONNREFUSED`` after an ICMP port-unreachable) when it did not.
"""

from __future__ import annotations

import errno
import json
import socket
import sys
import threading
import time


def serve(port: int) -> None:
    listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    listener.bind(("::", port))
    listener.listen(16)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_handle, args=(conn,), daemon=True).start()


def _handle(conn: socket.socket) -> None:
    with conn:
        request = conn.recv(64).decode(errors="replace").split()
        if request[:1] == ["A"]:
            # The ref advertisement is sent, then our side is done writing (FIN): the
            # connection is half-closed while the client keeps it open.
            conn.sendall(b"header\n")
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(4096):
                pass
        elif request[:1] == ["B"] and len(request) == 2:
            deadline = time.monotonic() + min(float(request[1]), 30)
            chunk = b"p" * 16384
            while time.monotonic() < deadline:
                conn.sendall(chunk)
                time.sleep(0.01)


def client(address: str, port: int, seconds: float) -> dict[str, object]:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    a = socket.create_connection((address, port), timeout=5)
    a.sendall(b"A\n")
    header = b""
    while chunk := a.recv(64):
        header += chunk  # until the server's FIN
    b = socket.socket(family, socket.SOCK_STREAM)
    b.settimeout(5)
    b.connect((address, port))
    b.sendall(f"B {seconds}\n".encode())
    pulled = 0
    while chunk := b.recv(65536):
        pulled += len(chunk)
    b.close()
    # Back on the half-closed connection: the late packet of that flow.
    a.sendall(b"done\n")
    time.sleep(1.0)
    err = a.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    result = "ok" if err == 0 else errno.errorcode.get(err, str(err))
    a.close()
    return {"header": header.decode().strip(), "pulled_bytes": pulled, "half_closed_send": result}


def noise(address: str, port: int) -> None:
    """Other traffic: a datagram every 50 ms, for as long as the lab runs."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    while True:
        try:
            sock.sendto(b"q", (address, port))
        except OSError:
            pass
        time.sleep(0.05)


def main() -> None:
    if sys.argv[1] == "server":
        serve(int(sys.argv[2]))
    elif sys.argv[1] == "noise":
        noise(sys.argv[2], int(sys.argv[3]))
    else:
        print(json.dumps(client(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))), flush=True)


if __name__ == "__main__":
    main()
