"""Case 002's own method, where kprobes and matching headers exist: a bounded BCC trace of
``ip6_pkt_drop``, the function every IPv6 packet whose route lookup fell back to the
null route ends in (``ip6_pkt_discard``/``ip6_pkt_discard_out``): counted in the kernel
per kernel stack, network namespace, device, direction, ICMPv6 code and addresses
(``bpf/ip6_pkt_drop.bcc.c``), run on the node as a :mod:`netlab.probes.bcc_trace`
process whose probes go with it however it ends.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from netlab.capability import Mechanism
from netlab.decoders import stacks
from netlab.probes import bcc, bcc_trace
from netlab.targets import Target

_PROBES = (
    bcc_trace.Probe("ip6_pkt_drop", "drop"),
    bcc_trace.Probe("ip6_pkt_discard", "discard", unless="ip6_pkt_drop"),
    bcc_trace.Probe("ip6_pkt_discard_out", "discard_out", unless="ip6_pkt_drop"),
)
DIRECTIONS = {0: "other", 1: "in (forwarded or received: INNOROUTES)", 2: "out (sent: OUTNOROUTES)"}
CODES = {0: "no route", 1: "administratively prohibited"}  # ICMPv6 destination unreachable codes
COLUMNS = ["netns", "dev", "direction", "icmpv6", "saddr", "daddr", "count", "stack"]


@dataclass
class Ip6DropTrace(bcc_trace.BccTrace):
    """The trace, with its drops as a table."""

    drops: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def total(self) -> int:
        return int(self.drops["count"].sum()) if len(self.drops) else 0


def _address(words: list[int]) -> str:
    # The kernel's words in the node's byte order (x86: this machine's).
    return str(ipaddress.IPv6Address(struct.pack("=4I", *words)))


def frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The trace's rows (``drop_key`` and its count) as a table."""
    out = [{"netns": r["netns"], "dev": r["dev"], "direction": DIRECTIONS.get(r["direction"], str(r["direction"])),
            "icmpv6": CODES.get(r["code"], str(r["code"])), "saddr": _address(r["saddr"]),
            "daddr": _address(r["daddr"]), "count": r["count"],
            "stack": stacks.traced_path(r["stack"])} for r in rows]  # fmt: skip
    table = pd.DataFrame(out, columns=COLUMNS)
    return table.sort_values("count", ascending=False, ignore_index=True) if len(table) else table


def trace(
    target: Target,
    seconds: float = 5.0,
    *,
    max_events: int = 50_000,
    max_keys: int = 4096,
    during: Callable[[], Any] | None = None,
) -> Ip6DropTrace:
    """Count IPv6 no-route drops on the node for ``seconds`` while ``during`` runs; the
    probes are gone when this returns or raises."""
    traced = bcc_trace.run(target, "ip6_pkt_drop.bcc.c", _PROBES, ("drops",), seconds,
                           what="the BCC ip6_pkt_drop trace", max_events=max_events, max_keys=max_keys,
                           during=during)  # fmt: skip
    # The discard handlers are missing only where ip6_pkt_drop is probed instead.
    traced.notes = [n for n in traced.notes if not n.startswith("not in this kernel")]
    if "ip6_pkt_drop" not in traced.attached and traced.attached:
        traced.notes.append(
            f"ip6_pkt_drop is inlined in this kernel: its callers {', '.join(traced.attached)} were probed"
        )
    return Ip6DropTrace(**vars(traced), drops=frame(traced.tables["drops"]))


KPROBE_TRACE = Mechanism(
    "BCC kprobe on ip6_pkt_drop (counted in the kernel with stacks)",
    (bcc.KPROBES, bcc.KERNEL_HEADERS),
)
