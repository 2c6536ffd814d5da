"""Investigations read BPF maps through one reader (collectors.bpf_objects.read: the
kernel's batch lookup where it runs, bpftool elsewhere, the mechanism recorded), or for
a sockhash the sockmap iterator with ``bpf_objects.keys`` as its fallback: never their
own ``bpftool map dump``."""

from __future__ import annotations

from pathlib import Path

import netlab.investigations

HERE = Path(netlab.investigations.__file__).parent


def test_no_investigation_dumps_a_map_itself() -> None:
    for path in sorted(HERE.glob("*.py")):
        text = path.read_text()
        for call in ('"map", "dump"', "'map', 'dump'", "bpf_objects.dump(", "bpfmap.read("):
            assert call not in text, f"{path.name} reads a map with {call}; use bpf_objects.read"


def stitched(start: int, end: int, keys: list[int], calls: list[tuple[int, int, int, int]]):  # type: ignore[no-untyped-def]
    """A range of a parallel walk as it stands once walked: its keys (4 bytes, big-endian;
    the value repeats the key) and its calls (first bucket, next bucket, first row, rows)."""
    from netlab.probes import map_batch

    r = map_batch._Range(start, end, 16, 4, 4)
    for i, key in enumerate(keys):
        r.keys[i * 4 : (i + 1) * 4] = r.values[i * 4 : (i + 1) * 4] = key.to_bytes(4, "big")
    r.calls, r.count, r.cursor = calls, len(keys), calls[-1][1]
    return r


def rows(r) -> list[int]:  # type: ignore[no-untyped-def]
    assert r.keys[: r.count * 4] == r.values[: r.count * 4]
    return [int.from_bytes(r.key(i), "big") for i in range(r.count)]


def test_a_ranges_run_into_the_next_is_dropped_once() -> None:
    """Buckets 100 to 109 were read by both: the end of the first range's last call is the
    start of the next range, so those rows go and the rest stay in order."""
    from netlab.probes import map_batch

    first = stitched(0, 100, [1, 2, 3, 4, 5], [(0, 90, 0, 2), (90, 110, 2, 3)])
    map_batch._drop_overrun(first, [stitched(100, 200, [4, 5, 6], [(100, 200, 0, 3)])])
    assert rows(first) == [1, 2, 3]


def test_an_entry_added_under_the_walk_is_kept_and_the_shared_ones_dropped() -> None:
    """7 was added to a bucket past 100 after the next range had read it: the two runs of
    bytes no longer meet, and each key the next range read is dropped one by one."""
    from netlab.probes import map_batch

    first = stitched(0, 100, [1, 2, 3, 4, 7, 5], [(0, 90, 0, 2), (90, 110, 2, 4)])
    map_batch._drop_overrun(first, [stitched(100, 200, [4, 5, 6], [(100, 200, 0, 3)])])
    assert rows(first) == [1, 2, 3, 7]


def test_a_key_found_across_two_keys_bytes_is_no_match() -> None:
    """The next range's first key appears in the last call's bytes only across two keys
    (0x00010203 0x04050607 holds 0x02030405): nothing was read twice, nothing dropped."""
    from netlab.probes import map_batch

    first = stitched(0, 100, [0x00010203, 0x04050607], [(0, 110, 0, 2)])
    map_batch._drop_overrun(first, [stitched(100, 200, [0x02030405], [(115, 200, 0, 1)])])
    assert rows(first) == [0x00010203, 0x04050607]
