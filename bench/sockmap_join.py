"""stuck-tcp at Cilium scale: a 100k-entry sockhash read with the sockmap iterator and
joined with its sockets.

Builds, in a private network namespace (netlab's prefix), 50,000 loopback TCP connections
(100,000 established sockets) and a sockhash with Cilium's shape (``cilium_sock_ops``:
key 44, value 4) holding every socket under its peer's view, as Cilium keys them. Then
times what the investigation does with it:

- ``iterate``: the sockmap iterator (``iter/sockmap``) run once over the map (build is
  cached; pin, read, unpin) — the kernel hands each key with its socket
- ``parse``: its lines into a table (tuple, state, netns, handler)
- ``decode``: the keys with Cilium's sock_key layout
- ``judge``: every entry against its socket, state and namespace (``judge_by_socket``)
- baseline: ``bpftool -j map dump`` + ``json.loads``, which for a 4-byte-value sockhash
  gives keys and an ENOSPC error per entry, no socket

Run: ``.venv/bin/python bench/run.py sockmap_join`` (root; about 30 s).
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import timed  # noqa: E402

from netlab import naming  # noqa: E402
from netlab.collectors import bpf_objects, bpfmap, ss  # noqa: E402
from netlab.decoders import MapEntry, decode_sockmap, detect_layout  # noqa: E402
from netlab.errors import NetlabError  # noqa: E402
from netlab.investigations.stuck_tcp import join_by_tuple, judge_by_socket  # noqa: E402
from netlab.probes import bpf_iter, sockmap_sockets  # noqa: E402
from netlab.targets import LocalTarget  # noqa: E402

CONNECTIONS = 50_000  # two sockets each: 100,000 entries
WORKERS = 6  # processes holding the sockets (a process may have 20,000 files here)
PORT = 8080
# The addresses of the bench's namespace: the listeners' and each worker's client address.
OWNED = {"127.0.0.1", *(f"127.0.1.{1 + i}" for i in range(WORKERS))}
LAYOUT = detect_layout("cilium_sock_ops", 44, 4)[0]


def sock_key(peer: str, peer_port: int, local: str, local_port: int) -> bytes:
    """Cilium's sock_key for a socket, in its peer's view (sip:sport the peer)."""
    pad = bytes(12)
    ports = peer_port.to_bytes(2, "big") + bytes(2) + local_port.to_bytes(2, "big") + bytes(2)
    return socket.inet_aton(peer) + pad + socket.inet_aton(local) + pad + bytes([1, 0, 0, 0]) + ports


def worker(fd: int, index: int, count: int) -> None:
    """Make ``count`` connections to a listener of its own, put both ends of each in the
    sockhash, print ``ready`` and hold them until stdin closes."""
    resource.setrlimit(resource.RLIMIT_NOFILE, resource.getrlimit(resource.RLIMIT_NOFILE)[1:] * 2)
    listener = socket.socket()
    listener.bind(("127.0.0.1", PORT + index))
    listener.listen(4096)
    held: list[socket.socket] = []
    for start in range(0, count, 1000):
        clients = []
        for _ in range(start, min(count, start + 1000)):
            c = socket.socket()
            c.bind((f"127.0.1.{1 + index}", 0))
            c.connect(("127.0.0.1", PORT + index))
            clients.append(c)
        held += clients + [listener.accept()[0] for _ in clients]
    lib = bpfmap.libbpf()
    for s in held:
        local, local_port = s.getsockname()
        peer, peer_port = s.getpeername()
        value = ctypes.c_uint32(s.fileno())
        if (
            lib.bpf_map_update_elem(fd, sock_key(peer, peer_port, local, local_port), ctypes.byref(value), 0)
            != 0
        ):
            raise OSError(ctypes.get_errno(), f"sockhash update for {local}:{local_port}")
    print("ready", flush=True)
    sys.stdin.read()


def main() -> None:
    ns = f"{naming.PREFIX}_bench_sk"
    pin = f"/sys/fs/bpf/{naming.PREFIX}_bench_sockhash"
    subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
    subprocess.run(["rm", "-f", pin], check=False)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    workers: list[subprocess.Popen[str]] = []
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        subprocess.run(["bpftool", "map", "create", pin, "type", "sockhash", "key", "44", "value", "4",
                        "entries", "131072", "name", "cilium_sock_ops"], check=True)  # fmt: skip
        # The map's descriptor is handed to the workers: `ip netns exec` mounts a /sys of
        # its own, without the pin.
        map_fd = bpfmap.libbpf().bpf_obj_get(pin.encode())
        start = time.perf_counter()
        for index in range(WORKERS):
            argv = ["ip", "netns", "exec", ns, sys.executable, __file__, "worker", str(map_fd), str(index),
                    str(CONNECTIONS // WORKERS + (index < CONNECTIONS % WORKERS))]  # fmt: skip
            workers.append(subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                            pass_fds=(map_fd,)))  # fmt: skip
        for w in workers:
            assert w.stdout is not None
            if w.stdout.readline().strip() != "ready":
                raise RuntimeError("a bench worker failed to fill the sockhash")
        setup = time.perf_counter() - start
        os.close(map_fd)
        entries = 2 * CONNECTIONS
        map_id = json.loads(subprocess.run(["bpftool", "-j", "map", "show", "pinned", pin],
                                           capture_output=True, check=True).stdout)["id"]  # fmt: skip
        print(f"{entries} sockhash entries (key 44, value 4), one per established socket, "
              f"made and inserted by {WORKERS} processes in {setup:.1f} s")  # fmt: skip

        host = LocalTarget()
        try:
            # Built once here, so that the timed runs below measure the iterator alone.
            bpf_iter.run("sockmap_sockets.bpf.c", host, map_id=map_id, defines={"KEY_WORDS": "11"})
        except NetlabError as exc:
            # Some kernels refuse map element iterators (this lab VM's 6.18 build answers
            # EPERM); stuck-tcp then joins each key by its tuple, so that is what to time.
            print(f"  the sockmap iterator cannot run here ({exc.message}); timing the route stuck-tcp "
                  "takes instead: keys dumped, each joined by its tuple with the namespace's sockets")  # fmt: skip
            by_tuple(host, map_id, ns)
            return
        by_iterator(host, map_id, pin)
    finally:
        for w in workers:
            if w.stdin:
                w.stdin.close()
            w.wait(timeout=60)
        subprocess.run(["rm", "-f", pin], check=False)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def print_steps(steps: list[tuple[str, float]]) -> None:
    """The route's steps and their sum, as the table bench/README shows."""
    print(f"  {'step':<58} {'seconds':>8}")
    for label, seconds in steps:
        print(f"  {label:<58} {seconds:8.3f}")
    print(f"  {'netlab total (keys with their sockets, judged)':<58} {sum(s for _, s in steps):8.3f}")


def by_iterator(host: LocalTarget, map_id: int, pin: str) -> None:
    """The iterator's route: each key handed over with its socket."""
    t_iter, text = timed(lambda: bpf_iter.run("sockmap_sockets.bpf.c", host, map_id=map_id,
                                              defines={"KEY_WORDS": "11"}), repeat=2)  # fmt: skip
    symbols = sockmap_sockets.recvmsg_symbols(host)
    t_parse, found = timed(lambda: sockmap_sockets.parse(text, 11, symbols), repeat=2)

    def decode() -> pd.DataFrame:
        keys = [MapEntry(key=bytes.fromhex(k), value=None, line=i) for i, k in enumerate(found["key_hex"])]
        decoded = decode_sockmap(keys, layout=LAYOUT).drop(columns=["cookie"])
        return pd.concat([decoded, found.drop(columns=["key_hex"]).rename(columns={"family": "sock_family"})],
                         axis=1)  # fmt: skip

    t_decode, joined = timed(decode, repeat=2)
    netns_inode = int(found["netns"].iloc[0])
    owners: dict[int, set[str] | None] = {netns_inode: OWNED}
    t_judge, judged = timed(lambda: judge_by_socket(joined, owners), repeat=2)
    live = int((judged["status"] == "live, matches its key").sum())
    t_dump, dumped = timed(lambda: json.loads(subprocess.run(["bpftool", "-j", "map", "dump", "pinned", pin],
                                                             capture_output=True, check=False).stdout), repeat=1)  # fmt: skip
    print_steps(
        [
            ("iterate: sockmap iterator, pin + read + unpin", t_iter),
            ("parse: iterator lines -> table", t_parse),
            ("decode: keys with Cilium's sock_key layout, joined", t_decode),
            ("judge: each entry against its socket and namespace", t_judge),
        ]
    )
    print(f"  {'baseline: bpftool -j map dump + json.loads (keys only)':<58} {t_dump:8.3f}"
          f"   ({len(dumped or [])} entries, no socket)")  # fmt: skip
    print(f"  entries judged live: {live} of {len(judged)} ({found['key_hex'].nunique()} distinct keys); "
          f"{len(text) / 1e6:.1f} MB of iterator output")  # fmt: skip


def by_tuple(host: LocalTarget, map_id: int, ns: str) -> None:
    """The keys-only route: keys dumped, decoded, joined by tuple with the sockets sock_diag
    reads in the namespace, judged."""
    t_dump, keys = timed(lambda: bpf_objects.keys(host, map_id), repeat=1)
    t_decode, decoded = timed(lambda: decode_sockmap(keys, layout=LAYOUT), repeat=2)
    path = f"/run/netns/{ns}"
    inode = os.stat(path).st_ino
    t_ss, read = timed(lambda: ss.sockets_in(host, path, []), repeat=2)
    if read is None:
        raise SystemExit(f"bench: the namespace {ns} went away while it was read")
    sockets = read.assign(netns=inode)
    owners: dict[int, set[str] | None] = {inode: OWNED}
    t_join, joined = timed(lambda: join_by_tuple(decoded, sockets, owners), repeat=2)
    t_judge, judged = timed(lambda: judge_by_socket(joined, owners), repeat=2)
    live = int((judged["status"] == "live, matches its key").sum())
    print_steps(
        [
            ("dump: bpftool -j map dump (keys, ENOSPC per value)", t_dump),
            ("decode: keys with Cilium's sock_key layout", t_decode),
            ("sockets: nsenter ss -tine in the namespace, parsed", t_ss),
            ("join: each key with the socket of its reversed tuple", t_join),
            ("judge: each entry against its socket and namespace", t_judge),
        ]
    )
    print(f"  entries judged live: {live} of {len(judged)}; {len(sockets)} sockets read")


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        worker(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    else:
        main()
