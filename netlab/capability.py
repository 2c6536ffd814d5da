"""What a node can do, and which mechanism each investigation step uses there.

- A :class:`Capability` is one question about a node ("can a tracepoint be enabled in a
  private tracefs instance?"), answered by *trying it* through the node's target. The
  probe lives beside the code that needs it (``probes/tracefs.py`` holds the tracepoint
  probe, ``probes/bcc.py`` the BCC and kprobe ones, ``collectors/ss.py`` the ``ss``
  one...), as retis keeps ``can_run``
  beside each collector.
- A :class:`Mechanism` is one way a step collects its data, with the capabilities it
  needs; it is declared beside the collector that implements it.
- A :class:`Step` lists its mechanisms in order of preference. :meth:`Step.choose`
  picks, on a given :class:`Node`, the first one whose capabilities all hold, or says
  why none can run.
- A :class:`Node` probes lazily and remembers each answer, so a run asks each question
  once, and the doctor (which asks them all) is the same code.

Everything a probe creates is named with netlab's prefix and removed before it returns.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from netlab.errors import NetlabError
from netlab.targets import Target


@dataclass
class Check:
    """The answer of one capability probe."""

    name: str
    available: bool | None  # None: could not be determined
    detail: str


@dataclass(frozen=True, eq=False)
class Capability:
    """A probed question about a node. ``requires`` are asked first: when one of them
    does not hold, this one does not either, and says which."""

    name: str
    probe: Callable[[Target, Node], Check]
    requires: tuple[Capability, ...] = ()


def capability(
    name: str, *, requires: Iterable[Capability] = ()
) -> Callable[[Callable[[Target, Node], Check]], Capability]:
    """Declare a capability from its probe function."""

    def wrap(func: Callable[[Target, Node], Check]) -> Capability:
        return Capability(name, func, tuple(requires))

    return wrap


def command(name: str, argv: list[str], what: str) -> Capability:
    """A capability that holds when ``argv`` (a tool's version query) succeeds."""

    def probe(target: Target, node: Node) -> Check:
        result = target.run(argv, check=False)
        if not result.ok:
            return Check(name, False, f"{what}: {result.brief_error()}")
        first = (result.stdout or result.stderr).strip().splitlines()
        detail = first[0] if first else f"{argv[0]} answers"
        return Check(name, True, detail if len(detail) <= 80 else detail[:77] + "...")

    return Capability(name, probe)


def masked_from_env() -> frozenset[str]:
    """Capabilities named in ``NETLAB_MASK`` (comma-separated), treated as absent: how a
    fallback mechanism is run on a node that has the preferred one."""
    return frozenset(n.strip() for n in os.environ.get("NETLAB_MASK", "").split(",") if n.strip())


@dataclass
class Node:
    """One node's capabilities, probed on first use and remembered.

    ``checks`` may be filled in advance (a report read back from JSON, say); ``masked``
    names capabilities to treat as absent, which is how fallback paths are exercised on
    a kernel that has everything.
    """

    target: Target | None
    kernel: str = ""
    checks: dict[str, Check] = field(default_factory=dict)
    masked: frozenset[str] = frozenset()

    def check(self, cap: Capability) -> Check:
        if cap.name in self.masked:
            return Check(cap.name, False, "masked (treated as absent for this run)")
        if cap.name in self.checks:
            return self.checks[cap.name]
        answers = {r.name: self.check(r).available for r in cap.requires}
        missing = [name for name, available in answers.items() if available is False]
        unknown = [name for name, available in answers.items() if available is None]
        if missing:
            answer = Check(cap.name, False, f"needs {', '.join(missing)}")
        elif unknown:
            answer = Check(cap.name, None, f"depends on {', '.join(unknown)}, which could not be determined")
        elif self.target is None:
            answer = Check(cap.name, None, "not probed")
        else:
            try:
                answer = cap.probe(self.target, self)
            except NetlabError as exc:
                answer = Check(cap.name, None, exc.message)
        self.checks[cap.name] = answer
        return answer

    def ok(self, cap: Capability) -> bool:
        return bool(self.check(cap).available)


@dataclass(frozen=True, eq=False)
class Mechanism:
    """One way of collecting a step's data, and what it needs on the node."""

    name: str
    needs: tuple[Capability, ...] = ()

    def can_run(self, node: Node) -> str | None:
        """None when it can run on ``node``; otherwise why not."""
        missing = [c for c in self.needs if not node.ok(c)]
        if not missing:
            return None
        return "needs " + "; ".join(f"{c.name} ({node.check(c).detail})" for c in missing)


@dataclass(frozen=True)
class Step:
    """One step of an investigation: its method, its title in reports, and its
    mechanisms in order of preference."""

    method: str
    title: str
    mechanisms: tuple[Mechanism, ...]

    def choose(self, node: Node) -> tuple[Mechanism | None, str]:
        """The first mechanism that can run on ``node`` (and its name), or None and why
        each one cannot."""
        why = []
        for mechanism in self.mechanisms:
            reason = mechanism.can_run(node)
            if reason is None:
                return mechanism, mechanism.name
            why.append(f"{mechanism.name} {reason}")
        return None, " | ".join(why)

    def capabilities(self) -> list[Capability]:
        return [c for m in self.mechanisms for c in m.needs]
