"""IPv6 route-cache state: ``/proc/net/rt6_stats`` with its columns named, and the
``net.ipv6.route.*`` sysctls, per network namespace (read inside it)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from netlab.capability import Check, Mechanism, Node, capability
from netlab.decoders.damage import Damage, strict
from netlab.errors import DecodeError
from netlab.targets import Target

if TYPE_CHECKING:
    import pandas as pd

# Order of rt6_stats_seq_show() in net/ipv6/route.c. Column 6 is
# dst_entries_get_slow(&net->ipv6.ip6_dst_ops): the exact (per-CPU summed) dst count.
RT6_COLUMNS = ["fib_nodes", "fib_route_nodes", "fib_rt_alloc", "fib_rt_entries", "fib_rt_cache",
               "dst_entries", "fib_discarded_routes"]  # fmt: skip
ROUTE_SYSCTLS = ["gc_thresh", "max_size", "gc_min_interval", "gc_timeout", "gc_interval", "gc_elasticity",
                 "mtu_expires", "min_adv_mss"]  # fmt: skip


def parse_rt6_stats(text: str) -> dict[str, int]:
    fields = text.split()
    if len(fields) != len(RT6_COLUMNS):
        raise DecodeError(
            f"rt6_stats: expected {len(RT6_COLUMNS)} hex columns, got {len(fields)}: {text.strip()!r}"
        )
    try:
        return {name: int(value, 16) for name, value in zip(RT6_COLUMNS, fields, strict=True)}
    except ValueError:
        raise DecodeError(f"rt6_stats: a column is not hexadecimal: {text.strip()!r}") from None


# A run of hexadecimal words at least four digits wide (rt6_stats prints "%04x").
_HEX_RUN = re.compile(r"(?<![\w.:/-])[0-9a-fA-F]{4,16}(?:[ \t]+[0-9a-fA-F]{4,16})*(?![\w.:/-])")


def find_rt6_stats(text: str, *, damage: Damage | None = None) -> pd.DataFrame:
    """Every rt6_stats reading in ``text``, also inside prose (``rt6_stats showed 0019 000e
    ... 0000 after the flood``), one row per reading with the line it sits on.

    A run of five or more such words that is not seven long is a reading with a column
    lost or added: it raises (naming the line) unless ``damage`` tolerates it. Text with no
    reading at all raises.
    """
    import pandas as pd  # here: the lab runs these on nodes without pandas (netlab.ship)

    damage = strict(damage)
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        for run in _HEX_RUN.finditer(line):
            words = run.group(0).split()
            if len(words) == len(RT6_COLUMNS):
                rows.append(
                    {"line": number, **{n: int(w, 16) for n, w in zip(RT6_COLUMNS, words, strict=True)}}
                )
            elif len(words) >= 5:
                damage.report(
                    f"rt6_stats line {number}: {len(words)} hex columns, rt6_stats has {len(RT6_COLUMNS)}"
                )
    if not rows and not damage.warnings and text.strip():
        raise DecodeError(f"rt6_stats: no reading ({len(RT6_COLUMNS)} hexadecimal columns) in the text")
    return pd.DataFrame(rows, columns=["line", *RT6_COLUMNS])


def stats(target: Target) -> dict[str, int]:
    return parse_rt6_stats(target.read_text("/proc/net/rt6_stats"))


def route_sysctls(target: Target) -> dict[str, int]:
    out = {}
    for name in ROUTE_SYSCTLS:
        text = target.try_read_text(f"/proc/sys/net/ipv6/route/{name}")
        if text is not None and text.strip().lstrip("-").isdigit():
            out[name] = int(text)
    return out


def table(targets: dict[str, Target]) -> pd.DataFrame:
    """rt6_stats and route sysctls side by side, one row per namespace, with headroom."""
    import pandas as pd  # here: the lab runs these on nodes without pandas (netlab.ship)

    rows = []
    for where, target in targets.items():
        row: dict[str, object] = {"netns": where, **stats(target), **route_sysctls(target)}
        dst = int(row["dst_entries"])  # type: ignore[call-overload]
        row["headroom_to_gc_thresh"] = int(row.get("gc_thresh", 0)) - dst  # type: ignore[call-overload]
        row["headroom_to_max_size"] = int(row.get("max_size", 0)) - dst  # type: ignore[call-overload]
        rows.append(row)
    return pd.DataFrame(rows)


# --- capability and mechanism ----------------------------------------------------------
@capability("rt6_stats")
def RT6_STATS(target: Target, node: Node) -> Check:
    text = target.try_read_text("/proc/net/rt6_stats")
    return Check("rt6_stats", bool(text), "/proc/net/rt6_stats readable" if text else "no IPv6 route stats")


PROC = Mechanism("/proc/net/rt6_stats and /proc/sys/net/ipv6/route/* read in each namespace", (RT6_STATS,))
