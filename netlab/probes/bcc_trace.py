"""A bounded BCC kprobe trace that counts in the kernel, run as one process on the node.

Where kprobes and matching kernel headers exist, the seeds' own method is a kprobe on
the function that misbehaves, with kernel stacks. Every such trace here is the same
shape: a BCC program (``bpf/*.bcc.c``, ``PFX_`` replaced by netlab's prefix) counts in
hash maps and a stack map, bounded by a key cap and an event cap; the node's Python with
its OS BCC package compiles it, attaches the kprobes that exist in that kernel, waits for
the duration, the cap or the end of its standard input, prints the maps as JSON rows and
exits. The perf-event kprobes go with its file descriptors, so they are detached however
it ends; over ssh the caller's death closes its input. :func:`run` drives one, with a
reproduction running beside it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from netlab import naming, params
from netlab.errors import NetlabError
from netlab.probes import bcc, control
from netlab.probes.node_process import NodeProcess
from netlab.targets import Target

REPRODUCTION_GRACE = 60.0  # seconds a window waits past its duration for the reproduction
COMPILE_TIMEOUT = 180.0  # BCC compiles against the node's headers: slow on a small node

# Runs on the node: the standard library and the OS's bcc only (netlab is not there).
# Rows are the maps' keys and values as plain JSON: structs as objects, arrays as lists,
# char arrays as text; a key's ``stack_id`` is resolved into kernel frames.
_NODE_SCRIPT = r"""
import ctypes, json, select, signal, sys, time
from bcc import BPF

cfg = json.loads(sys.argv[1])
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
pfx = cfg["prefix"]
b = BPF(text=cfg["text"], cflags=cfg["cflags"])
attached, missing = [], []


def plain(v):
    if hasattr(v, "_fields_"):
        return {f[0]: plain(getattr(v, f[0])) for f in v._fields_}
    if isinstance(v, bytes):
        return v.split(b"\0", 1)[0].decode(errors="replace")
    if isinstance(v, ctypes.Array):
        return [plain(x) for x in v]
    return getattr(v, "value", v)


try:
    for fn, entry, ret, unless in cfg["probes"]:
        if b.ksymname(fn) == -1:
            missing.append(fn)
            continue
        if unless and b.ksymname(unless) != -1:
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
    stack_map = b[pfx + "_stacks"]

    def frames(stack_id):
        if stack_id < 0:
            return []
        try:
            return [b.ksym(a).decode(errors="replace") for a in stack_map.walk(stack_id)][:16]
        except KeyError:
            return []

    tables = {}
    for name in cfg["tables"]:
        rows = []
        for k, v in b[pfx + "_" + name].items():
            key = plain(k)
            row = dict(key) if isinstance(key, dict) else {"key": key}
            value = plain(v)
            row.update(value if isinstance(value, dict) else {"count": value})
            if "stack_id" in row:
                row["stack"] = frames(row["stack_id"])
            rows.append(row)
        tables[name] = rows
    print(json.dumps({"tables": tables, "events": events[0].value, "stopped": stopped}), flush=True)
finally:
    b.cleanup()
"""


@dataclass(frozen=True)
class Probe:
    """A kprobe (and optional kretprobe) on ``function`` running the program's
    ``PFX_<entry>`` (``PFX_<ret>``); skipped when ``unless`` exists in the kernel (a
    fallback for a function that may be inlined)."""

    function: str
    entry: str
    ret: str | None = None
    unless: str | None = None


@dataclass
class BccTrace:
    """What one trace counted: each requested map's rows, and how the trace went."""

    tables: dict[str, list[dict[str, Any]]]
    attached: list[str]
    missing: list[str]
    seconds: float
    events: int
    capped: bool
    during: Any = None
    notes: list[str] = field(default_factory=list)


def program_text(source: str) -> str:
    """``netlab/probes/bpf/SOURCE`` with ``PFX_`` made netlab's prefix."""
    text = resources.files("netlab.probes").joinpath("bpf", source).read_text()
    return text.replace("PFX_", f"{naming.PREFIX}_")


def run(
    target: Target,
    source: str,
    probes: Sequence[Probe],
    tables: Sequence[str],
    seconds: float,
    *,
    what: str,
    defines: dict[str, int] | None = None,
    max_events: int = 50_000,
    max_keys: int = 4096,
    during: Callable[[], Any] | None = None,
) -> BccTrace:
    """Trace for ``seconds`` while ``during`` (a reproduction) runs, waiting up to
    :data:`REPRODUCTION_GRACE` more for it to finish; the probes are gone when this
    returns or raises. ``defines`` become ``-D`` options beside the caps."""
    seconds = params.positive_number(seconds, "duration", maximum=600)
    max_events = params.count(max_events, "max_events", maximum=10_000_000)
    host = target.host()
    config = {
        "prefix": naming.PREFIX,
        "text": program_text(source),
        "cflags": [f"-D{k}={v}" for k, v in {**(defines or {}), "MAX_KEYS": max_keys,
                                              "MAX_STACKS": max_keys, "MAX_EVENTS": max_events}.items()],
        "probes": [[p.function, p.entry, p.ret, p.unless] for p in probes],
        "tables": list(tables),
        "seconds": seconds + (REPRODUCTION_GRACE if during else 0),
        "max_events": max_events,
    }  # fmt: skip
    argv = [bcc.node_python(host), "-c", _NODE_SCRIPT, json.dumps(config)]
    node = NodeProcess(host, argv, timeout=COMPILE_TIMEOUT + seconds + REPRODUCTION_GRACE + 30, what=what)
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
            control.tick(control.Progress(what, time.monotonic() - started, seconds))
            time.sleep(0.2)
        node.close_input()
        result = node.message("tables", 60, "report its counts")
    finally:
        node.stop()
    if "error" in outcome:
        err = outcome["error"]
        raise err if isinstance(err, NetlabError) else NetlabError(f"the reproduction failed: {err}")
    capped = result["stopped"] == "event cap"
    out = BccTrace(result["tables"], attached, missing, seconds, int(result["events"]), capped,
                   outcome.get("value"))  # fmt: skip
    if capped:
        out.notes.append(f"stopped at the cap of {max_events} events: counts are a lower bound")
    if missing:
        out.notes.append(f"not in this kernel, not traced: {', '.join(missing)}")
    return out
