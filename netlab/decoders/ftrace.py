"""Trace lines from tracefs (``trace``, ``trace_pipe``) and ``trace-cmd report``, as rows.

Every event line has the same head, ``TASK-PID [CPU] FLAGS TIMESTAMP: EVENT: BODY``:
``trace-cmd report`` leaves the flags out, the ``record-tgid`` option adds ``(TGID)``, and
``bpf_trace_printk`` output on kernels before the dedicated ``bpf_trace_printk`` event
shows as event ``0`` (the print event's caller address, which BPF leaves at 0). The
function_graph tracer's body (``2.441 us | foo();``, ``| foo() {``, ``1.378 us | }``) is read
into a duration, a depth and the function (an exit names the function it closes).

:data:`EVENT` is shared with the kernel-stack parser (:mod:`netlab.decoders.stacks`) and
the drop trace (:mod:`netlab.probes.drops`).
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

from netlab.decoders.damage import Damage, strict
from netlab.decoders.paste import is_elision

EVENT = re.compile(
    r"^\s*(?P<task>.+?)-(?P<pid>\d+)\s+(?:\(\s*(?P<tgid>[\d-]+)\)\s+)?\[(?P<cpu>\d+)\]\s+"
    r"(?:(?P<flags>[.a-zA-Z0-9]{4,5})\s+)?(?P<time>\d+\.\d+):\s+(?P<event>[^:]+?)(?::\s*(?P<body>.*))?$"
)
_GRAPH = re.compile(r"^(?:[+!#*@$]\s*)?(?:(?P<duration>[\d.]+)\s+us\s+)?\|\s?(?P<indent>\s*)(?P<call>\S.*)$")
_EMPTY_CPU = re.compile(r"^CPU\s*(\d+) is empty$")
_CPUS = re.compile(r"^cpus=(\d+)$")
COLUMNS = ["task", "pid", "cpu", "flags", "time", "event", "body"]
GRAPH_COLUMNS = ["graph", "function", "depth", "duration_us"]


def event_row(match: re.Match[str]) -> dict[str, Any]:
    """The common columns of a matched :data:`EVENT` line."""
    return {
        "task": match.group("task").strip(),
        "pid": int(match.group("pid")),
        "cpu": int(match.group("cpu")),
        "flags": match.group("flags") or "",
        "time": float(match.group("time")),
        "event": match.group("event").strip(),
        "body": (match.group("body") or "").strip(),
    }


def _graph(row: dict[str, Any], open_calls: dict[int, list[str]]) -> None:
    m = _GRAPH.match(row["body"])
    if m is None:
        return
    call = m.group("call").strip()
    duration = float(m.group("duration")) if m.group("duration") else None
    calls = open_calls.setdefault(row["cpu"], [])
    depth = len(m.group("indent")) // 2
    if call.startswith("}"):
        closed = re.search(r"/\*\s*(\S+)\s*\*/", call)  # the funcgraph-tail option names it
        function = closed.group(1) if closed else (calls.pop() if calls else "")
        if closed and calls:
            calls.pop()
        row.update(graph="exit", function=function, depth=depth, duration_us=duration)
    elif call.endswith("{"):
        function = call[:-1].strip().removesuffix("()")
        calls.append(function)
        row.update(graph="entry", function=function, depth=depth, duration_us=duration)
    else:
        row.update(
            graph="leaf", function=call.rstrip(";").removesuffix("()"), depth=depth, duration_us=duration
        )


def parse_events(text: str, *, damage: Damage | None = None) -> pd.DataFrame:
    """One row per event line; function_graph lines get ``graph``/``function``/``depth``/
    ``duration_us``. trace-cmd's header (``cpus=64``, ``CPU 3 is empty``) goes into
    ``frame.attrs`` (``cpus``, ``empty_cpus``); ``#`` comment lines are skipped. Any other
    line raises, naming it, unless ``damage`` tolerates it (then: a warning)."""
    damage = strict(damage)
    rows: list[dict[str, Any]] = []
    open_calls: dict[int, list[str]] = {}
    attrs: dict[str, Any] = {"cpus": None, "empty_cpus": []}
    for number, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if not s or s.startswith("#") or s == "--" or is_elision(s):
            continue
        match = EVENT.match(line)
        if match:
            row = event_row(match)
            if row["event"].startswith("funcgraph_"):
                _graph(row, open_calls)
            rows.append(row)
            continue
        empty = _EMPTY_CPU.match(s)
        if empty:
            attrs["empty_cpus"].append(int(empty.group(1)))
            continue
        cpus = _CPUS.match(s)
        if cpus:
            attrs["cpus"] = int(cpus.group(1))
            continue
        damage.report(f"trace line {number}: {s[:60]!r} is not 'TASK-PID [CPU] ... TIME: EVENT: ...'")
    columns = COLUMNS + (GRAPH_COLUMNS if any("graph" in r for r in rows) else [])
    frame = pd.DataFrame(rows, columns=columns)
    frame.attrs.update(attrs)
    return frame
