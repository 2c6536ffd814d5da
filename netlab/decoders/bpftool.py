"""Parsers for ``bpftool map dump`` / ``map lookup`` output, text and JSON.

Both give a list of :class:`MapEntry` (key bytes, value bytes or the error bpftool
printed instead). Output pasted from a terminal or a write-up carries decoration: prompt
and command lines, ``Found N elements`` trailers, ``...`` elisions, ``--`` separators from
``grep -C``, trailing ``# comments``. Those are accepted where the meaning stays
unambiguous; anything else raises :class:`DecodeError` naming the line (text) or entry
(JSON), unless the caller passes a tolerant :class:`~netlab.decoders.damage.Damage` (the
paste decoder does): then a damaged line and the entry it belongs to are skipped with a
warning. A key or value whose width contradicts the others always raises. Also here:
building ``bpftool map ... key hex ..`` arguments from key bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from netlab.decoders.damage import Damage, strict
from netlab.decoders.paste import command_of, is_elision, normalise_spaces
from netlab.errors import DecodeError


@dataclass(frozen=True)
class MapEntry:
    """One map entry as bpftool printed it.

    ``value`` is None when bpftool printed an error instead (``error`` holds it; sockhash
    values with 4-byte values are never readable from user space) or for a per-CPU map,
    whose values are in ``per_cpu``. ``line`` is the 1-based line (text) or entry index
    (JSON) it came from; ``formatted`` is bpftool's BTF rendering when present (JSON).
    """

    key: bytes
    value: bytes | None
    error: str | None = None
    per_cpu: tuple[bytes, ...] = ()
    line: int = 0
    formatted: Any = field(default=None, compare=False)


_HEX_LINE = re.compile(r"^(?:[0-9a-fA-F]{2}\s+)*[0-9a-fA-F]{2}$")
_FOUND = re.compile(r"^Found (\d+) elements?$")
_VALUE_LABEL = re.compile(r"^value(?: \(CPU (\d+)\))?:\s*(.*)$")
# "kubectl exec ... -- bpftool map dump ..." and the like, with or without a prompt.
_COMMAND = re.compile(r"(?:^|\s)(?:sudo\s+)?bpftool\s")


def _hex(text: str) -> bytes | None:
    # A trailing "# ..." after hex is an annotation added in a write-up, not data.
    text = re.sub(r"\s+#.*$", "", text).strip()
    if not text:
        return b""
    if not _HEX_LINE.match(text):
        return None
    return bytes.fromhex(text.replace(" ", "").replace("\t", ""))


def _is_command(line: str) -> bool:
    return command_of(line) is not None or bool(_COMMAND.search(line))


@dataclass
class _Pending:
    line: int
    key: bytearray = field(default_factory=bytearray)
    value: bytearray | None = None
    error: str | None = None
    per_cpu: list[bytearray] = field(default_factory=list)
    target: str = "key"  # where continuation hex goes: key, value or cpu
    wants_message: bool = False  # after a bare "value:", an error message may follow
    continued: bool = False  # the value spans lines, so the output may end inside it

    @property
    def complete(self) -> bool:
        return bool(self.value) or self.error is not None or bool(self.per_cpu)


class _TextParser:
    def __init__(self, key_size: int | None, value_size: int | None, damage: Damage):
        self.key_size = key_size
        self.value_size = value_size
        self.damage = damage
        self.entries: list[MapEntry] = []
        self.pending: _Pending | None = None
        self.orphan: bytearray = bytearray()
        self.orphan_line = 0
        self.segment_start = 0  # index into entries where the current dump began
        self.elided = False
        self.fragmented = False  # a "--" separator was seen: grep -C output
        self.skipping = False  # the rest of a damaged entry is skipped up to the next key
        self.trailer = False  # a "Found N elements" line was seen
        self.first_content = 0  # first line that was neither blank nor a command

    # An entry ends at the next key:, a separator, a command or the end of the text. At the
    # end of the text or at an elision it may be cut short (head, an author's "...").
    def flush(self, reason: str) -> None:
        self.flush_orphan()
        p, self.pending = self.pending, None
        if p is None:
            return
        cut = reason in ("end", "elision") and p.continued
        if not p.key:
            if reason == "separator":
                return  # a "key:" line whose bytes grep cut off: a fragment, not data
            self.damage.report(f"line {p.line}: 'key:' without key bytes")
            return
        if p.value is None and p.error is None and not p.per_cpu and reason != "separator":
            if not self.fragmented:
                hint = " (the output ends there: cut by head?)" if reason in ("end", "elision") else ""
                self.damage.report(f"line {p.line}: entry has a key but no 'value:'{hint}")
                return
        if p.target == "value" and p.value is not None and not p.value and p.error is None:
            self.damage.report(f"line {p.line}: 'value:' without value bytes or message")
            return
        entry = MapEntry(
            key=bytes(p.key),
            value=bytes(p.value) if p.value is not None else None,
            error=p.error,
            per_cpu=tuple(bytes(v) for v in p.per_cpu),
            line=p.line,
        )
        self.add(entry, cut=cut)

    def flush_orphan(self) -> None:
        # Hex lines with no "key:" above them appear when grep -C cut the label off. They
        # are a key only if they are exactly one key long; with no key size to check,
        # a pasted dump may still take them as a key, saying so.
        if not self.orphan:
            return
        data, line = bytes(self.orphan), self.orphan_line
        self.orphan = bytearray()
        if self.key_size is not None and len(data) == self.key_size:
            self.add(MapEntry(key=data, value=None, line=line))
            return
        if self.key_size is None and self.damage.tolerate:
            self.damage.report(
                f"line {line}: {len(data)} bytes of hex without a 'key:' line (grep cut it?) taken as a key"
            )
            self.add(MapEntry(key=data, value=None, line=line))
            return
        want = f"{self.key_size}-byte key" if self.key_size else "key_size to be given"
        self.damage.report(
            f"line {line}: {len(data)} bytes of hex without a 'key:' line (grep-filtered "
            f"output?); accepting them needs a {want}"
        )

    def add(self, entry: MapEntry, *, cut: bool = False) -> None:
        values = [entry.value] if entry.value is not None else list(entry.per_cpu)
        want_key = self.key_size
        want_value = self.value_size
        # Within one dump every key (and value) has the map's size: a shorter one means a
        # line was lost (a grep cut, a copy-paste slip). The first entry sets the size.
        if self.segment_start < len(self.entries):
            prev = self.entries[self.segment_start]
            want_key = want_key or len(prev.key)
            if want_value is None and prev.value is not None:
                want_value = len(prev.value)
        else:
            prev = None
        # Output cut at the end (head, an author's "...") shortens the last value; a key
        # that differs while its value is whole is a lost line, not a cut.
        short_value = any(len(v) < (want_value or 0) for v in values)
        if cut and short_value and len(entry.key) == (want_key or len(entry.key)):
            self.damage.report(
                f"line {entry.line}: the last entry is cut short (the output ends there); dropped"
            )
            return
        if want_key is not None and len(entry.key) != want_key:
            if prev is not None and self.key_size is None:
                raise DecodeError(
                    f"line {entry.line}: key has {len(entry.key)} bytes but the entry at "
                    f"line {prev.line} has {len(prev.key)}"
                )
            raise DecodeError(f"line {entry.line}: key has {len(entry.key)} bytes, expected {want_key}")
        for v in values:
            if want_value is not None and len(v) != want_value:
                if prev is not None and self.value_size is None and prev.value is not None:
                    raise DecodeError(
                        f"line {entry.line}: value has {len(v)} bytes but the entry "
                        f"at line {prev.line} has {len(prev.value)}"
                    )
                raise DecodeError(f"line {entry.line}: value has {len(v)} bytes, expected {want_value}")
        self.entries.append(entry)

    def new_segment(self) -> None:
        self.segment_start = len(self.entries)
        self.elided = False
        self.fragmented = False

    def damaged(self, number: int, why: str) -> None:
        """A line that fits nothing: the entry it belongs to is dropped with it."""
        p = self.pending
        if p is not None and (not p.complete or p.continued and not self.value_is_whole(p)):
            self.pending = None
            self.skipping = True
            self.damage.report(f"line {number}: {why}; the entry at line {p.line} is dropped")
            return
        self.flush("damage")
        self.damage.report(f"line {number}: {why}")

    def value_is_whole(self, p: _Pending) -> bool:
        """A multi-line value interrupted by a damaged line is whole only if it has the
        width of the dump's other values (or the width the caller gave); with nothing to
        compare, it is taken as whole (prose after the last entry is the usual case)."""
        want = self.value_size
        if want is None and self.segment_start < len(self.entries):
            first = self.entries[self.segment_start].value
            want = len(first) if first is not None else None
        got = [p.value] if p.value is not None else p.per_cpu
        return want is None or all(len(v) == want for v in got)

    def feed(self, number: int, raw: str) -> None:
        line = raw.strip()
        if not line:
            return
        if line.startswith("key:"):
            self.flush("key")
            self.skipping = False
            self.first_content = self.first_content or number
            rest = line[4:]
            value_at = rest.find("value")
            head, tail = (rest, "") if value_at < 0 else (rest[:value_at], rest[value_at:])
            data = _hex(head)
            if data is None:
                self.skipping = True
                self.damage.report(f"line {number}: key bytes are not hex: {head.strip()!r}")
                return
            self.pending = _Pending(line=number, key=bytearray(data))
            if tail:
                self.value_label(number, tail)
            return
        if _VALUE_LABEL.match(line):
            if self.skipping:
                return
            p = self.pending
            if p is not None and p.complete and not (p.per_cpu and line.startswith("value (CPU")):
                # The hex since the last value was the next key's: its "key:" line was lost.
                self.pending = None
                self.skipping = True
                self.damage.report(
                    f"line {number}: a second 'value:' for the entry at line {p.line} (a 'key:' line lost?); dropped"
                )
                return
            if self.pending is None:
                if self.orphan:
                    start = self.orphan_line
                    data = bytes(self.orphan)
                    self.orphan = bytearray()
                    wrong_size = self.key_size is not None and len(data) != self.key_size
                    if wrong_size or (self.key_size is None and not self.damage.tolerate):
                        self.skipping = True
                        self.damage.report(
                            f"line {start}: hex without a 'key:' line before the 'value:' at line {number}"
                        )
                        return
                    self.pending = _Pending(line=start, key=bytearray(data))
                else:
                    self.skipping = True
                    self.damage.report(f"line {number}: 'value:' without a 'key:' before it")
                    return
            self.value_label(number, line)
            return
        found = _FOUND.match(line)
        if found:
            self.flush("trailer")
            self.skipping = False
            self.trailer = True
            self.check_count(number, int(found.group(1)))
            self.new_segment()
            return
        if line.startswith("Error:"):
            self.flush("error")
            self.damage.report(f"line {number}: bpftool reported {line!r}")
            return
        if line == "--":
            self.flush("separator")
            self.skipping = False
            self.fragmented = True
            return
        if is_elision(line):
            self.flush("elision")
            self.skipping = False
            self.elided = True
            return
        data = _hex(line)
        if data is not None and data:
            if not self.skipping:
                self.first_content = self.first_content or number
                self.continuation(number, data)
            return
        if self.pending is not None and self.pending.wants_message:
            # bpftool prints a long error on its own line after "value:".
            self.pending.error = line
            self.pending.wants_message = False
            self.pending.value = None
            return
        if _is_command(line):
            self.flush("command")
            self.skipping = False
            self.new_segment()
            return
        if self.skipping:
            return
        self.first_content = self.first_content or number
        self.damaged(number, f"not bpftool map output: {line[:60]!r}")

    def value_label(self, number: int, text: str) -> None:
        m = _VALUE_LABEL.match(text.strip())
        p = self.pending
        if m is None or p is None:
            self.damaged(number, f"malformed value label {text.strip()[:40]!r}")
            return
        cpu, rest = m.group(1), m.group(2).strip()
        data = _hex(rest)
        if cpu is not None:
            if data is None:
                self.damaged(number, f"per-CPU value is not hex: {rest!r}")
                return
            p.per_cpu.append(bytearray(data))
            p.target = "cpu"
            return
        if data is None:
            p.error = rest  # "<no entry>", "Operation not supported", ...
            p.value = None
            p.target = "error"
            return
        p.value = bytearray(data)
        p.target = "value"
        p.wants_message = not data

    def continuation(self, number: int, data: bytes) -> None:
        p = self.pending
        if p is None:
            if not self.orphan:
                self.orphan_line = number
            self.orphan += data
            return
        p.wants_message = False
        if p.target == "key":
            p.key += data
        elif p.target == "value" and p.value is not None:
            p.value += data
            p.continued = True
        elif p.target == "cpu":
            p.per_cpu[-1] += data
            p.continued = True
        else:
            self.pending = None
            self.skipping = True
            self.damage.report(
                f"line {number}: hex after an error message; the entry at line {p.line} is dropped"
            )

    def check_count(self, number: int, count: int) -> None:
        if self.elided or self.fragmented:
            return
        seen = self.entries[self.segment_start :]
        readable = [e for e in seen if e.error is None]
        # bpftool counts only the entries it could read, but prints the others too.
        if not len(readable) <= count <= len(seen):
            self.damage.report(f"line {number}: bpftool says {count} elements but {len(seen)} were parsed")


def _one_line_entries(
    lines: Sequence[str], first_line: int, key_size: int | None, value_size: int | None
) -> list[MapEntry] | None:
    """The common case done fast: every line ``key: .. value: ..`` with hex, one dump.

    Returns None for anything else (multi-line entries, errors, widths that differ, ...),
    which the line-by-line parser then reads and reports precisely.
    """
    keys: list[bytes] = []
    values: list[bytes] = []
    numbers: list[int] = []
    found: int | None = None
    for i, raw in enumerate(lines):
        head, sep, tail = raw.partition("value:")
        if not sep:
            s = raw.strip()
            if not s:
                continue
            m = _FOUND.match(s)
            if m is None or found is not None:
                return None
            found = int(m.group(1))
            continue
        head = head.strip()
        if found is not None or not head.startswith("key:"):
            return None
        try:
            keys.append(bytes.fromhex(head[4:]))
            values.append(bytes.fromhex(tail))
        except ValueError:
            return None
        numbers.append(first_line + i)
    if not keys:
        return None
    key_sizes = set(map(len, keys))
    value_sizes = set(map(len, values))
    if len(key_sizes) != 1 or len(value_sizes) != 1 or 0 in key_sizes or 0 in value_sizes:
        return None
    if key_size is not None and key_sizes != {key_size}:
        return None
    if value_size is not None and value_sizes != {value_size}:
        return None
    if found is not None and found != len(keys):
        return None
    return [MapEntry(k, v, line=n) for k, v, n in zip(keys, values, numbers, strict=True)]


def parse_map_dump_lines(
    lines: Sequence[str],
    *,
    first_line: int = 1,
    key_size: int | None = None,
    value_size: int | None = None,
    damage: Damage | None = None,
) -> list[MapEntry]:
    """:func:`parse_map_dump_text` for a caller that already holds the lines.

    ``lines[0]`` is line ``first_line`` (the paste decoder hands over a block of a larger
    paste, and errors name the paste's lines).
    """
    fast = _one_line_entries(lines, first_line, key_size, value_size)
    if fast is not None:
        return fast
    parser = _TextParser(key_size, value_size, strict(damage))
    for number, raw in enumerate(lines, start=first_line):
        parser.feed(number, normalise_spaces(raw))
    parser.flush("end")
    if not parser.entries and not parser.trailer and parser.first_content:
        raise DecodeError(
            f"line {parser.first_content}: no bpftool map entries here (expected 'key: .. value: ..')"
        )
    return parser.entries


def parse_map_dump_text(
    text: str,
    *,
    key_size: int | None = None,
    value_size: int | None = None,
    damage: Damage | None = None,
) -> list[MapEntry]:
    """Parse plain ``bpftool map dump`` or ``map lookup`` output into entries.

    Handles one-line (``key: .. value: ..``) and multi-line entries, per-CPU values
    (``value (CPU 00):``), error values (``<no entry>``, ``Operation not supported``),
    ``Found N elements`` trailers (checked against the entries parsed), several dumps in
    one text (each after its command line) and ``grep -C`` fragments: hex lines whose
    ``key:`` label was cut are accepted only when ``key_size`` is given and they are exactly
    one key long. ``key_size``/``value_size``, when given, are enforced on every entry.

    A damaged line raises :class:`DecodeError` naming it, unless ``damage`` tolerates it:
    then the line (and the entry it belongs to) is skipped with a warning, and so is a last
    entry cut short by ``head``. A key or value whose width contradicts the others always
    raises. Text that holds no entry at all raises unless bpftool said ``Found 0 elements``.
    """
    return parse_map_dump_lines(text.splitlines(), key_size=key_size, value_size=value_size, damage=damage)


def _hex_array(items: object, where: str) -> bytes:
    if not isinstance(items, list):
        raise DecodeError(
            f"{where} is not a hex byte array (plain output with BTF has no raw bytes: dump with -j)"
        )
    out = bytearray()
    for i, item in enumerate(items):
        if not isinstance(item, str) or not re.fullmatch(r"0x[0-9a-fA-F]{1,2}", item.strip()):
            raise DecodeError(f'{where}[{i}]: {item!r} is not a hex byte like "0x0a"')
        out.append(int(item, 16))
    return bytes(out)


def _json_entry(obj: object, index: int) -> MapEntry:
    where = f"entry {index}"
    if not isinstance(obj, dict) or "key" not in obj:
        raise DecodeError(f"{where}: not a map entry (no 'key'): {str(obj)[:60]!r}")
    key = _hex_array(obj["key"], f"{where} key")
    formatted = obj.get("formatted")
    if "values" in obj:
        cpus = obj["values"]
        if not isinstance(cpus, list):
            raise DecodeError(f"{where} values: not a list of per-CPU values")
        per_cpu = []
        for i, c in enumerate(cpus):
            if not isinstance(c, dict) or "value" not in c:
                raise DecodeError(f"{where} values[{i}]: no 'value'")
            per_cpu.append(_hex_array(c["value"], f"{where} values[{i}] value"))
        return MapEntry(key, None, per_cpu=tuple(per_cpu), line=index, formatted=formatted)
    value = obj.get("value")
    if isinstance(value, dict):
        if "error" not in value:
            raise DecodeError(f"{where} value: object without 'error'")
        return MapEntry(key, None, error=str(value["error"]), line=index, formatted=formatted)
    if value is None:
        raise DecodeError(f"{where}: no 'value'")
    return MapEntry(key, _hex_array(value, f"{where} value"), line=index, formatted=formatted)


def json_documents(text: str) -> list[Any]:
    """The JSON documents in ``text``, one after another (a jq stream, several commands'
    output), with prompt and command lines between them allowed. Anything else, or bad
    JSON, raises :class:`DecodeError` naming the line."""
    text = normalise_spaces(text)
    decoder = json.JSONDecoder()
    docs: list[Any] = []
    pos, n = 0, len(text)
    while pos < n:
        while pos < n and text[pos].isspace():
            pos += 1
        if pos >= n:
            break
        if text[pos] in "[{":
            try:
                doc, pos = decoder.raw_decode(text, pos)
            except json.JSONDecodeError as e:
                raise DecodeError(f"line {e.lineno}: bad JSON ({e.msg})") from None
            docs.append(doc)
            continue
        end = text.find("\n", pos)
        end = n if end < 0 else end
        line = text[pos:end].strip()
        if not _is_command(line):
            number = text.count("\n", 0, pos) + 1
            raise DecodeError(f"line {number}: not JSON and not a command line: {line[:60]!r}")
        pos = end
    return docs


def parse_map_dump_json(
    text: str, *, key_size: int | None = None, value_size: int | None = None
) -> list[MapEntry]:
    """Parse ``bpftool -j map dump`` / ``map lookup`` output (also ``-p`` pretty JSON).

    Accepts an array of entries, a single entry object, or several JSON documents one
    after another (jq streams, several commands), with prompt/command lines between them.
    Byte arrays are bpftool's ``["0x0a", ...]``; ``{"error": ...}`` values and per-CPU
    ``values`` are kept; a ``formatted`` (BTF) rendering is carried along untouched.
    """
    docs = json_documents(text)
    entries: list[MapEntry] = []
    for doc in docs:
        for obj in doc if isinstance(doc, list) else [doc]:
            entry = _json_entry(obj, len(entries))
            if key_size is not None and len(entry.key) != key_size:
                raise DecodeError(f"entry {entry.line}: key has {len(entry.key)} bytes, expected {key_size}")
            for v in [entry.value] if entry.value is not None else list(entry.per_cpu):
                if value_size is not None and len(v) != value_size:
                    raise DecodeError(f"entry {entry.line}: value has {len(v)} bytes, expected {value_size}")
            entries.append(entry)
    return entries


def parse_map_dump(
    text: str, *, key_size: int | None = None, value_size: int | None = None, damage: Damage | None = None
) -> list[MapEntry]:
    """Parse bpftool map dump/lookup output, text or JSON (detected from the first data).

    A first line that merely starts with ``[`` (a ``[root@host ~]#`` prompt, a ``[...]``
    elision) is not JSON; ``damage`` is passed to the text parser.
    """
    for raw in text.splitlines():
        line = raw.strip()
        if not line or is_elision(line) or command_of(line) is not None:
            continue
        if line[0] in "[{" and not _COMMAND.search(line):
            return parse_map_dump_json(text, key_size=key_size, value_size=value_size)
        break
    return parse_map_dump_text(text, key_size=key_size, value_size=value_size, damage=damage)


def bpftool_key_hex(key: bytes) -> str:
    """The key as bpftool takes it on a command line: ``key hex 0a 0a 86 30 ...``."""
    if not key:
        raise DecodeError("empty key")
    return "key hex " + " ".join(f"{b:02x}" for b in key)


def bpftool_map_delete_argv(key: bytes, *, pinned: str | None = None, map_id: int | None = None) -> list[str]:
    """Argument vector deleting one entry, e.g. a stale sock key (case 000's manual clean).

    Exactly one of ``pinned`` (a bpffs path) or ``map_id`` names the map. The kit runs it
    as an argument vector, never through a shell; a person can copy ``" ".join(argv)``.
    """
    if (pinned is None) == (map_id is None):
        raise DecodeError("name the map by exactly one of pinned= or map_id=")
    if pinned is not None:
        if not pinned.startswith("/sys/fs/bpf/") or any(c.isspace() for c in pinned):
            raise DecodeError(f"pinned path {pinned!r} is not a bpffs path")
        ref = ["pinned", pinned]
    else:
        if not isinstance(map_id, int) or map_id <= 0:
            raise DecodeError(f"map id {map_id!r} is not a positive integer")
        ref = ["id", str(map_id)]
    return ["bpftool", "map", "delete", *ref, *bpftool_key_hex(key).split()]
