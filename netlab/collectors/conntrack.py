"""Conntrack entries and events (``conntrack -L`` / ``conntrack -E -o timestamp``) as rows:
protocol, TCP state, the original and reply tuples, flags, and for events the time."""

from __future__ import annotations

import re

import pandas as pd

from netlab import params
from netlab.errors import DecodeError
from netlab.targets import Target

COLUMNS = ["time", "event", "proto", "timeout", "state", "src", "dst", "sport", "dport",
           "reply_src", "reply_dst", "reply_sport", "reply_dport", "flags"]  # fmt: skip
_LINE = re.compile(
    r"^(?:\[(?P<time>\d+\.\d+)\]\s+)?(?:\[(?P<event>NEW|UPDATE|DESTROY)\]\s+)?"
    r"(?P<proto>[a-z0-9]+)\s+(?P<num>\d+)\s+(?:(?P<timeout>\d+)\s+)?(?P<rest>.*)$"
)
_KV = re.compile(r"(\w+)=(\S+)")


def parse_line(line: str, number: int = 0) -> dict[str, object]:
    match = _LINE.match(line.strip())
    if not match:
        raise DecodeError(f"conntrack line {number}: {line.strip()!r} is not a conntrack entry")
    rest = match.group("rest").split()
    state = rest[0] if rest and "=" not in rest[0] and not rest[0].startswith("[") else ""
    tuples: list[dict[str, str]] = [{}]
    flags = []
    for word in rest[1 if state else 0 :]:
        if word.startswith("[") and word.endswith("]"):
            flags.append(word[1:-1])
            continue
        kv = _KV.fullmatch(word)
        if not kv:
            continue
        key, value = kv.groups()
        if key in tuples[-1] and key in ("src", "dst", "sport", "dport"):
            tuples.append({})
        tuples[-1][key] = value
    orig = tuples[0]
    reply = tuples[1] if len(tuples) > 1 else {}
    if "src" not in orig:
        raise DecodeError(f"conntrack line {number}: no src= in {line.strip()!r}")
    return {
        "time": float(match.group("time")) if match.group("time") else None,
        "event": match.group("event") or "",
        "proto": match.group("proto"),
        "timeout": int(match.group("timeout")) if match.group("timeout") else None,
        "state": state,
        "src": orig.get("src"), "dst": orig.get("dst"),
        "sport": int(orig["sport"]) if "sport" in orig else None, "dport": int(orig["dport"]) if "dport" in orig else None,
        "reply_src": reply.get("src"), "reply_dst": reply.get("dst"),
        "reply_sport": int(reply["sport"]) if "sport" in reply else None,
        "reply_dport": int(reply["dport"]) if "dport" in reply else None,
        "flags": ",".join(flags),
    }  # fmt: skip


def parse(text: str) -> pd.DataFrame:
    """Entries or events, one per line; the tool's summary lines are skipped."""
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("conntrack v"):
            continue
        rows.append(parse_line(line, number))
    return pd.DataFrame(rows, columns=COLUMNS)


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


def events(target: Target, seconds: float, *, proto: str = "tcp", address: str | None = None,
           port: int | None = None) -> pd.DataFrame:  # fmt: skip
    """Conntrack events (NEW/UPDATE/DESTROY with state changes) for ``seconds``, bounded."""
    seconds = params.positive_number(seconds, "seconds", maximum=600)
    argv = [
        "timeout",
        "-s",
        "INT",
        f"{seconds:g}",
        "conntrack",
        "-E",
        "-o",
        "timestamp",
        *_filter(proto, address, port),
    ]
    result = target.run(argv, timeout=seconds + 10, check=False)
    return parse(result.stdout)
