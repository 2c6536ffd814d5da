"""Presentation: notebooks set-up, findings recorded into executed notebooks, runs
through papermill, HTML reports and write-ups.

In a notebook::

    import netlab.report
    netlab.report.init_notebook()     # first cell
    ...
    netlab.report.record(findings)    # last cell: shows the verdict, embeds the JSON
"""

from __future__ import annotations

from typing import Any

from netlab.findings import FINDINGS_MIME, Findings
from netlab.report.notebook import init_notebook, read_findings

__all__ = ["FINDINGS_MIME", "init_notebook", "read_findings", "record"]


def record(findings: Findings) -> None:
    """Display ``findings`` and embed them as JSON in the cell's output, where
    :func:`read_findings` (and ``netlab run``) find them again. Returns nothing, so the
    notebook shows the verdict once."""
    from IPython.display import display

    bundle: dict[str, Any] = {
        "text/plain": str(findings),
        "text/html": findings._repr_html_(),
        FINDINGS_MIME: findings.to_dict(),
    }
    display(bundle, raw=True)
