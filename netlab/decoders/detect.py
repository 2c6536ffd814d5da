"""``netlab decode``: tell what kind of output each block of a paste is, and decode it.

A paste is cut into blocks (:mod:`netlab.decoders.paste`); each block's kind is told from
its first lines (what they look like, and the command above them when there is one),
unless the caller names it. Each kind's decoder is the kit's own parser for that output,
run tolerant of damaged lines (each one skipped with a warning naming it) but never of a
value that would come out wrong. A block whose kind nobody recognises (a sentence between
two commands) is skipped with a note; a paste where nothing decodes, or a block that
decodes to no rows without the tool saying it had none, is an error naming the lines.

``decode(text)`` is the notebook helper; :func:`main` is the command.
"""

from __future__ import annotations

import gc
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netlab.collectors import conntrack, iptables, nft, rt6, ss
from netlab.decoders import bpftool_show, ftrace, stacks
from netlab.decoders.bpftool import json_documents, parse_map_dump_json, parse_map_dump_lines
from netlab.decoders.damage import Damage
from netlab.decoders.decoded import Decoded, DecodedPaste
from netlab.decoders.map_table import map_name_in, map_table
from netlab.decoders.paste import Block, split_blocks
from netlab.errors import DecodeError, NetlabError


@dataclass(frozen=True)
class Kind:
    """A kind of output: how much a block looks like it, and how it is decoded."""

    name: str
    about: str
    score: Callable[[list[str], str], int]
    decode: Callable[[Block, str | None, Damage], Decoded]


def _count(pattern: str, flags: int = 0) -> Callable[[list[str], str], int]:
    rx = re.compile(pattern, flags)
    return lambda lines, command: sum(1 for line in lines if rx.search(line))


def _command(pattern: str) -> Callable[[str], bool]:
    rx = re.compile(pattern)
    return lambda command: bool(rx.search(command))


# --- JSON ------------------------------------------------------------------------------


def _json_documents(text: str) -> list[Any] | None:
    """The JSON documents of a block (jq prints a stream of them), or None if it is not JSON."""
    try:
        return json_documents(text) or None
    except DecodeError:
        return None


def _objects(docs: list[Any]) -> list[Any]:
    out: list[Any] = []
    for doc in docs:
        out.extend(doc if isinstance(doc, list) else [doc])
    return out


def _json_kind(docs: list[Any]) -> str | None:
    objects = _objects(docs)
    first = next((o for o in objects if isinstance(o, dict)), None)
    if first is None:
        return None
    if "nftables" in first:
        return "nft-json"
    if "key" in first:
        return "bpftool-map-dump"
    if "bytes_key" in first:
        return "bpftool-map-show"
    if "tag" in first or "bytes_xlated" in first or "run_time_ns" in first:
        return "bpftool-prog-show"
    if "programs" in first or "attach_type" in first:
        return "bpftool-cgroup-tree"
    return None


# --- decoders per kind ------------------------------------------------------------------


def _result(kind: str, block: Block, table: Any, damage: Damage, **extra: Any) -> Decoded:
    return Decoded(kind=kind, first_line=block.start, last_line=block.end, table=table, command=block.command,
                   label=block.label, warnings=damage.warnings, **extra)  # fmt: skip


def _decode_map_dump(block: Block, layout: str | None, damage: Damage) -> Decoded:
    docs = _json_documents(block.text) if block.head(1)[0][:1] in "[{" else None
    if docs is not None:
        entries = parse_map_dump_json(block.text)
    else:
        entries = parse_map_dump_lines(block.lines, first_line=block.start, damage=damage)
    name = map_name_in(block.command) or map_name_in(block.label)
    table = map_table(entries, map_name=name, layout=layout)
    notes = list(table.notes)
    if not entries:
        notes.append("bpftool found 0 elements")
    return _result("bpftool-map-dump", block, table.frame, damage, notes=notes,
                   layout=str(table.layout) if table.layout else "")  # fmt: skip


def _decode_json_or_text(
    kind: str, from_json: Callable[[list[Any]], Any], from_text: Callable[..., Any]
) -> Callable[[Block, str | None, Damage], Decoded]:
    def decode(block: Block, layout: str | None, damage: Damage) -> Decoded:
        docs = _json_documents(block.text)
        table = from_json(_objects(docs)) if docs is not None else from_text(block.text, damage=damage)
        return _result(kind, block, table, damage)

    return decode


def _decode_cgroup_tree(block: Block, layout: str | None, damage: Damage) -> Decoded:
    docs = _json_documents(block.text)
    if docs is not None:
        table = bpftool_show.cgroups_from_json(_objects(docs))
    else:
        path = re.search(r"\bcgroup\s+(?:tree|show|list)\s+(/\S*)", block.command)
        table = bpftool_show.parse_cgroup_tree(
            block.text, cgroup=path.group(1) if path else "", damage=damage
        )
    return _result("bpftool-cgroup-tree", block, table, damage)


def _decode_iptables(block: Block, layout: str | None, damage: Damage) -> Decoded:
    family = "ipv6" if "ip6tables" in block.command else "ipv4"
    rules = iptables.parse_save(block.text, family=family, damage=damage)
    policies = iptables.policies_frame(rules.attrs["policies"])
    related = {"chain policies": policies} if len(policies) else {}
    notes = ["no rules, only chain policies"] if len(policies) and not len(rules) else []
    return _result("iptables-save", block, rules, damage, related=related, notes=notes)


def _decode_nft(block: Block, layout: str | None, damage: Damage) -> Decoded:
    return _result("nft-json", block, nft.parse_ruleset(block.text), damage)


def _decode_conntrack(block: Block, layout: str | None, damage: Damage) -> Decoded:
    table = conntrack.parse(block.text, damage=damage)
    notes = ["conntrack showed 0 flow entries"] if table.attrs.get("shown") == 0 and not len(table) else []
    return _result("conntrack", block, table, damage, notes=notes)


def _decode_ss(block: Block, layout: str | None, damage: Damage) -> Decoded:
    return _result("ss", block, ss.parse(block.text, damage=damage), damage)


def _decode_rt6(block: Block, layout: str | None, damage: Damage) -> Decoded:
    return _result("rt6-stats", block, rt6.find_rt6_stats(block.text, damage=damage), damage)


def _decode_stacks(block: Block, layout: str | None, damage: Damage) -> Decoded:
    parsed = stacks.parse_stacks(block.text, damage=damage)
    notes = [f"line {n}: after the last stack, not a stack: {t[:80]!r}" for n, t in parsed.trailing]
    return _result(
        "kernel-stacks", block, parsed.stacks, damage, notes=notes, related={"frames": parsed.frames}
    )


def _decode_trace(block: Block, layout: str | None, damage: Damage) -> Decoded:
    events = ftrace.parse_events(block.text, damage=damage)
    notes = []
    if events.attrs.get("cpus"):
        notes.append(f"trace-cmd: cpus={events.attrs['cpus']}")
    if events.attrs.get("empty_cpus"):
        notes.append(f"trace-cmd: {len(events.attrs['empty_cpus'])} CPUs listed as empty")
    return _result("trace-events", block, events, damage, notes=notes)


# --- what a block looks like ---------------------------------------------------------


def _stack_score(lines: list[str], command: str) -> int:
    return sum(1 for line in lines if stacks.parse_frame(line) is not None or line.endswith("<stack trace>"))


_MAP_TYPES = (
    "hash|array|prog_array|perf_event_array|percpu_hash|percpu_array|stack_trace|cgroup_array|lru_hash|"
    "lru_percpu_hash|lpm_trie|array_of_maps|hash_of_maps|devmap|devmap_hash|sockmap|cpumap|xskmap|sockhash|"
    "cgroup_storage|reuseport_sockarray|percpu_cgroup_storage|queue|stack|sk_storage|struct_ops|ringbuf|"
    "inode_storage|task_storage|bloom_filter|user_ringbuf|cgrp_storage|arena"
)

KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("bpftool-map-dump", "bpftool map dump/lookup: 'key: .. value: ..' (text or -j JSON)",
             _count(r"^(?:key:|value(?: \(CPU \d+\))?:|Found \d+ elements?$|(?:[0-9a-f]{2} +)+[0-9a-f]{2}$)"),
             _decode_map_dump),
        Kind("bpftool-map-show", "bpftool map show: 'ID: TYPE  name N  flags ..' and 'key NB  value NB ..'",
             _count(rf"^\d+: (?:{_MAP_TYPES})\s|^key \d+B\s+value \d+B"),
             _decode_json_or_text("bpftool-map-show", bpftool_show.maps_from_json, bpftool_show.parse_map_show)),
        Kind("bpftool-prog-show", "bpftool prog show: 'ID: TYPE  name N  tag T ..' and 'loaded_at ..'",
             _count(r"^\d+: \w+\s+(?:name \S+\s+)?tag [0-9a-f]+|^loaded_at \S+|^xlated \d+B"),
             _decode_json_or_text("bpftool-prog-show", bpftool_show.programs_from_json, bpftool_show.parse_prog_show)),
        Kind("bpftool-cgroup-tree", "bpftool cgroup tree: 'CgroupPath', cgroup paths, 'ID  ATTACH_TYPE ..'",
             _count(r"^CgroupPath$|^ID\s+AttachType|^\d+\s+(?:cgroup_\w+|connect[46]|sendmsg[46]|recvmsg[46]|"
                    r"post_bind[46]|getpeername[46]|getsockname[46]|bind[46]|sock_ops|ingress|egress|device)\b"),
             _decode_cgroup_tree),
        Kind("iptables-save", "iptables-save [-c]: '*table', ':CHAIN POLICY', '[p:b] -A CHAIN ..', COMMIT",
             _count(r"^\*(?:filter|nat|mangle|raw|security)$|^:\S+ (?:ACCEPT|DROP|-)|^(?:\[\d+:\d+\] )?-[AI] \S+|"
                    r"^COMMIT$|^# Generated by ip6?tables-save"),
             _decode_iptables),
        Kind("nft-json", "nft -j list ruleset", lambda lines, command: 0, _decode_nft),
        Kind("conntrack", "conntrack -L / -E: 'tcp 6 117 ESTABLISHED src=.. dst=..'",
             _count(r"\bsrc=\S+ dst=\S+|conntrack v[\d.]+ \(conntrack-tools\)"), _decode_conntrack),
        Kind("ss", "ss -t[i][e][n][p]: 'STATE RECV-Q SEND-Q LOCAL:PORT PEER:PORT' and detail lines",
             _count(r"^(?:(?:tcp6?|mptcp)\s+)?(?:ESTAB|SYN-SENT|SYN-RECV|FIN-WAIT-[12]|TIME-WAIT|CLOSE-WAIT|LAST-ACK|"
                    r"LISTEN|CLOSING|UNCONN|CLOSE)\s+\d+\s+\d+\s|^(?:Netid\s+)?State\s+Recv-Q|\brtt:[\d.]+/[\d.]+"),
             _decode_ss),
        Kind("rt6-stats", "/proc/net/rt6_stats: seven hexadecimal columns",
             _count(r"(?:^|\s)[0-9a-f]{4,8}(?:\s+[0-9a-f]{4,8}){6}(?:\s|$)"), _decode_rt6),
        Kind("kernel-stacks", "kernel stacks: ftrace ' => func', bpftrace kstack, perf script, BCC b'func+0x..'",
             _stack_score, _decode_stacks),
        Kind("trace-events", "trace_pipe / trace-cmd report: 'TASK-PID [CPU] .. TIME: EVENT: ..'",
             _count(r"^\s*\S.*-\d+\s+(?:\(\s*[\d-]+\)\s+)?\[\d+\]\s.*\d+\.\d+: |^CPU\s*\d+ is empty$|^cpus=\d+$"),
             _decode_trace),
    )
}  # fmt: skip

# The command above a block, when there is one, is a strong hint.
_COMMAND_HINTS = [
    ("bpftool-map-dump", _command(r"\bbpftool\b.*\bmap\s+(?:dump|lookup|getnext|peek)\b")),
    ("bpftool-map-show", _command(r"\bbpftool\b.*\bmap\s+(?:show|list)\b")),
    ("bpftool-prog-show", _command(r"\bbpftool\b.*\bprog\s+(?:show|list)\b")),
    ("bpftool-cgroup-tree", _command(r"\bbpftool\b.*\bcgroup\s+(?:tree|show|list)\b")),
    ("iptables-save", _command(r"\bip6?tables(?:-legacy|-nft)?-save\b")),
    ("nft-json", _command(r"\bnft\b.*\s-j\b|\bnft\s+--json\b")),
    ("conntrack", _command(r"\bconntrack\s+-[LEG]")),
    ("ss", _command(r"(?:^|\|\s*|\s)ss\s")),
    ("rt6-stats", _command(r"rt6_stats")),
]
_HINT_WEIGHT = 5


def detect_kind(block: Block) -> str | None:
    """The kind of output in ``block``, or None when it looks like none of them."""
    head = block.head()
    if head and head[0][:1] in "[{":
        docs = _json_documents(block.text)
        if docs is not None:
            return _json_kind(docs)
    scores = {name: kind.score(head, block.command) for name, kind in KINDS.items()}
    for name, hint in _COMMAND_HINTS:
        if hint(block.command) and scores[name]:
            scores[name] += _HINT_WEIGHT
    best = max(scores, key=lambda k: scores[k])
    return best if scores[best] > 0 else None


def decode(text: str, kind: str | None = None, layout: str | None = None) -> DecodedPaste:
    """Decode pasted output: every block of ``text``, decoration and all.

    ``kind`` (one of :data:`KINDS`) skips detection; ``layout`` names a map dump's struct
    layout (``lb4_services``, ``lb4_services/D``, ``ipcache``...) when the paste does not
    say which map it is. Raises :class:`DecodeError` naming the lines when nothing in
    ``text`` decodes, or when a block would decode to wrong values or to nothing.
    """
    if kind is not None and kind not in KINDS:
        raise DecodeError(f"no kind {kind!r}", f"choose one of: {', '.join(KINDS)}")
    blocks = split_blocks(text)
    if not blocks:
        raise DecodeError("nothing to decode: the text is empty (or only prompts and decoration)")
    decoded: list[Decoded] = []
    skipped: list[str] = []
    for block in blocks:
        name = kind or detect_kind(block)
        if name is None:
            skipped.append(f"{block.where()}: not output netlab reads ({block.head(1)[0][:50]!r})")
            continue
        damage = Damage(tolerate=True)
        result = KINDS[name].decode(block, layout, damage)
        if not len(result.table) and not result.notes:
            first = f"; {damage.warnings[0]}" if damage.warnings else ""
            raise DecodeError(f"{block.where()}: no {name} rows (expected {KINDS[name].about}){first}")
        decoded.append(result)
    if not decoded:
        raise DecodeError(
            f"{blocks[0].where() if len(blocks) == 1 else 'the paste'}: no output netlab can decode",
            f"kinds read: {', '.join(KINDS)}",
        )
    return DecodedPaste(decoded, skipped)


def main(
    path: str | None, *, kind: str | None = None, layout: str | None = None, as_json: bool = False
) -> int:
    """``netlab decode [FILE|-]``: read the paste, print the decoded tables (or JSON)."""
    if path in (None, "-"):
        text = sys.stdin.read()
    else:
        try:
            text = Path(path).read_text(encoding="utf-8", errors="replace")  # type: ignore[arg-type]
        except OSError as exc:
            raise NetlabError(f"cannot read {path}: {exc.strerror}") from None
    # A million-entry paste makes millions of small objects and no reference cycles: the
    # cyclic collector would rescan them again and again for nothing (a fifth of the time).
    gc.disable()
    try:
        result = decode(text, kind=kind, layout=layout)
        if as_json:
            json.dump(result.to_dict(), sys.stdout, indent=1)
            sys.stdout.write("\n")
        else:
            result.write_text(sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader (head, less) stopped reading: not an error. Keep Python from
        # complaining while it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        gc.enable()
    return 0
