"""Where packets are dropped: a bounded trace of ``skb:kfree_skb``.

The mechanism here is a private tracefs instance with the event filtered to real drop
reasons (``reason > NOT_SPECIFIED``, so ``consume_skb`` and unexplained frees stay out)
and a ``stacktrace`` trigger with the same filter. Each drop gives its reason, the
symbolized location and the kernel stack; they are aggregated into (reason, location,
stack) counts. The event carries no addresses, so the trace is not narrowed to one flow:
drops of other traffic on the node appear too and are shown as such. Bounded by a
duration, an event cap (recording stops when reached) and the ring-buffer size.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from netlab import params
from netlab.capability import Mechanism
from netlab.decoders import stacks
from netlab.decoders.ftrace import EVENT
from netlab.errors import NetlabError
from netlab.probes import tracefs
from netlab.targets import Target

# Frees that are housekeeping rather than a packet lost on its way: queues purged when a
# socket closes. Shown apart from drops.
HOUSEKEEPING = {"QUEUE_PURGE"}
_KFREE = re.compile(r"protocol=(?P<protocol>\d+)\s+location=(?P<location>\S+)\s+reason:\s+(?P<reason>\w+)")
# Kernels that hash %p pointers print the location as a bare hash (location=00000000db8dd81c)
# when it cannot be symbolized: it names no function, the stack's first real frame does.
_HASHED = re.compile(r"^(?:0x)?[0-9a-f]{8,16}$")


def drop_reasons(target: Target) -> dict[str, int]:
    """The kernel's drop reason names and numbers, read from the event's format (they
    change between kernel versions)."""
    base = tracefs.mounts.tracefs(target)
    text = target.read_text(f"{base}/events/skb/kfree_skb/format")
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
               "protocol": int(body.group("protocol")), "reason": body.group("reason"), "location": location,
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


def summarize(events: pd.DataFrame) -> pd.DataFrame:
    """(reason, location, stack) -> count, most frequent first."""
    if events.empty:
        return pd.DataFrame(columns=["kind", "reason", "function", "location", "stack", "count"])
    return (
        events.groupby(["kind", "reason", "function", "location", "stack"], dropna=False)
        .size()
        .reset_index(name="count")
        .sort_values(["kind", "count"], ascending=[True, False], ignore_index=True)
    )


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


def trace(
    target: Target,
    seconds: float = 10.0,
    *,
    max_events: int = 20000,
    during: Callable[[], Any] | None = None,
    buffer_kb: int = 8192,
) -> DropTrace:
    """Trace drops for ``seconds`` while ``during`` (a reproduction) runs in the
    background, stopping early at ``max_events``; always removes the probe."""
    seconds = params.positive_number(seconds, "duration", maximum=3600)
    max_events = params.count(max_events, "max_events", maximum=10_000_000)
    host = target.host()
    reasons = drop_reasons(host)
    above = reasons.get("NOT_SPECIFIED", 2)
    condition = f"reason > {above}"
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
        inst.wait(seconds, step="drop trace", count_events=inst.entries, max_events=max_events)
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
    mechanism = f"tracefs instance: skb:kfree_skb filtered on '{condition}' with a stacktrace trigger (not flow-filtered)"
    result = DropTrace(events, summarize(events), mechanism, seconds, capped, outcome.get("value"))
    if capped:
        result.notes.append(f"stopped at the cap of {max_events} events: counts are a lower bound")
    return result


KFREE_SKB = Mechanism(
    "tracefs skb:kfree_skb event (drop reasons) + stacktrace trigger, in a private instance",
    (tracefs.TRACEPOINTS,),
)
