"""The contract every investigation keeps.

An investigation is a class that declares, once:

- ``params``: its parameters (:class:`Param`: type, default, help, validation, and where a
  lab scenario's saved parameters hold the value). The notebook's parameters cell, the
  form, ``netlab run NAME --help`` and the unknown-parameter check all follow it;
- ``steps``: its :class:`~netlab.capability.Step` declarations, in order: each names its
  method and its mechanisms in order of preference. A step starts with
  :meth:`Investigation.mechanism`, which picks the first mechanism that can run on this
  node (probed, never assumed) and records it, or records why none can; it stores its
  result once, in :attr:`Investigation.results`;
- ``decide(evidence)``: a static, pure function from the collected :class:`Evidence` to
  :class:`Findings`. It reads nothing else, so recorded evidence replays into it
  without root (``tests/data/evidence``).

A new investigation is its class (registered in :mod:`netlab.investigations`), its
notebook, optionally a lab scenario, and tests.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pandas as pd

from netlab.capability import Mechanism, Node, Step, masked_from_env
from netlab.errors import NetlabError
from netlab.findings import INCONCLUSIVE, Findings
from netlab.findings import Evidence as Shown
from netlab.targets import Target, open_target

T = TypeVar("T", bound="Investigation")

# Triage scores: how strongly a quick check points at its incident.
NOTHING, WORTH_A_LOOK, LIKELY = 0, 1, 2


@dataclass
class Signal:
    """What an investigation's quick check (``triage``) saw on a node."""

    investigation: str
    score: int
    headline: str
    detail: str = ""
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Param:
    """One parameter of an investigation.

    ``check(value, name)`` validates and normalises a given value (not the default).
    ``lab`` says where a lab scenario's saved parameters hold the value (``a.b`` walks
    into nested dicts); ``lab_format`` turns it into the parameter (``"netns://{}"``).
    """

    name: str
    type: type
    default: Any
    help: str
    check: Callable[[Any, str], Any] | None = None
    lab: str = ""
    lab_format: str = "{}"
    required: bool = False

    def parse(self, value: Any) -> Any:
        if value is None or value == self.default:
            if self.required:
                raise NetlabError(f"parameter {self.name}: required ({self.help})")
            return self.default
        value = self._typed(value)
        if self.check is None:
            return value
        try:
            return self.check(value, self.name)
        except NetlabError as exc:
            # Validators shared with other callers may not name the parameter: say it here.
            if exc.message.startswith(f"parameter {self.name}:"):
                raise
            raise NetlabError(f"parameter {self.name}: {exc.message}", exc.remedy) from None

    def _typed(self, value: Any) -> Any:
        bad = NetlabError(f"parameter {self.name}: {value!r} is not {_TYPE_WORDS[self.type]}")
        if self.type is str:
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                raise bad
            return str(value)
        if self.type is int:
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise bad
            try:
                return int(str(value).strip())
            except ValueError:
                raise bad from None
        if self.type is float:
            try:
                number = float(value) if not isinstance(value, bool) else math.nan
            except (TypeError, ValueError):
                raise bad from None
            if not math.isfinite(number):
                raise bad
            return number
        if self.type is dict:
            if not isinstance(value, dict):
                raise bad
            return value
        raise NetlabError(f"parameter {self.name}: unsupported declared type {self.type!r}")

    def describe(self) -> str:
        default = repr(self.default) if self.default not in ("", None) else "(none)"
        return f"{self.name}: {self.type.__name__} = {default}  # {self.help}"


_TYPE_WORDS = {str: "text", int: "a whole number", float: "a finite number", dict: "a mapping"}


def _frame_to_json(frame: pd.DataFrame) -> dict[str, Any]:
    return {"__frame__": json.loads(frame.to_json(orient="table", date_format="iso", default_handler=str))}


def _to_json(value: Any) -> Any:
    if isinstance(value, pd.DataFrame):
        return _frame_to_json(value)
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_json(v) for v in value]
    return value


def _from_json(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"__frame__"}:
        frame = pd.read_json(StringIO(json.dumps(value["__frame__"])), orient="table")
        return frame.reset_index(drop=True)
    if isinstance(value, dict):
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


@dataclass
class Evidence:
    """Everything one run collected: the only input of ``decide``. Saved and loaded as
    JSON (tables keep their columns and types), embedded in the executed notebook."""

    investigation: str
    target: str
    kernel: str
    params: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    mechanisms: dict[str, str] = field(default_factory=dict)
    shown: list[Shown] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "investigation": self.investigation,
            "target": self.target,
            "kernel": self.kernel,
            "params": _to_json(self.params),
            "results": _to_json(self.results),
            "mechanisms": dict(self.mechanisms),
            "shown": [{"title": s.title, "note": s.note, "rows": s.rows} for s in self.shown],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Evidence:
        return cls(
            investigation=data["investigation"],
            target=data["target"],
            kernel=data.get("kernel", ""),
            params=_from_json(data.get("params", {})),
            results=_from_json(data.get("results", {})),
            mechanisms=dict(data.get("mechanisms", {})),
            shown=[Shown(s["title"], s.get("rows", []), s.get("note", "")) for s in data.get("shown", [])],
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1, default=str) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Evidence:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def findings(self, verdict: str, summary: str, *, remediation: list[str] | None = None,
                 reasons: list[str] | None = None) -> Findings:  # fmt: skip
        return Findings(
            investigation=self.investigation,
            target=self.target,
            verdict=verdict,
            summary=summary,
            evidence=list(self.shown),
            mechanisms=dict(self.mechanisms),
            remediation=list(remediation or []),
            reasons=list(reasons or []),
            kernel=self.kernel,
        )

    def inconclusive(self, reasons: list[str]) -> Findings:
        return self.findings(
            INCONCLUSIVE,
            "The evidence needed for a verdict is missing: " + "; ".join(reasons),
            reasons=reasons,
        )


class Investigation:
    """One run of an investigation against one target (see the module docstring)."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    notebook: ClassVar[str] = ""  # the notebook file shipped with netlab
    scenario: ClassVar[str] = ""  # the lab scenario that reproduces it
    params: ClassVar[tuple[Param, ...]] = ()
    steps: ClassVar[tuple[Step, ...]] = ()

    def __init__(self, target: str | Target = "local", **values: Any):
        self.target = open_target(target)
        self.values = self.parse(values)
        self.mechanisms: dict[str, str] = {}
        self.evidence_items: list[Shown] = []
        self.results: dict[str, Any] = {}
        # What this node can do, probed on first need and remembered for the run.
        self.node = Node(self.target, masked=masked_from_env())
        # What makes the traffic during a capture window: a lab scenario's reproduction
        # (set by ``start``), or nothing and the user reproduces by hand.
        self.during: Callable[[], Any] | None = None
        self.prepare()

    def prepare(self) -> None:
        """Derive what the steps need from :attr:`values` (override; default nothing)."""

    # --- parameters ------------------------------------------------------------------
    @classmethod
    def param(cls, name: str) -> Param:
        return next(p for p in cls.params if p.name == name)

    @classmethod
    def parameters_cell(cls) -> str:
        """The notebook's ``parameters`` cell, derived from the declarations (papermill
        reads ``name: type = default  # help`` for ``--help-notebook``)."""
        lines = [
            'target: str = "local"  # the node: local, netns://NAME or ssh://[user@]host[:port]',
            f'lab: str = ""  # a lab scenario to take the parameters from, e.g. {cls.scenario}',
        ]
        for p in cls.params:
            default = json.dumps(p.default) if isinstance(p.default, str) else repr(p.default)
            lines.append(f"{p.name}: {p.type.__name__} = {default}  # {p.help}")
        return "\n".join(lines)

    @classmethod
    def parse(cls, given: Mapping[str, Any]) -> dict[str, Any]:
        """Every declared parameter, validated; unknown names are an error."""
        names = [p.name for p in cls.params]
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise NetlabError(
                f"parameter {unknown[0]}: {cls.name} has no such parameter",
                f"its parameters: {', '.join(names)} (see `netlab run {cls.name} --help`)",
            )
        return {p.name: p.parse(given.get(p.name)) for p in cls.params}

    @classmethod
    def resolve(cls, target: str = "local", lab: str = "", **given: Any) -> tuple[str, dict[str, Any]]:
        """The target and parameters of a run: values equal to their default count as not
        given, and with ``lab`` are taken from the running lab scenario, whose node
        namespace replaces a ``local`` target."""
        known = {p.name for p in cls.params}
        given = {k: v for k, v in given.items() if k not in known or v != cls.param(k).default}
        if not lab:
            return target, given
        from netlab import lab as labs

        node, saved = labs.node_target(lab, open_target(target))
        for p in cls.params:
            if p.lab and p.name not in given:
                value: Any = saved
                for part in p.lab.split("."):
                    value = value.get(part) if isinstance(value, dict) else None
                if isinstance(value, dict):
                    given[p.name] = {k: p.lab_format.format(x) for k, x in value.items()}
                elif value not in (None, ""):
                    given[p.name] = p.lab_format.format(value) if p.lab_format != "{}" else value
        return node.url, given

    @classmethod
    def start(cls: type[T], target: str = "local", lab: str = "", **given: Any) -> T:
        """A run ready for its steps; see :meth:`resolve` for ``lab``."""
        target, given = cls.resolve(target, lab, **given)
        run = cls(target, **given)
        if not run.target.host().is_local:
            # What a killed run left on that node (this machine is swept by the notebook),
            # and this run's, should it be killed.
            from netlab import cleanup, guard

            cleanup.sweep_orphans(run.target)
            guard.announce(run.target.host().url)
        if lab:
            from netlab import lab as labs

            # The scenario's own reproduction (its client, say), run by steps that open
            # a capture window: the lab is passed in, never imported by an investigation.
            run.during = labs.reproduction(lab, run.target)
        return run

    @classmethod
    def start_from(cls: type[T], namespace: Mapping[str, Any]) -> T:
        """A run from a notebook's variables: ``target``, ``lab`` and every declared
        parameter found there (so the call is never re-typed per parameter)."""
        given = {p.name: namespace[p.name] for p in cls.params if p.name in namespace}
        return cls.start(namespace.get("target", "local"), namespace.get("lab", ""), **given)

    # --- steps -----------------------------------------------------------------------
    def run(self) -> Findings:
        """Every step in order, then the verdict."""
        for step in self.steps:
            getattr(self, step.method)()
        return self.verdict()

    @classmethod
    def step(cls, method: str) -> Step:
        return next(s for s in cls.steps if s.method == method)

    def mechanism(self, method: str) -> Mechanism | None:
        """The mechanism step ``method`` uses on this node, recorded; or None, with the
        reason recorded, when none of its mechanisms can run here."""
        step = self.step(method)
        chosen, why = step.choose(self.node)
        if chosen is None:
            self.skipped(step.title, f"no mechanism can run here: {why}")
        else:
            self.used(step.title, why)
        return chosen

    def used(self, step: str, mechanism: str) -> None:
        self.mechanisms[step] = mechanism

    def skipped(self, step: str, why: str) -> None:
        self.mechanisms[step] = f"skipped: {why}"

    def evidence(self, title: str, table: pd.DataFrame | list[dict[str, Any]], note: str = "") -> None:
        """Show ``table`` in the findings under ``title`` (replacing an earlier one)."""
        frame = table if isinstance(table, pd.DataFrame) else pd.DataFrame(table)
        self.evidence_items = [e for e in self.evidence_items if e.title != title]
        self.evidence_items.append(Shown.table(title, frame, note))

    def kernel(self) -> str:
        return self.target.run(["uname", "-r"], check=False).stdout.strip()

    def collected(self) -> Evidence:
        return Evidence(
            investigation=self.name,
            target=self.target.url,
            kernel=self.kernel(),
            params=dict(self.values),
            results=dict(self.results),
            mechanisms=dict(self.mechanisms),
            shown=list(self.evidence_items),
        )

    def verdict(self) -> Findings:
        """The verdict on what the steps collected so far."""
        return self.decide(self.collected())

    @staticmethod
    def decide(evidence: Evidence) -> Findings:
        raise NotImplementedError

    @staticmethod
    def triage(target: Target) -> Signal:
        """A cheap, read-only look (no traces, no traffic) at the symptom this
        investigation knows, with a score and the parameters to open it with."""
        raise NotImplementedError
