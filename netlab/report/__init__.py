"""Presentation: notebooks set-up, findings recorded into executed notebooks, runs
through papermill, HTML reports and write-ups.

In a notebook::

    import netlab.report
    netlab.report.init_notebook()     # first cell
    ...
    netlab.report.record(session)     # last cell: the verdict shown; findings and evidence embedded
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from netlab.findings import EVIDENCE_MIME, FINDINGS_MIME, Findings
from netlab.report.notebook import init_notebook, read_evidence, read_findings

if TYPE_CHECKING:
    from netlab.investigations.base import Investigation

__all__ = ["EVIDENCE_MIME", "FINDINGS_MIME", "init_notebook", "read_evidence", "read_findings", "record"]


def record(run: Investigation | Findings) -> Findings:
    """Decide on a run's evidence, display the findings and embed both as JSON in the
    cell's output, where :func:`read_findings`, :func:`read_evidence` (and ``netlab run``)
    find them again. The notebook shows the verdict once (the value is not echoed when
    the call ends the cell with ``;`` or is assigned)."""
    from IPython.display import display

    from netlab.investigations.base import Investigation

    bundle: dict[str, Any] = {}
    if isinstance(run, Investigation):
        evidence = run.collected()
        findings = run.decide(evidence)
        bundle[EVIDENCE_MIME] = evidence.to_dict()
    else:
        findings = run
    bundle.update({"text/plain": str(findings), "text/html": findings._repr_html_(),
                   FINDINGS_MIME: findings.to_dict()})  # fmt: skip
    display(bundle, raw=True)
    return findings
