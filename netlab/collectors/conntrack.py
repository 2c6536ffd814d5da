"""Conntrack entries and events (``conntrack -L`` / ``conntrack -E -o timestamp``) as rows:
protocol, TCP state, the original and reply tuples, flags, and for events the time."""

from __future__ import annotations

import re
import subprocess
import threading
from collections import deque
from typing import IO

import pandas as pd

from netlab import params
from netlab.capability import Check, Mechanism, Node, capability
from netlab.decoders.damage import Damage, strict
from netlab.decoders.paste import is_elision
from netlab.errors import DecodeError
from netlab.targets import Target

COLUMNS = ["time", "event", "proto", "timeout", "state", "src", "dst", "sport", "dport",
           "reply_src", "reply_dst", "reply_sport", "reply_dport", "flags", "mark", "zone", "use"]  # fmt: skip
#: conntrack prints the protocol's name and then its number; the number survives when a
#: paste cut the first characters of a line off.
PROTOCOLS = {"icmp": 1, "igmp": 2, "tcp": 6, "udp": 17, "dccp": 33, "gre": 47, "icmpv6": 58,
             "sctp": 132, "udplite": 136}  # fmt: skip
_PROTOCOL_NAMES = {number: name for name, number in PROTOCOLS.items()}
_PREFIX = re.compile(r"^(?:\[(?P<time>\d+\.\d+)\]\s+)?(?:\[(?P<event>NEW|UPDATE|DESTROY)\]\s+)?(?P<rest>.*)$")
_KV = re.compile(r"(\w[\w-]*)=(\S+)")
_SUMMARY = re.compile(
    r"conntrack v[\d.]+ \(conntrack-tools\): (\d+) flow (?:entries|events) ha(?:ve|s) been shown"
)
_TUPLE_KEYS = ("src", "dst", "sport", "dport")


def _head(words: list[str], number: int, line: str, damage: Damage) -> tuple[str, int | None, str] | None:
    """Protocol, timeout and state from the words before the first ``key=value``.

    ``tcp 6 431999 ESTABLISHED``: name, number, timeout, state (``-o extended`` puts
    ``ipv4 2`` in front; a DESTROY event has no timeout). A line whose first characters
    were lost (``6 46 TIME_WAIT ...``, ``cp 6 ...``) still has the protocol number: the
    name is taken from it, with a warning.
    """
    if len(words) >= 2 and words[0] in ("ipv4", "ipv6") and words[1].isdigit():
        words = words[2:]
    state = words[-1] if words and words[-1].replace("_", "").isalpha() and words[-1].isupper() else ""
    numbers = words[: len(words) - 1] if state else words
    name = numbers[0] if numbers and not numbers[0].isdigit() else None
    digits = numbers[1:] if name is not None else numbers
    if not all(d.isdigit() for d in digits) or not 1 <= len(digits) <= 2:
        damage.report(
            f"conntrack line {number}: {line.strip()[:60]!r} does not start with 'PROTO NUMBER [TIMEOUT]'"
        )
        return None
    if name is None and len(digits) == 1:
        damage.report(
            f"conntrack line {number}: starts with one number {digits[0]!r}: protocol and timeout cannot be told apart"
        )
        return None
    protocol = int(digits[0])
    timeout = int(digits[1]) if len(digits) == 2 else None
    if name in PROTOCOLS and PROTOCOLS[name] != protocol:
        damage.report(f"conntrack line {number}: protocol {name} is number {PROTOCOLS[name]}, not {protocol}")
        return None
    if name is None or (name not in PROTOCOLS and name != "unknown"):
        known = _PROTOCOL_NAMES.get(protocol, "unknown")
        seen = " ".join(numbers[:3])
        damage.report(
            f"conntrack line {number}: starts with {seen!r}: its beginning was cut; read as {known} ({protocol})"
        )
        name = known
    return name, timeout, state


def parse_line(line: str, number: int = 0, damage: Damage | None = None) -> dict[str, object] | None:
    """One entry or event as a row; None when ``damage`` tolerated a damaged line."""
    damage = strict(damage)
    match = _PREFIX.match(line.strip())
    assert match is not None  # the pattern matches any line
    words = match.group("rest").split()
    first_kv = next((i for i, w in enumerate(words) if "=" in w or w.startswith("[")), len(words))
    head = _head(words[:first_kv], number, line, damage)
    if head is None:
        return None
    proto, timeout, state = head
    tuples: list[dict[str, str]] = [{}]
    other: dict[str, str] = {}
    flags = []
    for word in words[first_kv:]:
        if word.startswith("[") and word.endswith("]"):
            flags.append(word[1:-1])
            continue
        kv = _KV.fullmatch(word)
        if not kv:
            continue
        key, value = kv.groups()
        if key in _TUPLE_KEYS:
            if key in tuples[-1]:
                tuples.append({})
            tuples[-1][key] = value
        else:
            other.setdefault(key, value)
    orig = tuples[0]
    reply = tuples[1] if len(tuples) > 1 else {}
    if "src" not in orig:
        damage.report(f"conntrack line {number}: no src= in {line.strip()!r}")
        return None
    return {
        "time": float(match.group("time")) if match.group("time") else None,
        "event": match.group("event") or "",
        "proto": proto,
        "timeout": timeout,
        "state": state,
        "src": orig.get("src"), "dst": orig.get("dst"),
        "sport": _int(orig.get("sport")), "dport": _int(orig.get("dport")),
        "reply_src": reply.get("src"), "reply_dst": reply.get("dst"),
        "reply_sport": _int(reply.get("sport")), "reply_dport": _int(reply.get("dport")),
        "flags": ",".join(flags),
        "mark": _int(other.get("mark")),
        "zone": _int(other.get("zone")),
        "use": _int(other.get("use")),
    }  # fmt: skip


def _int(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() else None


def parse(text: str, *, damage: Damage | None = None) -> pd.DataFrame:
    """Entries or events, one per line, with ``mark``, ``zone`` and ``use`` when printed.

    The tool's summary line (``conntrack v1.4.7 (conntrack-tools): 3 flow entries have
    been shown.``) is checked against the rows read and kept out of them, wherever it
    sits; ``--`` separators and elisions are passed over. A line that fits nothing raises,
    naming it, unless ``damage`` tolerates it: then it is skipped with a warning.
    """
    damage = strict(damage)
    rows = []
    shown: tuple[int, int] | None = None
    elided = False
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped == "--":
            continue
        if is_elision(stripped):
            elided = True
            continue
        summary = _SUMMARY.search(stripped)
        if summary:
            shown = (number, int(summary.group(1)))
            continue
        row = parse_line(line, number, damage)
        if row is not None:
            rows.append(row)
    if shown is not None and not elided and shown[1] != len(rows) and damage.tolerate:
        damage.report(f"conntrack line {shown[0]}: the tool showed {shown[1]} entries, {len(rows)} were read")
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame.attrs["shown"] = shown[1] if shown else None
    return frame


def _filter(proto: str, address: str | None, port: int | None) -> list[str]:
    argv = ["-p", params.name(proto, "proto")]
    if port:
        argv += ["--dport", str(params.port(port))]
    if address:
        argv += ["--dst", params.ip_address(address)]
    return argv


def entries(
    target: Target, *, proto: str = "tcp", address: str | None = None, port: int | None = None
) -> pd.DataFrame:
    """The conntrack table of the target's network namespace, filtered to a flow."""
    result = target.run(["conntrack", "-L", *_filter(proto, address, port)], check=False)
    if not result.ok and "0 flow entries" not in result.stderr:
        raise DecodeError(f"{target.url}: conntrack -L failed: {result.brief_error()}")
    return parse(result.stdout)


# conntrack -E until standard input closes: the caller's stop, or its death (over ssh
# the end of input is passed on), so no watcher outlives the run that started it. The
# filter arrives as "$@", never as shell text.
_UNTIL_EOF = 'conntrack -E -o timestamp "$@" & p=$!; cat >/dev/null; kill -INT $p 2>/dev/null; wait $p'
MAX_EVENT_LINES = 200_000


class EventWatch:
    """Conntrack events (NEW/UPDATE/DESTROY with state changes) of a flow from now until
    :meth:`stop`; bounded by ``max_seconds`` and by the lines kept."""

    def __init__(self, target: Target, max_seconds: float, *, proto: str = "tcp", address: str | None = None,
                 port: int | None = None) -> None:  # fmt: skip
        max_seconds = params.positive_number(max_seconds, "seconds", maximum=7200)
        argv = ["sh", "-c", _UNTIL_EOF, "sh", *_filter(proto, address, port)]
        self.url = target.url
        self.proc = target.start(argv, timeout=max_seconds)
        self.lines: deque[str] = deque(maxlen=MAX_EVENT_LINES)
        self.errors: deque[str] = deque(maxlen=20)
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.lines), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.errors), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: IO[bytes] | None, into: deque[str]) -> None:
        for raw in stream or ():
            into.append(raw.decode(errors="replace"))

    def stop(self) -> pd.DataFrame:
        """End the watch and parse what it saw."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for reader in self._readers:
            reader.join(timeout=5)
        if self.proc.returncode not in (0, 130, -2) and not self.lines:
            last = [
                ln.strip() for ln in self.errors if ln.strip() and "flow events have been shown" not in ln
            ]
            if last:
                raise DecodeError(f"{self.url}: conntrack -E failed: {last[-1]}")
        return parse("".join(self.lines))


# --- capability and mechanism ----------------------------------------------------------
@capability("conntrack")
def CONNTRACK(target: Target, node: Node) -> Check:
    version = target.run(["conntrack", "--version"], check=False)
    if not version.ok:
        return Check("conntrack", False, "conntrack tool missing")
    count = target.run(["conntrack", "-C"], check=False)
    if not count.ok:
        return Check("conntrack", False, f"conntrack netlink: {count.brief_error()}")
    return Check(
        "conntrack", True, f"{version.stdout.strip()}; netlink answers ({count.stdout.strip()} entries)"
    )


EVENTS = Mechanism("conntrack -E -o timestamp (netlink events) for the whole window", (CONNTRACK,))
