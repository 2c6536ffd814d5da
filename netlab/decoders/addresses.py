"""Vectorised conversions between address bytes and address strings.

Map dumps hold few distinct addresses (node IPs, service IPs) repeated across many
entries, so every conversion works on the distinct values only and spreads the result
back with an index: a million entries cost a factorize plus a few thousand Python calls.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from netlab.errors import DecodeError


def _spread(codes: np.ndarray, uniques: Sequence[object]) -> np.ndarray:
    table = np.empty(len(uniques), dtype=object)
    table[:] = list(uniques)
    return table[codes]


def format_ipv4(values: np.ndarray) -> np.ndarray:
    """Dotted-quad strings for an array of IPv4 addresses held as host-order integers."""
    codes, uniques = pd.factorize(np.asarray(values, dtype=np.uint32))
    return _dotted_quads(np.asarray(uniques, dtype=np.uint32))[codes]


def readable(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the IPv4 columns a compact decode left as integers
    (``attrs["ipv4_columns"]``) as dotted quads: formatting at display time, for the rows
    shown (``readable(frame.head(50))``), not for a million kept."""
    columns = [c for c in frame.attrs.get("ipv4_columns", []) if c in frame.columns]
    if not columns:
        return frame
    out = frame.assign(**{c: format_ipv4(frame[c].to_numpy()) for c in columns})
    out.attrs = {k: v for k, v in frame.attrs.items() if k != "ipv4_columns"}
    return out


def _dotted_quads(addresses: np.ndarray) -> np.ndarray:
    # A dump can hold a million distinct pod addresses, too many to format one at a time.
    # Each address gets 16 byte columns: three digit columns per octet (leading zeros
    # left as NUL), the dots, and a newline; dropping the NULs and splitting on newlines
    # gives the strings in one pass.
    n = len(addresses)
    buf = np.zeros((n, 16), dtype=np.uint8)
    for i, shift in enumerate((24, 16, 8, 0)):
        octet = (addresses >> shift) & 0xFF
        col = 4 * i
        buf[:, col] = np.where(octet >= 100, 48 + octet // 100, 0)
        buf[:, col + 1] = np.where(octet >= 10, 48 + (octet // 10) % 10, 0)
        buf[:, col + 2] = 48 + octet % 10
        buf[:, col + 3] = ord(".") if shift else ord("\n")
    text = buf[buf != 0].tobytes().decode("ascii")
    out = np.empty(n, dtype=object)
    out[:] = text.split("\n")[:n]
    return out


def format_ipv6(rows: np.ndarray) -> np.ndarray:
    """Canonical IPv6 strings for an ``(n, 16)`` uint8 array of network-order addresses."""
    rows = np.ascontiguousarray(rows, dtype=np.uint8).reshape(-1, 16)
    if len(rows) == 0:
        return np.empty(0, dtype=object)
    halves = rows.view(">u8").reshape(-1, 2)
    uniques, first, codes = np.unique(halves, axis=0, return_index=True, return_inverse=True)
    del uniques
    strings = [str(ipaddress.IPv6Address(rows[i].tobytes())) for i in first]
    return _spread(np.asarray(codes).reshape(-1), strings)


def format_mac(rows: np.ndarray) -> np.ndarray:
    """``aa:bb:cc:dd:ee:ff`` strings for an ``(n, 6)`` uint8 array of MAC addresses."""
    rows = np.ascontiguousarray(rows, dtype=np.uint8).reshape(-1, 6)
    if len(rows) == 0:
        return np.empty(0, dtype=object)
    uniques, codes = np.unique(rows, axis=0, return_inverse=True)
    strings = [":".join(f"{b:02x}" for b in row) for row in uniques.tolist()]
    return _spread(np.asarray(codes).reshape(-1), strings)


def parse_mac(values: Sequence[object] | np.ndarray, where: str = "mac") -> np.ndarray:
    """``(n, 6)`` uint8 array from ``aa:bb:cc:dd:ee:ff`` strings; :class:`DecodeError` names the row."""

    def one(s: str) -> bytes:
        parts = s.split(":")
        if len(parts) != 6 or not all(len(p) == 2 for p in parts):
            raise ValueError(s)
        return bytes.fromhex("".join(parts))

    codes, parsed = _parse_unique(values, one, "EUI-48 MAC address", where)
    if not parsed:
        return np.zeros((0, 6), np.uint8)
    table = np.frombuffer(b"".join(parsed), dtype=np.uint8).reshape(-1, 6)  # type: ignore[arg-type]
    return table[codes]


def _parse_unique(
    values: Sequence[object] | np.ndarray, parse: Callable[[str], object], what: str, where: str
) -> tuple[np.ndarray, list[object]]:
    codes, uniques = pd.factorize(pd.Series(values, dtype=object), use_na_sentinel=True)
    if (codes < 0).any():
        row = int(np.flatnonzero(codes < 0)[0])
        raise DecodeError(f"{where} row {row}: missing {what}")
    parsed = []
    for u in uniques:
        try:
            parsed.append(parse(str(u).strip()))
        except ValueError:
            row = int(np.flatnonzero(codes == len(parsed))[0])
            raise DecodeError(f"{where} row {row}: {u!r} is not an {what}") from None
    return codes, parsed


def parse_ipv4(values: Sequence[object] | np.ndarray, where: str = "address") -> np.ndarray:
    """Host-order uint32 array from IPv4 address strings; :class:`DecodeError` names the row."""
    codes, parsed = _parse_unique(values, lambda s: int(ipaddress.IPv4Address(s)), "IPv4 address", where)
    return np.asarray(parsed, dtype=np.uint32)[codes] if parsed else np.zeros(0, np.uint32)


def parse_ip_bytes(values: Sequence[object] | np.ndarray, where: str = "address") -> np.ndarray:
    """``(n, 16)`` uint8 array from IPv4/IPv6 strings; IPv4 fills the first 4 bytes.

    This is the layout of Cilium's address unions (``union v6addr`` with ``ip4`` first);
    callers check the address family against the struct's family field.
    """
    codes, parsed = _parse_unique(
        values, lambda s: ipaddress.ip_address(s).packed.ljust(16, b"\0"), "IP address", where
    )
    if not parsed:
        return np.zeros((0, 16), np.uint8)
    table = np.frombuffer(b"".join(parsed), dtype=np.uint8).reshape(-1, 16)  # type: ignore[arg-type]
    return table[codes]


def is_ipv4_string(values: Sequence[object] | np.ndarray) -> np.ndarray:
    """Boolean array: which address strings are IPv4 (dotted quad)."""
    codes, uniques = pd.factorize(pd.Series(values, dtype=object))
    table = np.array([":" not in str(u) for u in uniques], dtype=bool)
    return table[codes] if len(table) else np.zeros(len(codes), bool)


def ip_to_hex(address: str) -> str:
    """The address as bpftool prints it: ``10.10.134.48`` -> ``0a 0a 86 30``.

    Handy for grepping a ``bpftool map dump`` for entries of one IP, as in case 000.
    """
    try:
        packed = ipaddress.ip_address(str(address).strip()).packed
    except ValueError:
        raise DecodeError(f"{address!r} is not an IP address") from None
    return " ".join(f"{b:02x}" for b in packed)
