"""Case 000's stale sockmap entry, planted for real.

``python -m netlab.lab.stale_socket MAP_PIN KEY_HEX...`` makes, for each key, an
established TCP socket pair on loopback (in whatever namespace it runs: outside the accelerated cgroup, since a
socket can sit in only one map with an sk_msg program), inserts one end into the sockhash
under KEY_HEX with BPF_NOEXIST through libbpf, prints ``planted <cookie>...`` and keeps the
sockets alive until killed — like the leftover socket of the incident. Payload redirected
to it piles up in its receive queue, which nobody reads.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import socket
import sys

BPF_NOEXIST = 1


def plant(map_pin: str, key: bytes) -> tuple[socket.socket, socket.socket, socket.socket]:
    libbpf = ctypes.CDLL(ctypes.util.find_library("bpf") or "libbpf.so.1", use_errno=True)
    map_fd = libbpf.bpf_obj_get(map_pin.encode())
    if map_fd < 0:
        raise OSError(-map_fd, f"bpf_obj_get {map_pin}: {os.strerror(-map_fd)}")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    stale = socket.create_connection(listener.getsockname())
    peer, _ = listener.accept()
    key_buf = ctypes.create_string_buffer(key, len(key))
    value = ctypes.c_uint64(stale.fileno())
    rc = libbpf.bpf_map_update_elem(map_fd, key_buf, ctypes.byref(value), ctypes.c_uint64(BPF_NOEXIST))
    if rc < 0:
        raise OSError(-rc, f"sockhash update: {os.strerror(-rc)}")
    return listener, stale, peer


def main() -> None:
    map_pin = sys.argv[1]
    kept = [plant(map_pin, bytes.fromhex(key_hex)) for key_hex in sys.argv[2:]]
    cookies = [int.from_bytes(k[1].getsockopt(socket.SOL_SOCKET, 57, 8), "little") for k in kept]  # SO_COOKIE
    print("planted " + " ".join(map(str, cookies)), flush=True)
    signal.pause()


if __name__ == "__main__":
    main()
