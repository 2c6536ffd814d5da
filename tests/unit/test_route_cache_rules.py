"""Which kernels enforce max_size, which batch they use, and the percpu model."""

from __future__ import annotations

import pytest

from netlab.collectors.rt6 import parse_rt6_stats
from netlab.errors import DecodeError
from netlab.investigations.route_cache import kernel_rules, simulate


@pytest.mark.parametrize(
    ("release", "cpus", "enforced", "batch"),
    [
        ("4.19.0-21-amd64", 96, True, 192),
        ("4.19.0-21-amd64", 8, True, 32),
        ("5.10.0-28-cloud-amd64", 96, True, 32),
        ("6.1.0-18-amd64", 96, True, 32),
        ("6.18.44-fc-v445", 2, False, 32),
        ("6.3.0", 4, False, 32),
    ],
)
def test_kernel_rules(release: str, cpus: int, enforced: bool, batch: int) -> None:
    rules = kernel_rules(release, cpus)
    assert rules.enforces_max_size is enforced
    assert rules.batch == batch
    assert rules.worst_gap == cpus * (batch - 1)
    assert ("certain" in rules.max_size_certainty) is not enforced or "likely" in rules.max_size_certainty


def test_the_case_host() -> None:
    """The write-up's numbers: 96 CPUs on 4.19 fold every 192, lag up to 96*191."""
    assert kernel_rules("4.19.91", 96).worst_gap == 96 * 191


def test_simulation_stays_within_the_bound() -> None:
    frame = simulate(8, 32, 5000)
    gap = (frame["slow"] - frame["fast"]).abs()
    assert gap.max() <= 8 * 31 and gap.max() > 0


def test_rt6_stats() -> None:
    stats = parse_rt6_stats("0019 000e 00e0 0015 00c8 00c8 0000\n")
    assert stats["dst_entries"] == 200 and stats["fib_rt_cache"] == 200 and stats["fib_nodes"] == 25
    with pytest.raises(DecodeError, match="rt6_stats"):
        parse_rt6_stats("00 zz")
