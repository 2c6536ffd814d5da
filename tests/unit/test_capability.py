"""Steps choose their mechanism on the node from probed capabilities; the doctor's plan is
derived from the same declarations. Pure: capabilities are given, not probed."""

from __future__ import annotations

import pytest

from netlab import doctor
from netlab.capability import Capability, Check, Mechanism, Node, Step
from netlab.investigations import REGISTRY
from netlab.targets import LocalTarget


def _cap(
    name: str, answer: bool | None, calls: list[str], requires: tuple[Capability, ...] = ()
) -> Capability:
    def probe(target: object, node: Node) -> Check:
        calls.append(name)
        return Check(name, answer, f"{name} said {answer}")

    return Capability(name, probe, requires)


def test_the_first_mechanism_that_can_run_is_chosen_and_each_probe_runs_once() -> None:
    calls: list[str] = []
    kprobes, tracepoints = _cap("kprobes", False, calls), _cap("tracepoints", True, calls)
    step = Step("trace", "trace", (Mechanism("kprobe", (kprobes,)), Mechanism("tracepoint", (tracepoints,))))
    node = Node(LocalTarget())
    chosen, name = step.choose(node)
    assert chosen is step.mechanisms[1] and name == "tracepoint"
    step.choose(node)
    assert calls == ["kprobes", "tracepoints"]


def test_none_can_run_says_why_each_one_cannot() -> None:
    calls: list[str] = []
    base = _cap("tracefs", False, calls)
    tracepoints = _cap("tracepoints", True, calls, requires=(base,))
    step = Step("trace", "trace", (Mechanism("tracepoint", (tracepoints,)),))
    chosen, why = step.choose(Node(LocalTarget()))
    assert chosen is None
    assert why == "tracepoint needs tracepoints (needs tracefs)"
    assert calls == ["tracefs"], "a capability whose requirement fails is not probed"


def test_masked_capabilities_are_absent_without_probing() -> None:
    calls: list[str] = []
    cap = _cap("kprobes", True, calls)
    node = Node(LocalTarget(), masked=frozenset({"kprobes"}))
    assert not node.ok(cap) and calls == []


def test_a_probe_that_raises_is_undetermined_not_a_crash() -> None:
    from netlab.errors import NetlabError

    def probe(target: object, node: Node) -> Check:
        raise NetlabError("node unreachable")

    node = Node(LocalTarget())
    check = node.check(Capability("x", probe))
    assert check.available is None and check.detail == "node unreachable"


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_step_declares_a_method_and_mechanisms(name: str) -> None:
    cls = REGISTRY[name]
    assert cls.steps
    for step in cls.steps:
        assert callable(getattr(cls, step.method, None)), step.method
        assert step.mechanisms, f"{name}: step {step.method} declares no mechanism"


def test_the_doctor_plan_is_derived_from_the_declarations() -> None:
    """Every declared step appears in the plan, and an all-yes report runs each step
    with its first mechanism: no hand-kept table to drift from the code."""
    names = {c.name for c in doctor.capabilities()}
    checks = {n: Check(n, True, "given") for n in names}
    plan = doctor.Report("node", "6.1.0", checks).steps()
    expected = {f"{n}: {s.title}": s.mechanisms[0].name for n, c in REGISTRY.items() for s in c.steps}
    assert plan == expected
    # And with nothing available, every step whose every mechanism needs something says
    # so (a step with a fallback that needs nothing still runs).
    empty = doctor.Report("node", "6.1.0", {n: Check(n, False, "absent") for n in names}).steps()
    needy = {
        f"{n}: {s.title}" for n, c in REGISTRY.items() for s in c.steps if all(m.needs for m in s.mechanisms)
    }
    assert {k for k, v in empty.items() if v.startswith("unavailable: ")} == needy


@pytest.mark.parametrize(
    ("release", "version", "uts", "tree", "ok"),
    [
        # Debian's 6.1 guest: the ABI in uname -r, the version in uname -v.
        (
            "6.1.0-56-amd64",
            "#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2 (2026-10-30)",
            "6.1.0-56-amd64",
            "6.1.192",
            True,
        ),
        # Same ABI name, another build: the version does not match.
        (
            "6.1.0-56-amd64",
            "#1 SMP PREEMPT_DYNAMIC Debian 6.1.190-1 (2026-09-01)",
            "6.1.0-56-amd64",
            "6.1.192",
            False,
        ),
        # The lab VM: Debian's 6.1 headers linked for a 6.18 kernel.
        ("6.18.44-fc-v669", "#1 SMP", "6.1.0-56-amd64", "6.1.192", False),
        # A vanilla or Ubuntu build: the release is the whole story.
        ("6.8.0-45-generic", "#45-Ubuntu SMP", "6.8.0-45-generic", "6.8.0-45-generic", True),
        ("6.8.0-45-generic", "#45-Ubuntu SMP", "", "", False),
    ],
)
def test_headers_are_matched_by_content_not_by_release_string(
    release: str, version: str, uts: str, tree: str, ok: bool
) -> None:
    from netlab.probes.bcc import headers_match

    assert headers_match(release, version, uts, tree)[0] is ok
