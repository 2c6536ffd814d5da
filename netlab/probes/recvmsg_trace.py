"""The seed's own method, where kprobes and matching headers exist: a bounded BCC trace of
``tcp_recvmsg`` / ``tcp_bpf_recvmsg`` calls per process with kernel stacks, and of
sockmap inserts the kernel refused (``sock_hash_update_common`` /
``sock_map_update_common`` returning an error, ``-EEXIST`` when a stale entry holds the
key), each with the socket's tuple and network namespace.

The program (``bpf/recvmsg_trace.bcc.c``) counts in the kernel and is read once at the
end, so the cost per call is a map update, not an event to user space; it runs on the
node as a :mod:`netlab.probes.bcc_trace` process, whose probes go with it however it
ends.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from netlab import params
from netlab.capability import Mechanism
from netlab.decoders import stacks
from netlab.probes import bcc, bcc_trace
from netlab.targets import Target

FUNCTIONS = ("tcp_recvmsg", "tcp_bpf_recvmsg", "tcp_bpf_recvmsg_parser",
             "sock_hash_update_common", "sock_map_update_common")  # fmt: skip
# In the order of ``enum fn``.
_PROBES = (
    bcc_trace.Probe("tcp_recvmsg", "rcv"),
    bcc_trace.Probe("tcp_bpf_recvmsg", "bpf_rcv"),
    bcc_trace.Probe("tcp_bpf_recvmsg_parser", "bpf_rcvp"),
    bcc_trace.Probe("sock_hash_update_common", "hupd", "upd_ret"),
    bcc_trace.Probe("sock_map_update_common", "mupd", "upd_ret"),
)
COMPILE_TIMEOUT = bcc_trace.COMPILE_TIMEOUT
ERRNO = {-17: "EEXIST", -16: "EBUSY", -12: "ENOMEM", -22: "EINVAL", -95: "EOPNOTSUPP", -2: "ENOENT"}
CALL_COLUMNS = ["pid", "comm", "function", "family", "local", "local_port", "peer", "peer_port", "netns",
                "count", "stack"]  # fmt: skip
REFUSED_COLUMNS = ["pid", "comm", "function", "error", "map_id", "family", "local", "local_port", "peer",
                   "peer_port", "netns", "count", "stack"]  # fmt: skip


@dataclass
class RecvmsgTrace(bcc_trace.BccTrace):
    """The trace, with its calls and refused inserts as tables."""

    calls: pd.DataFrame = field(default_factory=pd.DataFrame)
    refused: pd.DataFrame = field(default_factory=pd.DataFrame)


def _address(family: int, words: list[int]) -> str:
    raw = struct.pack("=4I", *words)  # the kernel's words in the node's byte order (x86: this one's)
    if family == socket.AF_INET:
        return str(ipaddress.IPv4Address(raw[:4]))
    v6 = ipaddress.IPv6Address(raw)
    return str(v6.ipv4_mapped or v6)  # a dual-stack socket's IPv4 peer, as Cilium keys it


def frames(rows: list[dict[str, Any]], kind: str, comms: dict[int, str] | None = None) -> pd.DataFrame:
    """The trace's rows (``call_key`` and its count) as a table: addresses, function and
    error names, stacks joined."""
    columns = CALL_COLUMNS if kind == "calls" else REFUSED_COLUMNS
    out = []
    for r in rows:
        t = r["t"]
        row = {"pid": r["tgid"], "comm": (comms or {}).get(r["tgid"], ""), "count": r["count"],
               "function": FUNCTIONS[r["fn"]] if 0 <= r["fn"] < len(FUNCTIONS) else str(r["fn"]),
               "family": {2: "ipv4", 10: "ipv6"}.get(t["family"], str(t["family"])),
               "error": ERRNO.get(r["err"], str(r["err"])), "map_id": r["map_id"],
               "local": _address(t["family"], t["laddr"]), "local_port": t["lport"],
               "peer": _address(t["family"], t["raddr"]), "peer_port": t["rport"], "netns": t["netns"],
               "stack": stacks.traced_path(r["stack"])}  # fmt: skip
        out.append({c: row[c] for c in columns})
    frame = pd.DataFrame(out, columns=columns)
    return frame.sort_values("count", ascending=False, ignore_index=True) if len(frame) else frame


def trace(
    target: Target,
    port: int,
    seconds: float = 8.0,
    *,
    max_events: int = 50_000,
    max_keys: int = 4096,
    during: Callable[[], Any] | None = None,
) -> RecvmsgTrace:
    """Trace for ``seconds`` (calls on sockets with ``port`` at either end) while
    ``during`` (a reproduction) runs; the probes are gone when this returns or raises."""
    port = params.port(port, "port")
    traced = bcc_trace.run(target, "recvmsg_trace.bcc.c", _PROBES, ("calls", "refused", "comms"), seconds,
                           what="the BCC recvmsg trace", defines={"PORT": port}, max_events=max_events,
                           max_keys=max_keys, during=during)  # fmt: skip
    comms = {r["key"]: r["comm"] for r in traced.tables["comms"]}
    return RecvmsgTrace(**vars(traced), calls=frames(traced.tables["calls"], "calls", comms),
                        refused=frames(traced.tables["refused"], "refused", comms))  # fmt: skip


KPROBE_TRACE = Mechanism(
    "BCC kprobes on tcp_recvmsg/tcp_bpf_recvmsg and sock_hash/sock_map_update_common (counted in the kernel, "
    "filtered by port)",
    (bcc.KPROBES, bcc.KERNEL_HEADERS),
)
