"""What ``netlab decode`` returns: one :class:`Decoded` per block of a paste, and how it shows.

Each block's result says where in the paste it came from (lines, the command above it),
what kind of output it was, the decoded table (plus side tables, e.g. iptables chain
policies or the frames of kernel stacks), the layout used for a map dump, and the
warnings (damaged lines skipped, each naming its line) and notes (choices made). It renders
as aligned text for a terminal (fast enough for a million rows), as JSON, and as HTML in
JupyterLab.
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np
import pandas as pd

#: Longest cell shown in text and HTML; JSON keeps everything.
CELL_WIDTH = 100
HTML_ROWS = 500


@dataclass
class Decoded:
    """One block of a paste, decoded."""

    kind: str
    first_line: int
    last_line: int
    table: pd.DataFrame
    command: str = ""
    label: str = ""
    layout: str = ""
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    related: dict[str, pd.DataFrame] = field(default_factory=dict)

    def where(self) -> str:
        if self.first_line == self.last_line:
            return f"line {self.first_line}"
        return f"lines {self.first_line}-{self.last_line}"

    def title(self) -> str:
        rows = len(self.table)
        head = f"{self.where()}: {self.kind}, {rows} row{'s' if rows != 1 else ''}"
        if self.command:
            head += f"  ($ {self.command})"
        elif self.label:
            head += f"  ({self.label})"
        return head

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "lines": [self.first_line, self.last_line],
            "command": self.command,
            "label": self.label,
            "layout": self.layout,
            "rows": records(self.table),
            "related": {name: records(frame) for name, frame in self.related.items()},
            "warnings": list(self.warnings),
            "notes": list(self.notes),
        }

    def write_text(self, out: TextIO) -> None:
        """The block as text: a title line, the table, side tables, warnings, notes."""
        out.write(f"== {self.title()}\n")
        if self.layout:
            out.write(f"layout: {self.layout}\n")
        out.writelines(table_chunks(self.table))
        for name, frame in self.related.items():
            out.write(f"\n-- {name}\n")
            out.writelines(table_chunks(frame))
        out.writelines(f"warning: {w}\n" for w in self.warnings)
        out.writelines(f"note: {n}\n" for n in self.notes)

    def _repr_html_(self) -> str:
        parts = [f"<h4 class='netlab-decoded'>{html.escape(self.title())}</h4>"]
        if self.layout:
            parts.append(f"<p>layout: <code>{html.escape(self.layout)}</code></p>")
        parts.append(_html_table(self.table))
        for name, frame in self.related.items():
            parts.append(f"<h5>{html.escape(name)}</h5>{_html_table(frame)}")
        for css, items in (("netlab-warning", self.warnings), ("netlab-note", self.notes)):
            if items:
                lis = "".join(f"<li>{html.escape(i)}</li>" for i in items)
                parts.append(f"<ul class='{css}'>{lis}</ul>")
        return "\n".join(parts)


@dataclass
class DecodedPaste:
    """Every block of a paste that was decoded, in order, and those that were skipped."""

    blocks: list[Decoded]
    skipped: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[Decoded]:
        return iter(self.blocks)

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index: int) -> Decoded:
        return self.blocks[index]

    def to_dict(self) -> dict[str, Any]:
        return {"blocks": [b.to_dict() for b in self.blocks], "skipped": list(self.skipped)}

    def write_text(self, out: TextIO) -> None:
        for i, block in enumerate(self.blocks):
            if i:
                out.write("\n")
            block.write_text(out)
        out.writelines(f"skipped: {s}\n" for s in self.skipped)

    def text(self) -> str:
        out = io.StringIO()
        self.write_text(out)
        return out.getvalue()

    def _repr_html_(self) -> str:
        parts = [b._repr_html_() for b in self.blocks]
        if self.skipped:
            parts.append(
                "<p class='netlab-note'>skipped: " + "; ".join(html.escape(s) for s in self.skipped) + "</p>"
            )
        return "\n<hr/>\n".join(parts)


def _cell(value: Any) -> str:
    if value is None or value is pd.NA or value is pd.NaT:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    if isinstance(value, bytes | bytearray):
        return value.hex(" ")
    if isinstance(value, tuple):
        return " <- ".join(map(str, value))  # a stack's frames, innermost first
    if isinstance(value, list):
        return ",".join(map(str, value))
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def _format_unique(value: Any, kind: str) -> str:
    if kind == "f":
        return "" if value is None or math.isnan(value) else format(value, ".15g")
    text = _cell(value)
    return text if len(text) <= CELL_WIDTH else text[: CELL_WIDTH - 1] + "…"


class _Column:
    """One column's cells as text of one width, rendered a chunk of rows at a time.

    Integer columns are written digit by digit with numpy and plain ASCII text columns
    converted in one go, so a million-row dump costs no Python work per cell; anything
    else (floats, frames, dicts, non-ASCII) is formatted once per distinct value.
    """

    def __init__(self, name: str, col: pd.Series):
        self.name = name
        kind = col.dtype.kind
        self.right = kind in "iuf"
        self.ints: np.ndarray | None = None
        self.texts: np.ndarray | None = None
        self.codes = np.zeros(0, np.int64)
        self.strings: list[str] = []
        if kind in "iu":
            self.missing = col.isna().to_numpy()
            self.ints = col.to_numpy(dtype=np.float64 if kind == "i" else np.uint64, na_value=0).astype(
                np.int64 if kind == "i" else np.uint64
            )
            digits = (
                max(len(str(int(self.ints.max()))), len(str(int(self.ints.min())))) if len(self.ints) else 1
            )
            self.width = max(len(name), digits)
            return
        if kind == "O" and pd.api.types.infer_dtype(col, skipna=True) in ("string", "empty"):
            texts = col.to_numpy(dtype=object)
            texts = np.where(pd.isna(texts), "", texts)
            longest = max(map(len, texts)) if len(texts) else 0
            if longest <= CELL_WIDTH and all(t.isascii() for t in texts[:: max(1, len(texts) // 1000)]):
                try:
                    self.texts = texts.astype(f"S{max(longest, 1)}")
                except UnicodeEncodeError:
                    self.texts = None
                if self.texts is not None:
                    self.width = max(len(name), longest)
                    return
        values: Any = col
        if kind == "O":
            values = col.to_numpy(dtype=object)
            if any(isinstance(v, list | dict) for v in values):
                values = np.array([_cell(v) for v in values], dtype=object)  # unhashable: format first
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
        self.strings = [_format_unique(u, kind) for u in uniques] + [""]
        self.codes = np.where(codes < 0, len(self.strings) - 1, codes)
        self.width = max(len(name), max(map(len, self.strings)))

    @property
    def ascii(self) -> bool:
        return self.ints is not None or self.texts is not None or all(s.isascii() for s in self.strings)

    def header(self) -> str:
        return self.name.rjust(self.width) if self.right else self.name.ljust(self.width)

    def matrix(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as an ``(n, width)`` uint8 array of ASCII."""
        n = stop - start
        if self.ints is not None:
            out = np.full((n, self.width), ord(" "), dtype=np.uint8)
            values = self.ints[start:stop]
            negative = values < 0 if values.dtype.kind == "i" else np.zeros(n, bool)
            left = np.abs(values).astype(np.uint64)
            digits = np.zeros(n, np.int64)
            column = self.width - 1
            first = True
            while column >= 0 and (first or left.any()):
                show = (left > 0) | first
                out[show, column] = (left[show] % 10).astype(np.uint8) + ord("0")
                digits += show
                left //= 10
                first = False
                column -= 1
            if negative.any():
                rows = np.flatnonzero(negative)
                out[rows, self.width - 1 - digits[rows]] = ord("-")
            out[self.missing[start:stop]] = ord(" ")
            return out
        if self.texts is not None:
            raw = self.texts[start:stop]
            out = np.frombuffer(raw.tobytes(), np.uint8).reshape(n, raw.itemsize).copy()
            out[out == 0] = ord(" ")
            if raw.itemsize < self.width:
                out = np.hstack([out, np.full((n, self.width - raw.itemsize), ord(" "), np.uint8)])
            return out
        padded = [s.rjust(self.width) if self.right else s.ljust(self.width) for s in self.strings]
        table = np.frombuffer("".join(padded).encode("ascii"), np.uint8).reshape(len(padded), self.width)
        return table[self.codes[start:stop]]

    def cells(self, start: int, stop: int) -> list[str]:
        """Rows ``start:stop`` as padded strings (the slow path, for non-ASCII text)."""
        if self.ints is not None or self.texts is not None:
            return [bytes(row).decode("ascii") for row in self.matrix(start, stop)]
        padded = [s.rjust(self.width) if self.right else s.ljust(self.width) for s in self.strings]
        return [padded[i] for i in self.codes[start:stop]]


def table_chunks(frame: pd.DataFrame, rows_per_chunk: int = 100_000) -> Iterator[str]:
    """The table as aligned text (a header, one line per row, numbers right-aligned), in
    chunks of lines, so a million-row dump is written without one huge string."""
    if frame.shape[1] == 0:
        yield "(no columns)\n"
        return
    if len(frame) == 0:
        yield "(no rows)  " + "  ".join(map(str, frame.columns)) + "\n"
        return
    columns = [_Column(str(name), frame[name]) for name in frame.columns]
    yield "  ".join(c.header() for c in columns).rstrip() + "\n"
    n = len(frame)
    if all(c.ascii for c in columns):
        line_width = sum(c.width for c in columns) + 2 * (len(columns) - 1) + 1
        for start in range(0, n, rows_per_chunk):
            stop = min(n, start + rows_per_chunk)
            buf = np.full((stop - start, line_width), ord(" "), dtype=np.uint8)
            offset = 0
            for c in columns:
                buf[:, offset : offset + c.width] = c.matrix(start, stop)
                offset += c.width + 2
            buf[:, -1] = ord("\n")
            yield buf.tobytes().decode("ascii")
        return
    for start in range(0, n, rows_per_chunk):
        stop = min(n, start + rows_per_chunk)
        cells = [c.cells(start, stop) for c in columns]
        yield "".join("  ".join(row) + "\n" for row in zip(*cells, strict=True))


def _html_table(frame: pd.DataFrame) -> str:
    shown = frame.head(HTML_ROWS).copy()
    for c in shown.columns:
        if shown[c].dtype == object:
            shown[c] = [_cell(v)[:CELL_WIDTH] for v in shown[c]]
    out = shown.to_html(index=False, na_rep="", classes="netlab-decoded-table")
    if len(frame) > HTML_ROWS:
        out += f"<p>first {HTML_ROWS} of {len(frame)} rows (the JSON and the CLI show all)</p>"
    return out


def _jsonable(value: Any) -> Any:
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, bytes | bytearray):
        return value.hex(" ")
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows as JSON-ready dicts (numpy scalars, bytes, NA and tuples converted)."""
    columns = [str(c) for c in frame.columns]
    return [
        {c: _jsonable(v) for c, v in zip(columns, row, strict=True)}
        for row in frame.itertuples(index=False, name=None)
    ]
