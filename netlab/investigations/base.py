"""What every investigation shares: the target, its parameters, the mechanisms each
step used and the evidence gathered so far, turned into :class:`Findings` at the end."""

from __future__ import annotations

from typing import Any

import pandas as pd

from netlab.findings import INCONCLUSIVE, Evidence, Findings
from netlab.targets import Target, open_target


class Session:
    """One run of an investigation against one target.

    Step helpers call :meth:`used` or :meth:`skipped` so the findings say how each
    step was done on this node, and :meth:`evidence` for what the verdict rests on.
    """

    investigation: str = ""

    def __init__(self, target: str | Target = "local", **params: Any):
        self.target = open_target(target)
        self.params = params
        self.mechanisms: dict[str, str] = {}
        self.evidence_items: list[Evidence] = []
        self.results: dict[str, Any] = {}

    def used(self, step: str, mechanism: str) -> None:
        self.mechanisms[step] = mechanism

    def skipped(self, step: str, why: str) -> None:
        self.mechanisms[step] = f"skipped: {why}"

    def evidence(self, title: str, table: pd.DataFrame | list[dict[str, Any]], note: str = "") -> None:
        frame = table if isinstance(table, pd.DataFrame) else pd.DataFrame(table)
        self.evidence_items = [e for e in self.evidence_items if e.title != title]
        self.evidence_items.append(Evidence.table(title, frame, note))

    def kernel(self) -> str:
        return self.target.run(["uname", "-r"], check=False).stdout.strip()

    def findings(
        self,
        verdict: str,
        summary: str,
        *,
        remediation: list[str] | None = None,
        reasons: list[str] | None = None,
    ) -> Findings:
        return Findings(
            investigation=self.investigation,
            target=self.target.url,
            verdict=verdict,
            summary=summary,
            evidence=list(self.evidence_items),
            mechanisms=dict(self.mechanisms),
            remediation=list(remediation or []),
            reasons=list(reasons or []),
            kernel=self.kernel(),
        )

    def inconclusive(self, reasons: list[str]) -> Findings:
        return self.findings(
            INCONCLUSIVE,
            "The evidence needed for a verdict is missing: " + "; ".join(reasons),
            reasons=reasons,
        )


def from_lab(
    target: str, lab: str, params: dict[str, Any], fill: dict[str, str]
) -> tuple[str, dict[str, Any]]:
    """Parameters for a run against a lab scenario: empty values dropped, then those
    named in ``fill`` (parameter -> key of the lab's saved parameters) taken from the
    lab, and a ``local`` target moved into the lab's node namespace."""
    params = {k: v for k, v in params.items() if v not in ("", None, 0)}
    if not lab:
        return target, params
    from netlab import lab as labs

    saved = labs.load_params(lab)
    for name, key in fill.items():
        value: Any = saved
        for part in key.split("."):
            value = value[part]
        params.setdefault(name, value)
    if target == "local":
        target = f"netns://{saved['node_netns']}"
    return target, params
