"""nftables rule sets with counters, from ``nft -j list ruleset``: one row per rule with
its family, table, chain (hook, priority, policy), position, handle, counter and a short
reading of its expressions (``ct state established,related accept``).

Rules that iptables-nft wrote show their xtables matches as ``xt match conntrack``: the
JSON does not carry their arguments, so read those through ``iptables-save``
(:mod:`netlab.collectors.iptables`).
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pandas as pd

from netlab.capability import Check, Mechanism, Node, capability
from netlab.errors import DecodeError
from netlab.targets import Target

COLUMNS = [
    "family",
    "table",
    "chain",
    "hook",
    "policy",
    "position",
    "handle",
    "packets",
    "bytes",
    "verdict",
    "rule",
]
VERDICTS = ("accept", "drop", "reject", "jump", "goto", "return", "queue")


def _value(node: Any) -> str:
    if isinstance(node, dict):
        if "meta" in node:
            return str(node["meta"].get("key"))
        if "ct" in node:
            return "ct " + str(node["ct"].get("key"))
        if "payload" in node:
            p = node["payload"]
            return f"{p.get('protocol', '')} {p.get('field', '')}".strip()
        if "set" in node:
            return ",".join(_value(v) for v in node["set"])
        if "prefix" in node:
            return f"{node['prefix'].get('addr')}/{node['prefix'].get('len')}"
        return json.dumps(node, sort_keys=True)
    if isinstance(node, list):
        return ",".join(_value(v) for v in node)
    return str(node)


def _expression(expr: dict[str, Any]) -> str:
    ((kind, body),) = expr.items()
    if kind == "match":
        op = body.get("op", "==")
        left, right = _value(body.get("left")), _value(body.get("right"))
        return f"{left} {right}" if op in ("==", "in") else f"{left} {op} {right}"
    if kind == "counter":
        return ""
    if kind == "xt":
        return f"xt {body.get('type')} {body.get('name')}"
    if kind == "reject":
        return "reject" + (f" with {body.get('type')} {body.get('expr')}" if body else "")
    if kind in ("jump", "goto"):
        return f"{kind} {body.get('target')}"
    if kind in VERDICTS:
        return kind
    return kind


def parse_ruleset(text: str) -> pd.DataFrame:
    """Parse ``nft -j list ruleset``; malformed JSON or objects raise, naming the object."""
    try:
        data = json.loads(text)
        items = data["nftables"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DecodeError(f"nft JSON: not a 'nftables' document ({exc})") from None
    chains: dict[tuple[str, str, str], dict[str, Any]] = {}
    positions: dict[tuple[str, str, str], int] = {}
    rows = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or len(item) != 1:
            raise DecodeError(f"nft JSON object {index}: expected one key, got {item!r:.80}")
        ((kind, body),) = item.items()
        if kind == "chain":
            chains[(body["family"], body["table"], body["name"])] = body
        elif kind == "rule":
            try:
                key = (body["family"], body["table"], body["chain"])
                exprs = body["expr"]
            except (KeyError, TypeError):
                raise DecodeError(
                    f"nft JSON object {index}: a rule without family/table/chain/expr"
                ) from None
            positions[key] = positions.get(key, 0) + 1
            counter: dict[str, Any] = next((e["counter"] for e in exprs if "counter" in e), {}) or {}
            verdict = next((k for e in exprs for k in e if k in VERDICTS), "")
            if not verdict:  # iptables-nft's targets: {"xt": {"type": "target", "name": "REJECT"}}
                verdict = next(
                    (e["xt"]["name"].lower() for e in exprs if e.get("xt", {}).get("type") == "target"), ""
                )
            chain = chains.get(key, {})
            rows.append({"family": key[0], "table": key[1], "chain": key[2], "hook": chain.get("hook", ""),
                         "policy": chain.get("policy", ""), "position": positions[key], "handle": body.get("handle"),
                         "packets": counter.get("packets"), "bytes": counter.get("bytes"), "verdict": verdict,
                         "rule": " ".join(filter(None, (_expression(e) for e in exprs)))})  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS)


def ruleset(target: Target) -> pd.DataFrame:
    return parse_ruleset(target.run(["nft", "-j", "list", "ruleset"]).stdout)


# --- capability ----------------------------------------------------------------------
@capability("nft")
def NFT(target: Target, node: Node) -> Check:
    result = target.run(["nft", "-j", "list", "tables"], check=False)
    return Check("nft", result.ok, "nft -j list tables answers" if result.ok else result.brief_error())


RULESET = Mechanism("nft -j list ruleset before and after the window (counter deltas)", (NFT,))


# --- which rules can match a flow ----------------------------------------------------------
_L4 = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "ipv6-icmp": 58, "sctp": 132}


def _address_in(address: str, spec: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
        return any(ip in ipaddress.ip_network(part.strip("{} "), strict=False) for part in spec.split(","))
    except ValueError:
        return True  # a named set or a form not read here: it may match


def _port_in(port: int, spec: str) -> bool:
    for part in spec.strip("{}").split(","):
        low, _, high = part.partition("-")
        try:
            if int(low) <= port <= int(high or low):
                return True
        except ValueError:
            return True
    return False


def applies(rule: str, *, family: str, src: str, dst: str, protocol: str, sport: int = 0, dport: int = 0,
            in_iface: str = "", out_iface: str = "") -> str:  # fmt: skip
    """Why an nft rule (this module's reading of it) in a table of ``family`` cannot
    match a packet src:sport -> dst:dport, or ``""`` when it may. Unknown values never
    exclude; what is not read here (ct state, marks, sets by name) is assumed to match."""
    version = 6 if ":" in (src or dst) else 4
    if (family, version) in (("ip", 6), ("ip6", 4)):
        return f"an {family} table sees no IPv{version} packets"
    words = rule.split()
    i = 0
    while i < len(words):
        left = words[i]
        pair = " ".join(words[i : i + 2])
        negate = i + 2 < len(words) and words[i + 2] == "!="
        if pair in ("ip saddr", "ip6 saddr", "ip daddr", "ip6 daddr", "tcp dport", "udp dport", "th dport",
                    "tcp sport", "udp sport", "th sport", "ip protocol", "ip6 nexthdr"):  # fmt: skip
            step, value = (4, words[i + 3]) if negate else (3, words[i + 2] if i + 2 < len(words) else "")
            test: bool | None = None
            if pair.endswith("saddr") and src:
                test, what = _address_in(src, value), f"source {src}"
            elif pair.endswith("daddr") and dst:
                test, what = _address_in(dst, value), f"destination {dst}"
            elif pair.endswith(("dport", "sport")):
                l4 = pair.split()[0]
                port = dport if pair.endswith("dport") else sport
                if l4 != "th" and protocol and l4 != protocol:
                    test, what = negate, f"protocol {protocol}"  # the match needs that protocol's header
                elif port:
                    test, what = _port_in(port, value), f"{pair.split()[1][0]}port {port}"
            elif protocol:
                test, what = value in (protocol, str(_L4.get(protocol, ""))), f"protocol {protocol}"
            if test is not None and test == negate:
                return f"{' '.join(words[i : i + step])} excludes {what}"
            i += step
            continue
        if left in ("iifname", "oifname", "l4proto") and i + 1 < len(words):
            negate = words[i + 1] == "!="
            value = words[i + 2] if negate and i + 2 < len(words) else words[i + 1]
            name = in_iface if left == "iifname" else out_iface
            test = None
            if left == "l4proto" and protocol:
                test, what = value in (protocol, str(_L4.get(protocol, ""))), f"protocol {protocol}"
            elif left != "l4proto" and name:
                value = value.strip('"')
                test = name.startswith(value[:-1]) if value.endswith("*") else name == value
                what = f"{'input' if left == 'iifname' else 'output'} interface {name}"
            if test is not None and test == negate:
                return f"{left} {'!= ' if negate else ''}{value} excludes {what}"
            i += 3 if negate else 2
            continue
        i += 1
    return ""
