"""The scenario interface every lab incident implements, its twins (the ways to bring it
up), and the results of ``verify``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from netlab.errors import NetlabError
from netlab.lab.topology import Topology

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Twin:
    """One way to bring a scenario up: the incident, its healthy twin, or a variant the
    scenario declares by name (stale-cgroup-prog's ``rollout``). ``healthy``: the
    scenario's investigation should find nothing wrong on it."""

    name: str
    healthy: bool
    about: str

    @property
    def label(self) -> str:
        """How commands name it: ``incident``, ``healthy twin``, ``rollout twin``."""
        return self.name if self == INCIDENT else f"{self.name} twin"


INCIDENT = Twin("incident", False, "the fault")
HEALTHY = Twin("healthy", True, "the same topology without the fault")


@dataclass
class VerifyCheck:
    """One thing ``verify`` demonstrates: what was expected, what was seen."""

    check: str
    expected: str
    observed: str
    ok: bool


@dataclass
class VerifyResult:
    scenario: str
    twin: Twin
    checks: list[VerifyCheck] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return self.twin.healthy

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def add(self, check: str, expected: str, observed: str, ok: bool) -> None:
        self.checks.append(VerifyCheck(check, expected, observed, ok))

    def frame(self) -> pd.DataFrame:
        # Imported here: the lab also runs from the zipapp on a node, which has no pandas.
        import pandas as pd

        return pd.DataFrame([asdict(c) for c in self.checks])

    def text(self) -> str:
        lines = [
            f"verify {self.scenario} ({self.twin.label}): "
            + ("reproduced as described" if self.ok else "NOT as described")
        ]
        for c in self.checks:
            lines.append(
                f"  [{'ok' if c.ok else 'FAIL'}] {c.check}: expected {c.expected}; observed {c.observed}"
            )
        return "\n".join(lines)


class Scenario:
    """One incident reproduced in namespaces.

    Subclasses set the class attributes and implement :meth:`build`, :meth:`verify`
    and :meth:`teardown`; the first two (and :meth:`took_effect`) are told which of
    ``twins`` to make or check (the incident and its healthy twin; a scenario may declare
    more). ``build`` returns the parameters an investigation needs (its notebook's
    ``parameters`` cell names); ``teardown`` must remove everything the scenario made
    outside its namespaces (BPF pins, cgroups, host sysctls) by name, so it also works
    after a crashed ``up`` with no saved state.
    """

    name: str = ""
    short: str = ""  # three letters, used in namespace names
    investigation: str = ""
    description: str = ""
    pods: tuple[str, ...] = ("pod1", "pod2")
    twins: tuple[Twin, ...] = (INCIDENT, HEALTHY)

    def twin(self, name: str) -> Twin:
        """The twin called ``name``."""
        for twin in self.twins:
            if twin.name == name:
                return twin
        raise NetlabError(f"lab scenario {self.name} has no twin {name!r}",
                          f"choose one of: {', '.join(t.name for t in self.twins)}")  # fmt: skip

    def topology(self) -> Topology:
        return Topology(self.short, self.pods)

    def build(self, topo: Topology, twin: Twin) -> dict[str, Any]:
        raise NotImplementedError

    def verify(self, params: dict[str, Any], twin: Twin) -> VerifyResult:
        raise NotImplementedError

    def took_effect(self, params: dict[str, Any], twin: Twin) -> list[str]:
        """What of ``twin``'s state (the fault, or its absence on the healthy twin) is
        not in place right after ``build``, in words; empty when all is. Cheap, read-only
        checks: ``verify`` is the full demonstration."""
        return []

    def reproduce(self, params: dict[str, Any]) -> Any:
        """Make the incident's traffic once (bounded), for an investigation's capture
        window; ``None`` when the symptom needs no traffic of the lab's own."""
        return None

    def teardown(self) -> None:
        """Remove what the scenario made outside its namespaces (default: nothing)."""
