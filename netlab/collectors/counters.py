"""Packet counters along a path: per interface (``ip -s -j link``) and the kernel's
SNMP counters (``/proc/net/snmp``), each read per network namespace, with deltas."""

from __future__ import annotations

import pandas as pd

from netlab.capability import Mechanism, command
from netlab.errors import DecodeError
from netlab.targets import Target


def links(target: Target, where: str = "") -> pd.DataFrame:
    """rx/tx packets, bytes, errors and drops of every interface of the target."""
    rows = []
    for link in target.run_json(["ip", "-s", "-j", "link", "show"]) or []:
        stats = link.get("stats64") or link.get("stats") or {}
        rx, tx = stats.get("rx", {}), stats.get("tx", {})
        rows.append({"where": where or target.url, "interface": link.get("ifname"),
                     "rx_packets": rx.get("packets", 0), "rx_dropped": rx.get("dropped", 0),
                     "tx_packets": tx.get("packets", 0), "tx_dropped": tx.get("dropped", 0),
                     "rx_errors": rx.get("errors", 0), "tx_errors": tx.get("errors", 0)})  # fmt: skip
    return pd.DataFrame(rows)


def parse_snmp(text: str) -> pd.DataFrame:
    """``/proc/net/snmp`` (or ``netstat``): pairs of header and value lines per group."""
    rows = []
    lines = [line for line in text.splitlines() if line.strip()]
    for i in range(0, len(lines) - 1, 2):
        head, values = lines[i].split(), lines[i + 1].split()
        if head[0] != values[0] or len(head) != len(values):
            raise DecodeError(f"snmp lines {i + 1}-{i + 2}: header and values do not pair up")
        group = head[0].rstrip(":")
        rows += [
            {"group": group, "counter": k, "value": int(v)} for k, v in zip(head[1:], values[1:], strict=True)
        ]
    return pd.DataFrame(rows, columns=["group", "counter", "value"])


def parse_snmp6(text: str) -> pd.DataFrame:
    """``/proc/net/snmp6``: one ``Ip6InReceives  6`` pair per line; the group is the
    name's prefix (Ip6, Icmp6, Udp6...)."""
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise DecodeError(f"snmp6 line {number}: {line!r} is not 'name value'")
        group = next((g for g in ("Icmp6", "Udp6", "UdpLite6", "Ip6") if parts[0].startswith(g)), "")
        rows.append({"group": group, "counter": parts[0][len(group) :], "value": int(parts[1])})
    return pd.DataFrame(rows, columns=["group", "counter", "value"])


def snmp(target: Target) -> pd.DataFrame:
    """IPv4 and IPv6 protocol counters (``/proc/net/snmp`` and ``snmp6``)."""
    frames = [parse_snmp(target.read_text("/proc/net/snmp"))]
    if target.exists("/proc/net/snmp6"):
        frames.append(parse_snmp6(target.read_text("/proc/net/snmp6")))
    return pd.concat(frames, ignore_index=True)


def delta(before: pd.DataFrame, after: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    """``after`` minus ``before`` for every numeric column, matched on ``key``."""
    merged = after.merge(before, on=key, how="left", suffixes=("", "_before"))
    for column in after.columns:
        if column not in key and pd.api.types.is_numeric_dtype(after[column]):
            merged[column] = merged[column] - merged[f"{column}_before"].fillna(0)
    return merged[list(after.columns)]


# --- capability and mechanism ----------------------------------------------------------
IP = command("ip", ["ip", "-V"], "ip (iproute2) is missing")
LINK_COUNTERS = Mechanism("ip -s -j link and /proc/net/snmp in each namespace, before and after", (IP,))
