"""The seed's own method, where kprobes and matching headers exist: a bounded BCC trace of
``tcp_recvmsg`` / ``tcp_bpf_recvmsg`` calls per process with kernel stacks, and of
sockmap inserts the kernel refused (``sock_hash_update_common`` /
``sock_map_update_common`` returning an error, ``-EEXIST`` when a stale entry holds the
key), each with the socket's tuple and network namespace.

The program (``bpf/recvmsg_trace.bcc.c``) counts in the kernel and is read once at the
end, so the cost per call is a map update, not an event to user space. It runs on the
node with the node's Python and its OS BCC package, as one process that holds every
probe: perf-event kprobes go with its file descriptors, so the probes are detached when
it exits however it exits. It stops at its duration, at the event cap, or when its
standard input closes — which is how the caller stops it, and what happens over ssh when
the caller dies (the pipe closes, ssh passes the end of input on).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import pandas as pd

from netlab import naming, params
from netlab.capability import Mechanism
from netlab.decoders import stacks
from netlab.errors import NetlabError
from netlab.probes import bcc, control
from netlab.probes.node_process import NodeProcess
from netlab.targets import Target

FUNCTIONS = ("tcp_recvmsg", "tcp_bpf_recvmsg", "tcp_bpf_recvmsg_parser",
             "sock_hash_update_common", "sock_map_update_common")  # fmt: skip
# (kernel function, kprobe handler, kretprobe handler) in the order of ``enum fn``.
_PROBES = (
    ("tcp_recvmsg", "rcv", None),
    ("tcp_bpf_recvmsg", "bpf_rcv", None),
    ("tcp_bpf_recvmsg_parser", "bpf_rcvp", None),
    ("sock_hash_update_common", "hupd", "upd_ret"),
    ("sock_map_update_common", "mupd", "upd_ret"),
)
REPRODUCTION_GRACE = 60.0  # seconds the window waits past its duration for the reproduction
COMPILE_TIMEOUT = 180.0  # BCC compiles against the node's headers: slow on a small node
ERRNO = {-17: "EEXIST", -16: "EBUSY", -12: "ENOMEM", -22: "EINVAL", -95: "EOPNOTSUPP", -2: "ENOENT"}
CALL_COLUMNS = ["pid", "comm", "function", "family", "local", "local_port", "peer", "peer_port", "netns",
                "count", "stack"]  # fmt: skip
REFUSED_COLUMNS = ["pid", "comm", "function", "error", "map_id", "family", "local", "local_port", "peer",
                   "peer_port", "netns", "count", "stack"]  # fmt: skip

# Runs on the node: the standard library and the OS's bcc only (netlab is not there).
_NODE_SCRIPT = r"""
import ipaddress, json, select, signal, struct, sys, time
from bcc import BPF

cfg = json.loads(sys.argv[1])
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
pfx = cfg["prefix"]
b = BPF(text=cfg["text"], cflags=cfg["cflags"])
attached, missing = [], []
try:
    for fn, entry, ret in cfg["probes"]:
        if b.ksymname(fn) == -1:
            missing.append(fn)
            continue
        b.attach_kprobe(event=fn, fn_name=pfx + "_" + entry)
        if ret:
            b.attach_kretprobe(event=fn, fn_name=pfx + "_" + ret)
        attached.append(fn)
    print(json.dumps({"ready": attached, "missing": missing}), flush=True)
    deadline = time.monotonic() + cfg["seconds"]
    events = b[pfx + "_events"]
    stopped = "duration"
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sys.stdin], [], [], 0.2)
        if ready and not sys.stdin.readline():
            stopped = "stopped by the caller"
            break
        if events[0].value >= cfg["max_events"]:
            stopped = "event cap"
            break
    comms = {k.value: v.comm.decode(errors="replace") for k, v in b[pfx + "_comms"].items()}
    stack_map = b[pfx + "_stacks"]

    def addr(family, words):
        raw = struct.pack("4I", *words)
        if family == 2:
            return str(ipaddress.IPv4Address(raw[:4]))
        v6 = ipaddress.IPv6Address(raw)
        return str(v6.ipv4_mapped or v6)  # a dual-stack socket's IPv4 peer, as Cilium keys it

    def frames(stack_id):
        if stack_id < 0:
            return []
        try:
            return [b.ksym(a).decode(errors="replace") for a in stack_map.walk(stack_id)][:16]
        except KeyError:
            return []

    def rows(name):
        out = []
        for k, v in b[name].items():
            t = k.t
            out.append({"pid": k.tgid, "comm": comms.get(k.tgid, ""), "fn": k.fn, "err": k.err,
                        "map_id": k.map_id, "family": t.family, "local": addr(t.family, t.laddr),
                        "local_port": t.lport, "peer": addr(t.family, t.raddr), "peer_port": t.rport,
                        "netns": t.netns, "count": v.value, "stack": frames(k.stack_id)})
        return out

    print(json.dumps({"calls": rows(pfx + "_calls"), "refused": rows(pfx + "_refused"),
                      "events": events[0].value, "stopped": stopped}), flush=True)
finally:
    b.cleanup()
"""


@dataclass
class RecvmsgTrace:
    calls: pd.DataFrame
    refused: pd.DataFrame
    attached: list[str]
    missing: list[str]
    seconds: float
    events: int
    capped: bool
    during: Any = None
    notes: list[str] = field(default_factory=list)


def program_text() -> str:
    source = resources.files("netlab.probes").joinpath("bpf/recvmsg_trace.bcc.c").read_text()
    return source.replace("PFX_", f"{naming.PREFIX}_")


def frames(rows: list[dict[str, Any]], kind: str) -> pd.DataFrame:
    """The node script's rows as a table: function names, error names, stacks joined."""
    columns = CALL_COLUMNS if kind == "calls" else REFUSED_COLUMNS
    out = []
    for r in rows:
        row = {**r, "function": FUNCTIONS[r["fn"]] if 0 <= r["fn"] < len(FUNCTIONS) else str(r["fn"]),
               "family": {2: "ipv4", 10: "ipv6"}.get(r["family"], str(r["family"])),
               "error": ERRNO.get(r["err"], str(r["err"])),
               "stack": " <- ".join(f for f in (stacks.base_function(s) for s in r["stack"])
                                    if not stacks.is_tracing_frame(f))}  # fmt: skip
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
    seconds = params.positive_number(seconds, "duration", maximum=600)
    max_events = params.count(max_events, "max_events", maximum=10_000_000)
    host = target.host()
    config = {
        "prefix": naming.PREFIX,
        "text": program_text(),
        "cflags": [
            f"-DPORT={port}",
            f"-DMAX_KEYS={max_keys}",
            f"-DMAX_STACKS={max_keys}",
            f"-DMAX_EVENTS={max_events}",
        ],  # fmt: skip
        "probes": [list(p) for p in _PROBES],
        "seconds": seconds + (REPRODUCTION_GRACE if during else 0),
        "max_events": max_events,
    }
    argv = [bcc.node_python(host), "-c", _NODE_SCRIPT, json.dumps(config)]
    node = NodeProcess(host, argv, timeout=COMPILE_TIMEOUT + seconds + REPRODUCTION_GRACE + 30,
                       what="the BCC recvmsg trace")  # fmt: skip
    outcome: dict[str, Any] = {}
    try:
        ready = node.message("ready", COMPILE_TIMEOUT, "attach its kprobes")
        attached, missing = list(ready["ready"]), list(ready["missing"])
        started = time.monotonic()
        worker = None
        if during:

            def background() -> None:
                try:
                    outcome["value"] = during()
                except Exception as exc:  # noqa: BLE001 - reported with the trace
                    outcome["error"] = exc

            worker = threading.Thread(target=background, daemon=True)
            worker.start()
        while time.monotonic() - started < seconds or (
            worker is not None
            and worker.is_alive()
            and time.monotonic() - started < seconds + REPRODUCTION_GRACE
        ):
            if node.proc.poll() is not None:
                break
            control.tick(control.Progress("recvmsg trace", time.monotonic() - started, seconds))
            time.sleep(0.2)
        node.close_input()
        result = node.message("calls", 60, "report its counts")
    finally:
        node.stop()
    if "error" in outcome:
        err = outcome["error"]
        raise err if isinstance(err, NetlabError) else NetlabError(f"the reproduction failed: {err}")
    capped = result["stopped"] == "event cap"
    out = RecvmsgTrace(frames(result["calls"], "calls"), frames(result["refused"], "refused"), attached,
                       missing, seconds, int(result["events"]), capped, outcome.get("value"))  # fmt: skip
    if capped:
        out.notes.append(f"stopped at the cap of {max_events} calls: counts are a lower bound")
    if missing:
        out.notes.append(f"not in this kernel, not traced: {', '.join(missing)}")
    return out


KPROBE_TRACE = Mechanism(
    "BCC kprobes on tcp_recvmsg/tcp_bpf_recvmsg and sock_hash/sock_map_update_common (counted in the kernel, "
    "filtered by port)",
    (bcc.KPROBES, bcc.KERNEL_HEADERS),
)
