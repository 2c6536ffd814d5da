"""The IPv6 dst entry counter of a network namespace, fast and slow.

``dst_entries_get_fast()`` reads the percpu_counter's shared ``count``;
``dst_entries_get_slow()`` adds every CPU's local delta (what rt6_stats column 6 shows).
A CO-RE task iterator (``bpf/dst_counter.bpf.c``) reads the shared count and, where it
can locate each CPU's copy, the per-CPU deltas. Locating them needs the per-CPU offsets;
the iterator measures them from the ``runqueues`` per-CPU variable, which is exact where
the per-CPU section is zero-based (x86-64 before Linux 6.15). The result is checked
against rt6_stats read right after: if the per-CPU sum does not add up, the per-CPU split
is reported as unavailable and the slow value is the kernel's own sum from rt6_stats.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from netlab.capability import Mechanism
from netlab.collectors import rt6
from netlab.errors import NetlabError
from netlab.probes import bpf_build, bpf_iter
from netlab.targets import LocalTarget, Target


@dataclass
class DstCounter:
    fast: int
    slow: int
    per_cpu: dict[int, int] = field(default_factory=dict)
    rt6_dst_entries: int = 0
    per_cpu_exact: bool = False
    note: str = ""

    @property
    def gap(self) -> int:
        return self.slow - self.fast


def runqueues_offset(target: Target) -> int:
    """The link-time offset of ``runqueues`` in .data..percpu, from the node's BTF (read
    on the machine running netlab, cached beside the node's other build products)."""
    cached = os.path.join(bpf_build.cache_dir(target), "runqueues.offset")
    if os.path.exists(cached):
        return int(open(cached).read())
    btf = bpf_build.btf_file(target)
    dump = LocalTarget().run(["bpftool", "btf", "dump", "file", btf, "format", "raw"], timeout=120).stdout
    var = re.search(r"^\[(\d+)\] VAR 'runqueues'", dump, re.M)
    if not var:
        raise NetlabError(f"{target.url}: no BTF variable 'runqueues': per-CPU offsets cannot be measured")
    offset = re.search(rf"type_id={var.group(1)} offset=(\d+) size=\d+ \(VAR 'runqueues'\)", dump)
    if not offset:
        raise NetlabError(f"{target.url}: runqueues is not in BTF's .data..percpu section")
    os.makedirs(os.path.dirname(cached), exist_ok=True)
    with open(cached, "w") as out:
        out.write(offset.group(1))
    return int(offset.group(1))


def parse(text: str) -> tuple[int, dict[int, int]]:
    fast = None
    per_cpu: dict[int, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if parts[:1] == ["fast"] and len(parts) == 2:
            fast = int(parts[1])
        elif parts[:1] == ["cpu"] and len(parts) == 3:
            per_cpu.setdefault(int(parts[1]), int(parts[2]))
    if fast is None:
        raise NetlabError("the dst counter iterator printed no count")
    return fast, per_cpu


def read(target: Target) -> DstCounter:
    """Read the counter of ``target``'s namespace (the iterator runs inside it)."""
    host = target.host()
    offset = runqueues_offset(host)
    obj_defines = {"RUNQUEUES_OFFSET": f"{offset}UL"}
    bpf_build.build("dst_counter.bpf.c", host, defines=obj_defines)
    text = bpf_iter.run("dst_counter.bpf.c", target, defines=obj_defines)
    fast, per_cpu = parse(text)
    column = rt6.stats(target)["dst_entries"]
    summed = fast + sum(per_cpu.values())
    # percpu_counter_sum_positive() clamps at 0, as rt6_stats does.
    if (
        per_cpu
        and max(summed, 0) == column
        and any(per_cpu.values())
        and all(abs(v) < 1024 for v in per_cpu.values())
    ):
        return DstCounter(fast, max(summed, 0), per_cpu, column, True, "per-CPU deltas read from the kernel")
    if per_cpu and fast == column and not any(per_cpu.values()):
        return DstCounter(fast, column, per_cpu, column, False, "every CPU's delta read as 0 and fast equals slow: "
                          "consistent, but a zero read cannot prove the per-CPU addresses right")  # fmt: skip
    return DstCounter(fast, column, {}, column, False,
                      "per-CPU copies could not be located on this kernel (its per-CPU section is not "
                      "zero-based and BTF carries no __percpu tags); the slow value is the kernel's own "
                      "sum from rt6_stats column 6")  # fmt: skip


ITERATOR = Mechanism(
    "BPF task iterator (CO-RE): the shared count and, where locatable, each CPU's delta",
    (bpf_iter.BPF_ITER, rt6.RT6_STATS),
)
