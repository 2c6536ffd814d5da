"""What a node can do, and what each investigation step will use there.

The doctor owns no probe and no table of its own: it asks a :class:`~netlab.capability.Node`
every capability that some investigation step's mechanisms need (plus the node facts in
:data:`FACTS`), and then lets each declared step choose its mechanism, exactly as a run
on that node would. Shown as a table, JSON or a pandas DataFrame.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from netlab import mounts
from netlab.capability import Capability, Check, Node, capability, masked_from_env
from netlab.investigations import REGISTRY
from netlab.probes import bcc, drops
from netlab.targets import Target, open_target

_CAPS = {"CAP_NET_ADMIN": 12, "CAP_SYS_ADMIN": 21, "CAP_SYS_RESOURCE": 24, "CAP_PERFMON": 38, "CAP_BPF": 39}


@capability("privileges")
def PRIVILEGES(target: Target, node: Node) -> Check:
    status = target.read_text("/proc/self/status")
    match = re.search(r"^CapEff:\s*([0-9a-f]+)", status, re.M)
    uid = re.search(r"^Uid:\s*(\d+)", status, re.M)
    eff = int(match.group(1), 16) if match else 0
    have = [n for n, bit in _CAPS.items() if eff >> bit & 1]
    lacking = [n for n in _CAPS if n not in have]
    needed = {"CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"}
    ok = needed.issubset(have) or "CAP_SYS_ADMIN" in have and "CAP_NET_ADMIN" in have
    detail = f"uid {uid.group(1) if uid else '?'}; has {', '.join(have) or 'none'}"
    if lacking:
        detail += f"; lacks {', '.join(lacking)}"
    return Check("privileges", ok, detail)


# Node facts worth knowing even where no step needs them (drop reasons: a step uses them
# when present): the tracing a node offers decides what the next mechanisms can be.
FACTS: tuple[Capability, ...] = (
    PRIVILEGES,
    bcc.KPROBES,
    bcc.KERNEL_HEADERS,
    bcc.BCC_COMPILE,
    bcc.RAW_TRACEPOINT,
    bcc.FENTRY,
    mounts.BPFFS_MOUNT,
    drops.DROP_REASONS,
)


def capabilities() -> list[Capability]:
    """Every capability the doctor asks, requirements first, each once."""
    ordered: list[Capability] = []

    def visit(cap: Capability) -> None:
        if cap in ordered:
            return
        for required in cap.requires:
            visit(required)
        ordered.append(cap)

    for cap in FACTS:
        visit(cap)
    for cls in REGISTRY.values():
        for step in cls.steps:
            for cap in step.capabilities():
                visit(cap)
    return ordered


@dataclass
class Report:
    target: str
    kernel: str
    checks: dict[str, Check] = field(default_factory=dict)
    via: str = "probed from this process"

    def ok(self, name: str) -> bool:
        check = self.checks.get(name)
        return bool(check and check.available)

    def steps(self) -> dict[str, str]:
        """``investigation: step`` -> the mechanism it uses here, or why none can run;
        chosen by the steps' own declarations from this report's answers."""
        node = Node(None, self.kernel, dict(self.checks))
        plan = {}
        for name, cls in REGISTRY.items():
            for step in cls.steps:
                chosen, why = step.choose(node)
                plan[f"{name}: {step.title}"] = why if chosen else f"unavailable: {why}"
        return plan

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "kernel": self.kernel,
            "via": self.via,
            "capabilities": {n: asdict(c) for n, c in self.checks.items()},
            "steps": self.steps(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        report = cls(data["target"], data["kernel"], via=data.get("via", ""))
        for key, value in data.get("capabilities", {}).items():
            report.checks[key] = Check(**value)
        return report

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(c) for c in self.checks.values()])

    def text(self) -> str:
        def mark(v: bool | None) -> str:
            return {True: "yes", False: "no", None: "?"}[v]

        width = max(len(n) for n in self.checks) if self.checks else 10
        lines = [f"netlab doctor: {self.target}  kernel {self.kernel}  ({self.via})", ""]
        lines += [f"  {c.name:<{width}}  {mark(c.available):<3}  {c.detail}" for c in self.checks.values()]
        lines += ["", "Investigation steps on this node:"]
        steps = self.steps()
        width = max(len(s) for s in steps)
        lines += [f"  {s:<{width}}  {m}" for s, m in steps.items()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return self.frame().to_html(index=False)


def check(target: str | Target | None = None) -> Report:
    """Probe ``target`` (default: this machine) and return the :class:`Report`.

    Every probe runs through the target, as the steps' own mechanisms will: plain
    commands, and small Python programs (BCC) run by the node's ``python3``. Nothing
    assumes netlab is installed on the node.
    """
    tgt = open_target(target)
    kernel = tgt.run(["uname", "-r"]).stdout.strip()
    # NETLAB_MASK applies here as in a run, so the plan shown is the plan a run follows.
    node = Node(tgt, kernel, masked=masked_from_env())
    for cap in capabilities():
        node.check(cap)
    via = "probed from this process" if tgt.is_local else f"probed through {tgt.url}"
    return Report(tgt.url, kernel, node.checks, via)


def frame(target: str | Target | None = None) -> pd.DataFrame:
    """The doctor's capabilities as a DataFrame (capability, available, detail)."""
    return check(target).frame()
