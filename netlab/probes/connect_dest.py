"""Where does ``connect()`` really go? Run inside a cgroup, it connects to ADDRESS PORT
(IPv4 or IPv6) and prints the destination the kernel chose after every cgroup connect4
or connect6 program ran.

A socket still in SYN_SENT has no peer name (``getpeername`` says ENOTCONN), so the
destination is read from the kernel's socket table (``/proc/self/net/tcp``) by the
socket's inode. Stand-alone on purpose: it is passed to ``python3 -c`` on the node.
"""

import json
import os
import select
import socket
import sys
import time


def _address(hex_text: str) -> str:
    """An address as /proc/net/tcp{,6} prints it: 32-bit words in host (little-endian) order."""
    raw = b"".join(int(hex_text[i : i + 8], 16).to_bytes(4, "little") for i in range(0, len(hex_text), 8))
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)


def destination(address: str, port: int, wait: float) -> dict:
    v6 = ":" in address
    asked = f"[{address}]:{port}" if v6 else f"{address}:{port}"
    sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        sock.connect((address, port))
    except BlockingIOError:
        pass
    except OSError as exc:
        return {"asked": asked, "error": exc.strerror}
    _, writable, _ = select.select([], [sock], [], wait)
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    inode = os.fstat(sock.fileno()).st_ino
    with open("/proc/self/net/tcp6" if v6 else "/proc/self/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if int(fields[9]) == inode:
                addr_hex, port_hex = fields[2].split(":")
                ip = _address(addr_hex)
                state = {"01": "ESTABLISHED", "02": "SYN_SENT"}.get(fields[3], fields[3])
                actual = f"[{ip}]:{int(port_hex, 16)}" if v6 else f"{ip}:{int(port_hex, 16)}"
                return {"asked": asked, "actual": actual, "state": state,
                        "connected": bool(writable) and err == 0}  # fmt: skip
    return {"asked": asked, "error": os.strerror(err) if err else "socket not found"}


def command(address: str, port: int, wait: str) -> list:
    """The argv that runs this probe with the node's python3, its source passed with
    ``-c``: no file of netlab's needs to be on the node (nor a real file here: the lab
    runs from a zipapp on remote nodes)."""
    import inspect

    return ["python3", "-c", inspect.getsource(sys.modules[__name__]), address, str(port), wait]


if __name__ == "__main__":
    time.sleep(0)
    print(
        json.dumps(
            destination(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]) if len(sys.argv) > 3 else 1.0)
        )
    )
