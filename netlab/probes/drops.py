"""Where a flow's packets are dropped: (reason, location, stack) counts over a window.

Mechanisms, in order of preference, chosen on the node:

1. A BPF program on ``tp_btf/kfree_skb`` (:mod:`netlab.probes.drop_counter`): filtered
   by the flow in the kernel (addresses, ports, protocol, parsed from the skb), counted
   there, one stack per distinct site. Kernels before 5.17 have no ``reason`` argument:
   the same program counts by location and stack only.
2. The same program on a kprobe of the function behind the tracepoint, where kprobes
   exist and the tracepoint cannot be used.
3. A private tracefs instance with ``skb:kfree_skb`` and a ``stacktrace`` trigger, for
   nodes without BTF: the event has no addresses, so it is filtered only as narrowly as
   its format allows (drop reasons, the flow's ethertype) and other traffic's drops show
   too; a stack is taken per event, which costs tens of percent at high drop rates.
   Bounded by a duration, an event cap (recording stops when reached) and the buffer.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from netlab import params
from netlab.capability import Check, Mechanism, Node, capability
from netlab.decoders import stacks
from netlab.decoders.ftrace import EVENT
from netlab.errors import NetlabError
from netlab.probes import bcc, bpf_build, drop_counter, tracefs
from netlab.targets import Target

# Frees that are housekeeping rather than a packet lost on its way: queues purged when a
# socket closes. Shown apart from drops.
HOUSEKEEPING = {"QUEUE_PURGE"}
# Before Linux 5.17 the event has no reason.
_KFREE = re.compile(
    r"protocol=(?P<protocol>\d+)\s+location=(?P<location>\S+)(?:\s+reason:\s+(?P<reason>\w+))?"
)
# Kernels that hash %p pointers print the location as a bare hash (location=00000000db8dd81c)
# when it cannot be symbolized: it names no function, the stack's first real frame does.
_HASHED = re.compile(r"^(?:0x)?[0-9a-f]{8,16}$")


@dataclass(frozen=True)
class Flow:
    """The flow whose drops are wanted; an empty address or a zero port is "any"."""

    client: str = ""
    server: str = ""
    server_port: int = 0
    client_port: int = 0
    protocol: str = "tcp"

    @property
    def version(self) -> int:
        """4 or 6, from the addresses given (0 when none is)."""
        for address in (self.client, self.server):
            if address:
                return 6 if ":" in address else 4
        return 0

    def __str__(self) -> str:
        def end(address: str, port: int) -> str:
            host = address or "*"
            host = f"[{host}]" if ":" in host else host
            return f"{host}:{port or '*'}"

        return f"{self.protocol} {end(self.client, self.client_port)} -> {end(self.server, self.server_port)}"


def event_format(target: Target) -> str:
    base = tracefs.mounts.tracefs(target)
    return target.read_text(f"{base}/events/skb/kfree_skb/format")


def drop_reasons(target: Target) -> dict[str, int]:
    """The kernel's drop reason names and numbers, read from the event's format (they
    change between kernel versions); empty before 5.17, which has no reasons."""
    text = event_format(target)
    return {name: int(num) for num, name in re.findall(r'\{\s*(\d+),\s*"(\w+)"\s*\}', text)}


def parse_trace(text: str) -> pd.DataFrame:
    """kfree_skb events with their stacks from a tracefs ``trace`` buffer.

    ``function`` is the location's function without compiler clone suffixes, or, when the
    location is only a hashed pointer, the stack's first frame that is not tracing
    machinery or the skb free API; ``stack`` leaves those frames out too.
    """
    rows: list[dict[str, Any]] = []
    pending: dict[int, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if line.lstrip().startswith("=>"):
            if current is not None:
                frame = stacks.base_function(line.split("=>", 1)[1].strip().split()[0])
                if not stacks.is_tracing_frame(frame):
                    current["stack"].append(frame)
            continue
        if line.rstrip().endswith("<stack trace>"):
            cpu_match = re.search(r"\[(\d+)\]", line)
            current = pending.pop(int(cpu_match.group(1)), None) if cpu_match else None
            continue
        match = EVENT.match(line)
        if not match:
            continue
        cpu = int(match.group("cpu"))
        current = None
        body = _KFREE.search(match.group("body") or "")
        if match.group("event").strip() != "kfree_skb" or not body:
            continue
        location = body.group("location")
        row: dict[str, Any] = {"time": float(match.group("time")), "task": match.group("task").strip(), "cpu": cpu,
               "protocol": int(body.group("protocol")), "reason": body.group("reason") or "", "location": location,
               "function": "" if _HASHED.match(location) else stacks.base_function(location), "stack": []}  # fmt: skip
        rows.append(row)
        pending[cpu] = row
    for row in rows:
        if not row["function"] and row["stack"]:
            row["function"] = row["stack"][0]
    frame = pd.DataFrame(
        rows, columns=["time", "task", "cpu", "protocol", "reason", "location", "function", "stack"]
    )
    frame["stack"] = frame["stack"].map(lambda s: " <- ".join(s[:8]))
    frame["kind"] = frame["reason"].map(lambda r: "housekeeping" if r in HOUSEKEEPING else "drop")
    return frame


SUMMARY_COLUMNS = ["kind", "reason", "function", "location", "stack", "src", "sport", "dst", "dport", "netns",
                   "interface", "count"]  # fmt: skip
_KEYS = SUMMARY_COLUMNS[:-1]


def summarize(events: pd.DataFrame) -> pd.DataFrame:
    """(reason, location, stack[, flow]) -> count, most frequent first."""
    if events.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    events = events.assign(**{c: events[c] if c in events else "" for c in _KEYS})
    return (
        events.groupby(_KEYS, dropna=False)
        .size()
        .reset_index(name="count")
        .sort_values(["kind", "count"], ascending=[True, False], ignore_index=True)
    )


def counted_frame(counted: drop_counter.Counted, reasons: dict[str, int], has_reason: bool) -> pd.DataFrame:
    """The in-kernel counts as the summary table: reasons named, stacks symbolized."""
    names = {num: name for name, num in reasons.items()}
    rows = []
    for r in counted.rows:
        frames = [stacks.base_function(f) for f in counted.stacks.get(r["stack_id"], [])]
        # The counter's own program is on the stack (a program that dropped, a tc one
        # say, is kept: it is the code that decided).
        frames = [
            f for f in frames if not stacks.is_tracing_frame(f) and not f.endswith(drop_counter.PROGRAM)
        ]
        reason = names.get(r["reason"], str(r["reason"])) if has_reason else ""
        rows.append({"kind": "housekeeping" if reason in HOUSEKEEPING else "drop", "reason": reason,
                     "function": stacks.base_function(r["location"]) if r["location"] else (frames[:1] or [""])[0],
                     "location": r["location"], "stack": " <- ".join(frames[:8]), "src": r["saddr"],
                     "sport": r["sport"], "dst": r["daddr"], "dport": r["dport"], "netns": r["netns"],
                     "interface": r["interface"], "count": r["count"]})  # fmt: skip
    frame = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    return frame.sort_values(["kind", "count"], ascending=[True, False], ignore_index=True)


@dataclass
class DropTrace:
    events: pd.DataFrame
    summary: pd.DataFrame
    mechanism: str
    seconds: float
    capped: bool
    during: Any = None
    notes: list[str] = field(default_factory=list)


REPRODUCTION_GRACE = 60.0  # seconds a window waits past its duration for the reproduction
_ETHERTYPE = {4: 0x0800, 6: 0x86DD}


def trace(
    target: Target,
    seconds: float = 10.0,
    *,
    flow: Flow | None = None,
    mechanism: Mechanism | None = None,
    has_reason: bool = True,
    max_events: int = 20000,
    during: Callable[[], Any] | None = None,
    buffer_kb: int = 8192,
    step: str = "drop trace",
) -> DropTrace:
    """Trace ``flow``'s drops for ``seconds`` while ``during`` (a reproduction) runs in
    the background, with ``mechanism`` (one of this module's, chosen on the node; the
    in-kernel counter by default), stopping early at ``max_events``; the probe is
    always removed. ``has_reason``: use the kernel's drop reasons (5.17+)."""
    seconds = params.positive_number(seconds, "duration", maximum=3600)
    max_events = params.count(max_events, "max_events", maximum=10_000_000)
    flow = flow or Flow()
    host = target.host()
    reasons = drop_reasons(host) if has_reason else {}
    if mechanism is KFREE_SKB:
        return _trace_tracefs(host, seconds, flow, reasons, max_events, during, buffer_kb, step)
    if mechanism is KPROBE_COUNTER:
        function = drop_counter.kprobe_function(host)
        variant = drop_counter.Variant("kprobe", has_reason and function != "kfree_skb", function)
    else:
        variant = drop_counter.Variant("tp_btf", has_reason)
    # NOT_DROPPED_YET and CONSUMED (a kprobe sees those frees) are not drops.
    min_reason = reasons.get("NOT_SPECIFIED", 0) if variant.has_reason else 0
    counted = drop_counter.run(target, variant, drop_counter.flow_filter(flow, min_reason=min_reason, cap=max_events),
                               seconds, cap=max_events, during=during,
                               grace=REPRODUCTION_GRACE if during else 0.0, step=step)  # fmt: skip
    summary = counted_frame(counted, reasons, variant.has_reason)
    result = DropTrace(summary, summary, f"{variant.describe}; flow {flow}", seconds,
                       counted.over_cap > 0 or counted.stopped == "event cap", counted.during)  # fmt: skip
    if result.capped:
        result.notes.append(f"stopped at the cap of {max_events} drops: counts are a lower bound")
    if counted.lost:
        result.notes.append(f"{counted.lost} drops not counted: the counter's maps were full")
    if not variant.has_reason:
        result.notes.append("no drop reasons (the kernel's tracepoint has none before 5.17, or they were not "
                            "wanted): drops are told apart by location and stack")  # fmt: skip
    return result


def _trace_tracefs(
    host: Target,
    seconds: float,
    flow: Flow,
    reasons: dict[str, int],
    max_events: int,
    during: Callable[[], Any] | None,
    buffer_kb: int,
    step: str,
) -> DropTrace:
    conditions = []
    if reasons:
        conditions.append(f"reason > {reasons.get('NOT_SPECIFIED', 2)}")
    if flow.version:
        conditions.append(f"protocol == {_ETHERTYPE[flow.version]}")
    condition = " && ".join(conditions) or None
    outcome: dict[str, Any] = {}

    def background() -> None:
        try:
            outcome["value"] = during() if during else None
        except Exception as exc:  # noqa: BLE001 - reported with the trace, not lost in a thread
            outcome["error"] = exc

    with tracefs.Instance(host, "drops", buffer_kb=buffer_kb) as inst:
        inst.enable("skb", "kfree_skb", filter=condition, stacktrace=True)
        worker = None
        if during:
            worker = threading.Thread(target=background, daemon=True)
            worker.start()
        inst.wait(seconds, step=step, count_events=inst.entries, max_events=max_events)
        if worker is not None and worker.is_alive() and inst.entries() < max_events:
            # The window covers the whole reproduction: on a slow (emulated, loaded) node
            # it outlasts ``seconds``, and its late packet is the one that matters. The
            # ring buffer bounds what is kept meanwhile.
            worker.join(timeout=REPRODUCTION_GRACE)
        inst.stop()
        capped = inst.entries() >= max_events
        text = inst.trace()
    if worker is not None:
        worker.join(timeout=30)
    if "error" in outcome:
        err = outcome["error"]
        raise err if isinstance(err, NetlabError) else NetlabError(f"the reproduction failed: {err}")
    events = parse_trace(text)
    mechanism = (f"tracefs instance: skb:kfree_skb filtered on '{condition or 'nothing'}' with a stacktrace "
                 "trigger (not flow-filtered: the event carries no addresses)")  # fmt: skip
    result = DropTrace(events, summarize(events), mechanism, seconds, capped, outcome.get("value"))
    if capped:
        result.notes.append(f"stopped at the cap of {max_events} events: counts are a lower bound")
    result.notes.append("not flow-filtered: other traffic's drops on the node are counted too")
    return result


# --- capabilities and mechanisms ------------------------------------------------------
@capability("drop_reasons", requires=[tracefs.TRACEPOINTS])
def DROP_REASONS(target: Target, node: Node) -> Check:
    """The kfree_skb tracepoint carries a drop reason (Linux 5.17+)."""
    text = event_format(target.host())
    if not re.search(r"field:[^;]*\breason;", text):
        return Check("drop_reasons", False, "skb:kfree_skb has no reason field (before Linux 5.17)")
    return Check(
        "drop_reasons", True, f"skb:kfree_skb has a reason field ({len(drop_reasons(target.host()))} reasons)"
    )


@capability("tp_btf", requires=[bpf_build.BTF_FILE, bpf_build.CLANG])
def TP_BTF(target: Target, node: Node) -> Check:
    """Load the drop counter on tp_btf/kfree_skb, attach it, detach it."""
    return drop_counter.try_variant(target, drop_counter.Variant("tp_btf", False), "tp_btf")


@capability("drop_kprobe", requires=[bpf_build.BTF_FILE, bpf_build.CLANG, bcc.KPROBES])
def DROP_KPROBE(target: Target, node: Node) -> Check:
    """Load the drop counter on a kprobe of the function behind kfree_skb, attach, detach."""
    function = drop_counter.kprobe_function(target.host())
    return drop_counter.try_variant(target, drop_counter.Variant("kprobe", False, function), "drop_kprobe")


IN_KERNEL = Mechanism("BPF program on tp_btf/kfree_skb: the flow's drops counted in the kernel by reason, "
                      "location and stack (one stack per site)", (TP_BTF,))  # fmt: skip
KPROBE_COUNTER = Mechanism("BPF program on a kprobe of kfree_skb_reason (or its successor): the flow's drops "
                           "counted in the kernel by reason, location and stack", (DROP_KPROBE,))  # fmt: skip
KFREE_SKB = Mechanism(
    "tracefs skb:kfree_skb event + stacktrace trigger in a private instance (not flow-filtered)",
    (tracefs.TRACEPOINTS,),
)
MECHANISMS = (IN_KERNEL, KPROBE_COUNTER, KFREE_SKB)
