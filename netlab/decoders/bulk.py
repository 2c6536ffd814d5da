"""Bulk decoding and encoding of fixed-size structs with numpy structured dtypes.

A layout (:class:`~netlab.decoders.layout.StructLayout`) becomes one numpy dtype with
explicit offsets and byte orders, so a whole map dump is read with one ``frombuffer``
and each column converted at once: no per-entry Python loop. Addresses come out as
strings, ports and counters as host-order integers, enums (sock key family) as names.
:func:`encode` is the exact reverse, used by the lab to write map entries and by the
round-trip tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np
import pandas as pd

from netlab.decoders.addresses import (
    format_ipv4,
    format_ipv6,
    format_mac,
    is_ipv4_string,
    parse_ip_bytes,
    parse_ipv4,
    parse_mac,
)
from netlab.decoders.layout import Field, StructLayout
from netlab.errors import DecodeError

#: Raw struct bytes: one concatenated buffer, or one ``bytes`` per entry (None = missing).
Blob: TypeAlias = bytes | bytearray | memoryview | Sequence[bytes | None] | np.ndarray

# numpy format of each kind as stored (byte order explicit) and the host type it decodes to.
_STORED = {
    "ipv4_be": ">u4",
    "be16": ">u2",
    "le16": "<u2",
    "be32": ">u4",
    "le32": "<u4",
    "le64": "<u8",
    "u8": "u1",
    "sock_cookie": "<u8",
    # The port sits in the first two bytes of the u32, in network order; the other two
    # bytes are zero and are left out of the dtype (encode writes zeros there).
    "be16_in_u32": ">u2",
}
_HOST = {
    "be16": np.uint16,
    "le16": np.uint16,
    "be32": np.uint32,
    "le32": np.uint32,
    "le64": np.uint64,
    "u8": np.uint8,
    "sock_cookie": np.uint64,
    "be16_in_u32": np.uint16,
}
_NULLABLE = {np.uint8: "UInt8", np.uint16: "UInt16", np.uint32: "UInt32", np.uint64: "UInt64"}


_DTYPES: dict[tuple[str, int], np.dtype] = {}


def struct_dtype(layout: StructLayout) -> np.dtype:
    """The numpy structured dtype reading ``layout`` (padding left out, itemsize kept)."""
    cached = _DTYPES.get((layout.name, id(layout)))
    if cached is not None:
        return cached
    names: list[str] = []
    formats: list[object] = []
    offsets: list[int] = []
    for f in layout.fields:
        if f.kind == "pad":
            continue
        names.append(f.name)
        if f.kind in ("ipv6", "ip_union", "mac"):
            formats.append(("u1", (f.size,)))
        else:
            formats.append(_STORED[f.kind])
        offsets.append(f.offset)
    dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": layout.size})
    _DTYPES[(layout.name, id(layout))] = dtype
    return dtype


def as_records(layout: StructLayout, data: Blob, what: str = "entry") -> tuple[np.ndarray, np.ndarray]:
    """Structured array over ``data`` plus a mask of entries that were missing (None).

    ``data`` is one concatenated buffer or a sequence with one ``bytes`` per entry; a
    wrong size raises :class:`DecodeError` naming the entry.
    """
    size = layout.size
    if isinstance(data, np.ndarray) and data.dtype == np.uint8:
        data = data.tobytes()
    if isinstance(data, bytes | bytearray | memoryview):
        raw = data  # read in place: a million-entry map is not copied to be decoded
        if len(raw) % size:
            raise DecodeError(f"{layout.name}: {len(raw)} bytes is not a whole number of {size}-byte {what}s")
        missing = np.zeros(len(raw) // size, dtype=bool)
    else:
        items = list(data)
        missing = np.fromiter((x is None for x in items), dtype=bool, count=len(items))
        if missing.any():
            zero = bytes(size)
            items = [zero if x is None else x for x in items]
        lengths = np.fromiter(map(len, items), dtype=np.int64, count=len(items))
        bad = np.flatnonzero(lengths != size)
        if len(bad):
            i = int(bad[0])
            raise DecodeError(f"{layout.name}: {what} {i} has {int(lengths[i])} bytes, expected {size}")
        raw = b"".join(items)
    return np.frombuffer(raw, dtype=struct_dtype(layout)), missing


def _decode_field(rec: np.ndarray, f: Field, layout: StructLayout, compact: bool = False) -> Any:
    col = rec[f.name]
    if f.kind == "ipv4_be":
        return col.astype(np.uint32) if compact else format_ipv4(col.astype(np.uint32))
    if f.kind == "ipv6":
        return format_ipv6(col)
    if f.kind == "mac":
        return format_mac(col)
    if f.kind == "ip_union":
        assert f.family_field is not None
        v4 = rec[f.family_field] == f.ipv4_family
        out = np.empty(len(rec), dtype=object)
        if v4.any():
            out[v4] = format_ipv4(np.ascontiguousarray(col[v4][:, :4]).view(">u4").reshape(-1))
        if (~v4).any():
            out[~v4] = format_ipv6(col[~v4])
        return out
    values = col.astype(_HOST[f.kind])
    if f.enum is not None:
        codes, uniques = pd.factorize(values)
        names = [f.enum.get(int(u), str(int(u))) for u in uniques]
        if compact:
            return pd.Categorical.from_codes(codes, categories=names) if names else pd.Categorical([])
        table = np.array(names, dtype=object)
        return table[codes] if len(table) else np.empty(0, dtype=object)
    return values


def decode_struct(
    layout: StructLayout, data: Blob, *, prefix: str = "", compact: bool = False
) -> pd.DataFrame:
    """Decode every entry of ``data`` with ``layout`` into a DataFrame (one column per field).

    Entries given as None (a value bpftool could not read) decode to missing values.
    ``compact`` keeps a big map small: IPv4 addresses stay host-order ``uint32`` (listed in
    ``attrs["ipv4_columns"]``, formatted for display by
    :func:`netlab.decoders.addresses.readable`) and enums are categoricals.
    """
    columns, ipv4, rows = _columns(layout, data, prefix, compact)
    return _frame(columns, ipv4, rows, compact)


def _columns(
    layout: StructLayout, data: Blob, prefix: str, compact: bool
) -> tuple[dict[str, Any], list[str], int]:
    rec, missing = as_records(layout, data)
    columns: dict[str, Any] = {}
    ipv4 = []
    for f in layout.fields:
        if f.kind == "pad":
            continue
        col = _decode_field(rec, f, layout, compact)
        if compact and f.kind == "ipv4_be":
            ipv4.append(prefix + f.name)
        if missing.any():
            if isinstance(col, pd.Categorical) or col.dtype == object:
                col = col.copy()
                col[missing] = None
            else:
                col = pd.array(col, dtype=_NULLABLE[col.dtype.type])
                col[missing] = pd.NA
        columns[prefix + f.name] = col
    return columns, ipv4, len(rec)


def _frame(columns: dict[str, Any], ipv4: list[str], rows: int, compact: bool) -> pd.DataFrame:
    # One block per column, as decoded: consolidating them by dtype (what concat or a
    # copying constructor does) would hold every column twice at the peak.
    frame = pd.DataFrame(columns, index=pd.RangeIndex(rows), copy=False)
    if compact:
        frame.attrs["ipv4_columns"] = ipv4
    return frame


def decode_entries(
    layout_key: StructLayout,
    layout_value: StructLayout | None,
    keys: Blob,
    values: Blob | None = None,
    *,
    compact: bool = False,
) -> pd.DataFrame:
    """Decode map entries: key columns then value columns, one row per entry.

    ``keys`` and ``values`` are each one concatenated buffer or a list of per-entry bytes
    (a value may be None when bpftool could not read it). A value field whose name clashes
    with a key field is prefixed ``value_``. ``compact``: see :func:`decode_struct`.
    """
    columns, ipv4, rows = _columns(layout_key, keys, "", compact)
    if layout_value is None or values is None:
        return _frame(columns, ipv4, rows, compact)
    vals, vals_ipv4, count = _columns(layout_value, values, "", compact)
    if count != rows:
        raise DecodeError(f"{layout_key.name}/{layout_value.name}: {rows} keys but {count} values")
    rename = {c: f"value_{c}" if c in columns else c for c in vals}
    columns.update((rename[c], col) for c, col in vals.items())
    return _frame(columns, ipv4 + [rename[c] for c in vals_ipv4], rows, compact)


def _rows_frame(
    rows: pd.DataFrame | Mapping[str, Any] | Iterable[Mapping[str, Any]],
) -> pd.DataFrame:
    if isinstance(rows, pd.DataFrame):
        return rows.reset_index(drop=True)
    if isinstance(rows, Mapping):
        return pd.DataFrame(dict(rows))
    return pd.DataFrame(list(rows))


def _integers(col: pd.Series, f: Field, where: str) -> np.ndarray:
    limit = (1 << (8 * (2 if f.kind == "be16_in_u32" else f.size))) - 1
    arr = col.to_numpy()
    if arr.dtype.kind in "iu":
        ints = arr
    else:
        try:
            ints = np.array([int(v) for v in arr.tolist()], dtype=object)
            if any(int(v) != v for v in arr.tolist()):
                raise ValueError
        except (TypeError, ValueError):
            bad = next(i for i, v in enumerate(arr.tolist()) if not _is_int(v))
            raise DecodeError(f"{where} row {bad} field {f.name}: {arr[bad]!r} is not an integer") from None
    low = ints < 0
    high = ints > limit
    if np.any(low) or np.any(high):
        bad = int(np.flatnonzero(np.asarray(low | high, dtype=bool))[0])
        raise DecodeError(
            f"{where} row {bad} field {f.name}: {ints[bad]} does not fit in {f.kind} (0..{limit})"
        )
    return ints.astype(np.uint64)


def _is_int(v: object) -> bool:
    try:
        return int(v) == v  # type: ignore[call-overload, no-any-return]
    except (TypeError, ValueError, OverflowError):
        return False


def _enum_codes(col: pd.Series, f: Field, where: str) -> pd.Series:
    """Names (or numbers, or numeric strings) of an enum field as integer codes."""
    assert f.enum is not None
    reverse = {name: code for code, name in f.enum.items()}
    codes, uniques = pd.factorize(col, use_na_sentinel=True)
    if (codes < 0).any():
        raise DecodeError(f"{where} row {int(np.flatnonzero(codes < 0)[0])} field {f.name}: missing")
    mapped: list[object] = []
    for u in uniques:
        if isinstance(u, str):
            u = reverse.get(u, int(u) if u.strip().isdigit() else u)
        mapped.append(u)
    table = pd.Series(mapped, dtype=object)
    if all(_is_int(v) for v in mapped):
        table = table.astype(np.int64)
    return pd.Series(table.to_numpy()[codes] if len(table) else table.to_numpy())


def encode(
    layout: StructLayout, rows: pd.DataFrame | Mapping[str, Any] | Iterable[Mapping[str, Any]]
) -> bytes:
    """Encode rows (a DataFrame, a dict of columns or a list of dicts) into struct bytes.

    The reverse of :func:`decode_struct`: column names are field names, addresses are
    strings, ports and counters host-order integers, enums names or numbers. Missing
    columns encode as zero and padding is always zero; an unknown column or a value that
    does not fit raises :class:`DecodeError` naming the row and field.
    """
    frame = _rows_frame(rows)
    where = layout.name
    unknown = [c for c in frame.columns if c not in layout.columns]
    if unknown:
        raise DecodeError(f"{where}: unknown field(s) {', '.join(map(str, unknown))}")
    out = np.zeros(len(frame), dtype=struct_dtype(layout))
    for f in layout.fields:
        if f.kind == "pad" or f.name not in frame.columns:
            continue
        col = frame[f.name]
        if f.kind == "ipv4_be":
            out[f.name] = parse_ipv4(col.to_numpy(dtype=object), f"{where} field {f.name}")
        elif f.kind == "ipv6":
            packed = parse_ip_bytes(col.to_numpy(dtype=object), f"{where} field {f.name}")
            v4 = is_ipv4_string(col.to_numpy(dtype=object))
            if v4.any():
                bad = int(np.flatnonzero(v4)[0])
                raise DecodeError(f"{where} row {bad} field {f.name}: {col.iloc[bad]!r} is not IPv6")
            out[f.name] = packed
        elif f.kind == "ip_union":
            _encode_union(out, frame, layout, f, col)
        elif f.kind == "mac":
            out[f.name] = parse_mac(col.to_numpy(dtype=object), f"{where} field {f.name}")
        else:
            if f.enum is not None:
                col = _enum_codes(col, f, where)
            out[f.name] = _integers(col, f, where)
    return out.tobytes()


def _encode_union(
    out: np.ndarray, frame: pd.DataFrame, layout: StructLayout, f: Field, col: pd.Series
) -> None:
    where = layout.name
    strings = col.to_numpy(dtype=object)
    out[f.name] = parse_ip_bytes(strings, f"{where} field {f.name}")
    v4 = is_ipv4_string(strings)
    assert f.family_field is not None
    fam = layout.field(f.family_field)
    if f.family_field in frame.columns:
        family = frame[f.family_field]
        if fam.enum is not None:
            family = _enum_codes(family, fam, where)
        is_v4_family = np.asarray(family.to_numpy() == f.ipv4_family, dtype=bool)
    else:
        is_v4_family = np.zeros(len(frame), dtype=bool)
    # The union is read as IPv4 only when the family field says so: an IPv4 string under
    # another family (or the reverse) would not decode back to itself.
    clash = v4 != is_v4_family
    if clash.any():
        bad = int(np.flatnonzero(clash)[0])
        family_value = frame[f.family_field].iloc[bad] if f.family_field in frame else None
        raise DecodeError(
            f"{where} row {bad} field {f.name}: address {strings[bad]!r} does not match "
            f"{f.family_field} {family_value!r}"
        )
