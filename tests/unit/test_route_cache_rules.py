"""Which kernels enforce max_size, which batch they use, and the percpu model."""

from __future__ import annotations

import pytest

from netlab.collectors.rt6 import parse_rt6_stats
from netlab.errors import DecodeError, NetlabError
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


@pytest.mark.parametrize(("returns", "enforced"), [("int", True), ("void", False)])
def test_the_btf_settles_enforcement_whatever_the_release(returns: str, enforced: bool) -> None:
    """Debian's 6.1 carries 6.3's removal (dst_ops.gc returns void): its release alone
    would say "likely enforced"; its BTF says certainly not. A 4.19 that still returns
    int certainly enforces it."""
    for release in ("4.19.0-21-amd64", "6.1.0-57-amd64"):
        rules = kernel_rules(release, 2, returns)
        assert rules.enforces_max_size is enforced
        assert rules.max_size_certainty.startswith(
            f"certain: this kernel's BTF has dst_ops.gc returning {returns}"
        )


# Excerpts of `bpftool btf dump file /sys/kernel/btf/vmlinux format raw`: Debian's 6.1.192
# (as read on the guest node) and the shape a kernel before af6d10345ca7 has.
_DUMP_6_1 = """\
[15] INT 'unsigned int' size=4 bits_offset=0 nr_bits=32 encoding=(none)
[2073] STRUCT 'dst_ops' size=192 vlen=18
\t'family' type_id=26 bits_offset=0
\t'gc_thresh' type_id=15 bits_offset=32
\t'gc' type_id=2076 bits_offset=64
\t'check' type_id=2081 bits_offset=128
\t'default_advmss' type_id=2083 bits_offset=192
[2074] FUNC_PROTO '(anon)' ret_type_id=0 vlen=1
\t'(anon)' type_id=2075
[2075] PTR '(anon)' type_id=2073
[2076] PTR '(anon)' type_id=2074
[2081] PTR '(anon)' type_id=2082
[2082] FUNC_PROTO '(anon)' ret_type_id=2075 vlen=2
\t'(anon)' type_id=2075
\t'(anon)' type_id=15
[2083] PTR '(anon)' type_id=2084
[2084] FUNC_PROTO '(anon)' ret_type_id=2085 vlen=1
\t'(anon)' type_id=2075
[2085] TYPEDEF 'u32' type_id=15
"""
_DUMP_OLD = (
    _DUMP_6_1.replace(
        "[2074] FUNC_PROTO '(anon)' ret_type_id=0 vlen=1", "[2074] FUNC_PROTO '(anon)' ret_type_id=21 vlen=1"
    )
    + "[21] INT 'int' size=4 bits_offset=0 nr_bits=32 encoding=SIGNED\n"
)


def test_function_pointer_return_types_from_a_raw_btf_dump() -> None:
    from netlab.collectors.kernel_btf import function_pointer_returns

    assert function_pointer_returns(_DUMP_6_1, "dst_ops", "gc") == "void"
    assert function_pointer_returns(_DUMP_OLD, "dst_ops", "gc") == "int"
    assert function_pointer_returns(_DUMP_6_1, "dst_ops", "check") == "pointer"
    assert function_pointer_returns(_DUMP_6_1, "dst_ops", "default_advmss") == "unsigned int"  # through u32
    with pytest.raises(NetlabError, match="no struct rt6_info"):
        function_pointer_returns(_DUMP_6_1, "rt6_info", "gc")
    with pytest.raises(NetlabError, match="struct dst_ops has no member destroy"):
        function_pointer_returns(_DUMP_6_1, "dst_ops", "destroy")
    with pytest.raises(NetlabError, match="dst_ops.gc_thresh is a INT, not a function pointer"):
        function_pointer_returns(_DUMP_6_1, "dst_ops", "gc_thresh")
