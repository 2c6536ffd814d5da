"""Kernel stacks as tools print them, one row per stack.

Read here: ftrace (a ``stacktrace`` trigger or perf-tools ``kprobe -s``: ``<stack trace>``
then `` => func`` lines, which belong to the event printed just before on the same CPU),
``trace-cmd report`` (`` => func (ffffffff...)``), bpftrace ``kstack`` (``func+233``, decimal
offsets, stacks separated by blank lines, or as ``@[ ... ]: count`` map keys), ``perf
script`` (``\\tffffffff81a2b3c4 func+0x94 ([kernel.kallsyms])`` under a sample line) and BCC
tools (``b'func+0x90'`` from Python's bytes repr, or plain ``func+0x90``, under the tool's
header and event rows). Frames are innermost first, as all these tools print them.

Two things make stacks hard to compare across kernels: compiler clones (``.isra.0``,
``.part.0``, ``.constprop.0``, ``.cold``) and the tracing machinery's own frames at the top
(``__traceiter_kfree_skb``, ``trace_event_raw_event_*``, ``kprobe_*``). :func:`base_function`
removes the clone suffix, :func:`is_tracing_frame` recognises the machinery (and the skb
free/drop API a drop passes through), and each stack's ``top`` is its first frame that is
neither: where the traced thing happened.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pandas as pd

from netlab.decoders.damage import Damage, strict
from netlab.decoders.ftrace import EVENT, event_row
from netlab.decoders.paste import command_of, is_elision
from netlab.errors import DecodeError

_CLONE = re.compile(r"(?:\.(?:part|isra|constprop|cold|llvm|lto_priv|localalias|clone)(?:\.\d+)?)+$")
_TRACING = re.compile(
    r"^(?:__traceiter_|trace_event_raw_event_|perf_trace_|__bpf_trace_|bpf_trace_run\d|trace_call_bpf$"
    r"|kprobe_(?:ftrace_handler|dispatcher|perf_func|int3_handler|trace_func)|kretprobe_|__kretprobe_|"
    r"pre_handler_kretprobe|aggr_pre_handler|ftrace_(?:regs_)?(?:caller|call|ops_list_func|trampoline)"
    r"|arch_ftrace_ops_list_func|bpf_trampoline_|fprobe_|rethook_|perf_callchain|perf_swevent_|trace_event_buffer_)"
)
# The skb free/drop API: a drop passes through these, the caller decided it.
_DROP_API = frozenset(
    {"kfree_skb", "kfree_skb_reason", "kfree_skb_list_reason", "sk_skb_reason_drop", "__kfree_skb",
     "kfree_skb_partial", "consume_skb", "__dev_kfree_skb_any", "dev_kfree_skb_any_reason"}
)  # fmt: skip
_SYMBOL = re.compile(
    r"^(?P<name>[^\s+]+?)(?:\+(?P<offset>0x[0-9a-fA-F]+|\d+)(?:/(?P<size>0x[0-9a-fA-F]+))?)?"
    r"(?:\s+\[(?P<module>[^\]]+)\])?(?:\s+\((?P<address>[0-9a-fA-F]+)\))?$"
)
_PERF_FRAME = re.compile(r"^(?P<address>[0-9a-fA-F]{4,16})\s+(?P<symbol>\S.*?)\s+\((?P<dso>[^()]*)\)$")
_BYTES_FRAME = re.compile(r"^b(?P<q>['\"])(?P<symbol>[^'\"]*)(?P=q)$")
_PLAIN_FRAME = re.compile(
    r"^(?:(?P<address>(?:0x)?[0-9a-fA-F]{8,16})\s+)?"
    r"(?P<symbol>[A-Za-z_.$][\w.$]*\+(?:0x[0-9a-fA-F]+|\d+)(?:/0x[0-9a-fA-F]+)?(?:\s+\[[\w.-]+\])?)$"
)
_PERF_SAMPLE = re.compile(
    r"^\s*(?P<task>\S.*?)\s+(?P<pid>\d+)(?:/(?P<tid>\d+))?\s+\[(?P<cpu>\d+)\]\s+(?P<time>\d+\.\d+):\s+"
    r"(?:(?P<period>\d+)\s+)?(?P<event>[\w:.-]+):\s*(?P<body>.*)$"
)
_BCC_HEADER = re.compile(r"^[A-Z][A-Z0-9_:()|>/ -]*[A-Z)]$")
_ANNOTATION = re.compile(r"\s{2,}(?:#|//)\s?.*$|\s+(?:#|//)\s*<--.*$")
_MAP_OPEN = re.compile(r"^@\w*\[$")
_MAP_CLOSE = re.compile(r"^\]:\s*(\d+)$")
COLUMNS = ["stack", "line", "source", "task", "pid", "cpu", "flags", "time", "event", "detail", "context",
           "top", "frames", "depth", "elided", "count"]  # fmt: skip


def base_function(symbol: str) -> str:
    """The function a symbol belongs to, without compiler clone suffixes or an offset:
    ``tcp_v4_rcv.part.0+0x12`` -> ``tcp_v4_rcv``."""
    return _CLONE.sub("", symbol.split("+", 1)[0])


def is_tracing_frame(symbol: str) -> bool:
    """Whether a frame is tracing machinery or the skb free/drop API, not the code traced."""
    name = base_function(symbol)
    return bool(_TRACING.match(name)) or name in _DROP_API


def traced_path(frames: tuple[str, ...] | list[str]) -> str:
    """A kernel stack as one line, innermost first, without tracing machinery:
    ``ip6_pkt_drop <- __netif_receive_skb_one_core <- ...``."""
    return " <- ".join(f for f in (base_function(s) for s in frames) if not is_tracing_frame(f))


def top_frame(frames: tuple[str, ...] | list[str]) -> str:
    """The first frame that is not tracing machinery (its function), or ``""``."""
    return next((base_function(f) for f in frames if not is_tracing_frame(f)), "")


@dataclass(frozen=True)
class Frame:
    """One frame: the symbol as printed (offset removed), its offset, module, address."""

    symbol: str
    offset: int | None = None
    module: str = ""
    address: str = ""

    @property
    def function(self) -> str:
        return base_function(self.symbol)


def _symbol(text: str, address: str = "", module: str = "") -> Frame | None:
    m = _SYMBOL.match(text.strip())
    if m is None:
        return None
    off = m.group("offset")
    offset = None if off is None else int(off, 16) if off.startswith("0x") else int(off)
    return Frame(m.group("name"), offset, m.group("module") or module, m.group("address") or address)


def parse_frame(line: str) -> tuple[str, Frame] | None:
    """(source, frame) for a stack frame line in any of the forms read here, else None."""
    s = _ANNOTATION.sub("", line).strip()
    if not s:
        return None
    if s.startswith("=>"):
        body = s[2:].strip()
        if body.startswith("<") and body.endswith(">"):  # a user-space address
            return "ftrace", Frame(body, address=body.strip("<>"))
        frame = _symbol(body)
        return ("ftrace", frame) if frame else None
    m = _BYTES_FRAME.match(s)
    if m:
        frame = _symbol(m.group("symbol"))
        return ("bcc", frame) if frame else None
    m = _PERF_FRAME.match(s)
    if m:
        frame = _symbol(m.group("symbol"), address=m.group("address"), module=m.group("dso").strip("[]"))
        return ("perf", frame) if frame else None
    m = _PLAIN_FRAME.match(s)
    if m:
        frame = _symbol(m.group("symbol"), address=m.group("address") or "")
        if frame is None:
            return None
        hex_offset = "+0x" in m.group("symbol")
        return ("bcc" if hex_offset else "bpftrace"), frame
    return None


@dataclass
class _Stack:
    line: int
    source: str
    owner: dict[str, Any]
    context: str
    frames: list[Frame]
    elided: bool = False
    count: int | None = None


class _StackParser:
    def __init__(self, damage: Damage):
        self.damage = damage
        self.stacks: list[_Stack] = []
        self.current: _Stack | None = None
        self.context: list[tuple[int, str]] = []
        self.by_cpu: dict[int, dict[str, Any]] = {}  # ftrace: the last event on each CPU
        self.owner: dict[str, Any] | None = None  # perf sample or BCC event row awaiting frames
        self.header: list[str] | None = None  # a BCC tool's column header
        self.in_map = False

    def end(self) -> None:
        if self.current is not None and self.current.frames:
            self.stacks.append(self.current)
        self.current = None

    def start(self, number: int, source: str, owner: dict[str, Any] | None) -> _Stack:
        self.end()
        context = " | ".join(text for _, text in self.context)
        self.context = []
        self.current = _Stack(number, source, owner or {}, context, [])
        return self.current

    def bcc_fields(self, s: str) -> dict[str, Any] | None:
        # A BCC tool prints a header row and then one row per event, columns split on
        # blanks; "STATE (FLAGS)" style headers pair with "SYN_SENT (SYN|ACK)" values.
        if self.header is None:
            return None
        values = _paired(s.split())
        if len(values) != len(self.header):
            return None
        fields = {h: v for h, v in zip(self.header, values, strict=True) if h != ">"}
        owner: dict[str, Any] = {"detail": s, "fields": fields}
        if "PID" in fields and fields["PID"].isdigit():
            owner["pid"] = int(fields["PID"])
        if "TIME" in fields:
            owner["time"] = fields["TIME"]
        for name in ("COMM", "TASK"):
            if name in fields:
                owner["task"] = fields[name]
        return owner

    def feed(self, number: int, line: str, following: str | None) -> None:
        s = line.strip()
        if not s or s == "--":
            self.end()
            return
        if is_elision(s):
            if self.current is not None:
                self.current.elided = True
            self.end()
            return
        if self.in_map:
            close = _MAP_CLOSE.match(s)
            if close:
                if self.current is not None:
                    self.current.count = int(close.group(1))
                self.in_map = False
                self.end()
                return
        if _MAP_OPEN.match(s):
            self.start(number, "bpftrace", None)
            self.in_map = True
            return
        frame = parse_frame(s)
        if frame is not None:
            source, parsed = frame
            if self.current is None:
                self.start(number, source, self.owner)
                self.owner = None
            assert self.current is not None
            self.current.frames.append(parsed)
            return
        event = EVENT.match(line)
        if event:
            row = event_row(event)
            if row["event"] in ("<stack trace>", "<user stack trace>"):
                owner = self.by_cpu.pop(row["cpu"], row)
                # The event the stack belongs to is its owner, not context.
                self.context = [(n, t) for n, t in self.context if n != owner.get("line")]
                self.start(number, "ftrace", owner)
                return
            self.end()
            row["line"] = number
            self.by_cpu[row["cpu"]] = row
            self.context.append((number, s))
            return
        sample = _PERF_SAMPLE.match(line)
        if sample:
            self.end()
            self.owner = {k: v for k, v in sample.groupdict().items() if k in ("task", "event")}
            self.owner.update(pid=int(sample["pid"]), cpu=int(sample["cpu"]), time=float(sample["time"]),
                              detail=sample["body"].strip())  # fmt: skip
            return
        if self.current is not None and following is not None:
            nxt = parse_frame(following)
            if nxt is not None and nxt[0] == self.current.source:
                # A damaged line between two frames of one stack: only it is lost.
                self.damage.report(
                    f"stack line {number}: {s[:60]!r} is not a frame, inside the stack at line {self.current.line}"
                )
                return
        self.end()
        if _BCC_HEADER.match(s) and len(s.split()) >= 2:
            self.header = _paired(s.split())
            return
        if command_of(s) is not None:
            return
        bcc = self.bcc_fields(s)
        if bcc is not None:
            self.owner = bcc
            return
        self.context.append((number, _ANNOTATION.sub("", s).strip()))


def _paired(words: list[str]) -> list[str]:
    out: list[str] = []
    for word in words:
        if out and word.startswith("(") and word.endswith(")"):
            out[-1] = f"{out[-1]} {word}"
        else:
            out.append(word)
    return out


@dataclass
class KernelStacks:
    """Parsed stacks: one row per stack, one row per frame, and text after the last stack."""

    stacks: pd.DataFrame
    frames: pd.DataFrame
    trailing: list[tuple[int, str]]


def parse_stacks(text: str, *, damage: Damage | None = None) -> KernelStacks:
    """Every kernel stack in ``text``.

    ``stacks`` has one row per stack (columns :data:`COLUMNS`, plus ``fields`` for a BCC
    tool's event columns): ``frames`` holds the symbols innermost first, ``top`` the first
    that is not tracing machinery; the event the stack belongs to (ftrace event, perf
    sample, BCC event row) fills ``task``/``pid``/``cpu``/``time``/``event``/``detail``, and
    text printed just before it (bpftrace ``printf``) fills ``context``; ``count`` is a
    bpftrace map's count. ``frames`` has one row per frame with its offset, module and
    address. A line between two frames of one stack that is not a frame is damage: raised,
    or skipped with a warning when ``damage`` tolerates it. Text without any stack raises.
    """
    parser = _StackParser(strict(damage))
    lines = text.splitlines()
    for i, line in enumerate(lines):
        following = next((n for n in lines[i + 1 : i + 3] if n.strip()), None)
        parser.feed(i + 1, line, following)
    parser.end()
    if not parser.stacks and text.strip():
        first = next(i for i, line in enumerate(lines, start=1) if line.strip())
        raise DecodeError(
            f"line {first}: no kernel stack frames here (expected ' => func', 'func+0x1f', ...)"
        )
    rows = []
    frame_rows = []
    for index, st in enumerate(parser.stacks, start=1):
        symbols = tuple(f.symbol for f in st.frames)
        o = st.owner
        rows.append({"stack": index, "line": st.line, "source": st.source, "task": o.get("task"),
                     "pid": o.get("pid"), "cpu": o.get("cpu"), "flags": o.get("flags"), "time": o.get("time"),
                     "event": o.get("event"), "detail": o.get("detail") or o.get("body"), "context": st.context,
                     "top": top_frame(symbols), "frames": symbols, "depth": len(symbols), "elided": st.elided,
                     "count": st.count, "fields": o.get("fields")})  # fmt: skip
        for depth, f in enumerate(st.frames):
            frame_rows.append({"stack": index, "depth": depth, "function": f.function, "symbol": f.symbol,
                               "offset": f.offset, "module": f.module, "address": f.address,
                               "tracing": is_tracing_frame(f.symbol)})  # fmt: skip
    has_fields = any(r["fields"] for r in rows)
    stacks = pd.DataFrame(rows, columns=COLUMNS + (["fields"] if has_fields else []))
    frames = pd.DataFrame(
        frame_rows, columns=["stack", "depth", "function", "symbol", "offset", "module", "address", "tracing"]
    )
    return KernelStacks(stacks, frames, parser.context)
