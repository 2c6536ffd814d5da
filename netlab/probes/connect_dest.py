"""Where does ``connect()`` really go? Run inside a cgroup, it connects to ADDRESS PORT
and prints the destination the kernel chose after every cgroup connect4 program ran.

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


def destination(address: str, port: int, wait: float) -> dict:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        sock.connect((address, port))
    except BlockingIOError:
        pass
    except OSError as exc:
        return {"asked": f"{address}:{port}", "error": exc.strerror}
    _, writable, _ = select.select([], [sock], [], wait)
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    inode = os.fstat(sock.fileno()).st_ino
    with open("/proc/self/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if int(fields[9]) == inode:
                addr_hex, port_hex = fields[2].split(":")
                ip = socket.inet_ntoa(int(addr_hex, 16).to_bytes(4, "little"))
                state = {"01": "ESTABLISHED", "02": "SYN_SENT"}.get(fields[3], fields[3])
                return {"asked": f"{address}:{port}", "actual": f"{ip}:{int(port_hex, 16)}",
                        "state": state, "connected": bool(writable) and err == 0}  # fmt: skip
    return {"asked": f"{address}:{port}", "error": os.strerror(err) if err else "socket not found"}


if __name__ == "__main__":
    time.sleep(0)
    print(
        json.dumps(
            destination(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]) if len(sys.argv) > 3 else 1.0)
        )
    )
