"""Where does ``connect()`` really go? Run inside a cgroup, it connects to ADDRESS PORT
(IPv4 or IPv6) and prints the destination the kernel chose after every cgroup connect4
or connect6 program ran.

The socket is put in TCP repair mode first (``TCP_REPAIR``, as CRIU does; needs
CAP_NET_ADMIN): its ``connect()`` runs the cgroup connect programs and the routing
lookup, then goes straight to ESTABLISHED without sending a packet, and its close sends
nothing either. So the answer does not depend on the destination: a gone pod behind a
router that answers with ICMP unreachable (rate-limited, so sometimes and sometimes not)
kills a real SYN's socket before it can be read. Where repair mode is refused, a real SYN
is sent and the socket read at once, before waiting for the handshake.

``getpeername`` is not used: Cilium's getpeername programs translate the backend back to
the service address. The destination is read from the kernel's socket table
(``/proc/self/net/tcp``, ``tcp6``) by the socket's inode. Stand-alone on purpose: it is
passed to ``python3 -c`` on the node.
"""

import json
import os
import select
import socket
import sys

TCP_REPAIR = 19  # linux/tcp.h; Python's socket module does not name it


def _address(hex_text: str) -> str:
    """An address as /proc/net/tcp{,6} prints it: 32-bit words in host (little-endian) order."""
    raw = b"".join(int(hex_text[i : i + 8], 16).to_bytes(4, "little") for i in range(0, len(hex_text), 8))
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)


def _peer(sock: socket.socket, v6: bool) -> "str | None":
    """The socket's destination in the kernel's table, or None once the kernel closed it."""
    inode = os.fstat(sock.fileno()).st_ino
    with open("/proc/self/net/tcp6" if v6 else "/proc/self/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if int(fields[9]) == inode:
                addr_hex, port_hex = fields[2].split(":")
                ip, port = _address(addr_hex), int(port_hex, 16)
                return f"[{ip}]:{port}" if v6 else f"{ip}:{port}"
    return None


def destination(address: str, port: int, wait: float) -> dict:
    v6 = ":" in address
    asked = f"[{address}]:{port}" if v6 else f"{address}:{port}"
    family = socket.AF_INET6 if v6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 1)
        except OSError as exc:
            refused = exc.strerror
        else:
            try:
                sock.connect((address, port))
            except OSError as exc:
                return {"asked": asked, "error": exc.strerror, "how": "repair mode"}
            actual = _peer(sock, v6)
            if actual is None:
                return {
                    "asked": asked,
                    "error": "socket not found in the kernel's table",
                    "how": "repair mode",
                }
            return {"asked": asked, "actual": actual, "how": "repair mode: no packet sent"}
        sock.setblocking(False)
        how = f"a real SYN (repair mode refused: {refused})"
        try:
            sock.connect((address, port))
        except BlockingIOError:
            pass
        except OSError as exc:
            return {"asked": asked, "error": exc.strerror, "how": how}
        actual = _peer(sock, v6)  # before an ICMP error or a reset can close it
        _, writable, _ = select.select([], [sock], [], wait)
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if actual is None:
            return {"asked": asked, "error": os.strerror(err) if err else "socket not found", "how": how}
        return {"asked": asked, "actual": actual, "how": how,
                "connected": bool(writable) and err == 0}  # fmt: skip


def command(address: str, port: int, wait: str) -> list:
    """The argv that runs this probe with the node's python3, its source passed with
    ``-c``: no file of netlab's needs to be on the node (nor a real file here: the lab
    runs from a zipapp on remote nodes)."""
    import inspect

    return ["python3", "-c", inspect.getsource(sys.modules[__name__]), address, str(port), wait]


if __name__ == "__main__":
    print(
        json.dumps(
            destination(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]) if len(sys.argv) > 3 else 1.0)
        )
    )
