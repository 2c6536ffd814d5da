"""nftables rule sets with counters, from ``nft -j list ruleset``: one row per rule with
its family, table, chain (hook, priority, policy), position, handle, counter and a short
reading of its expressions (``ct state established,related accept``).

Rules that iptables-nft wrote show their xtables matches as ``xt match conntrack``: the
JSON does not carry their arguments, so read those through ``iptables-save``
(:mod:`netlab.collectors.iptables`).
"""

from __future__ import annotations

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
