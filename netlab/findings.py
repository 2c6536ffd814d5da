"""Findings: what an investigation concluded, as data.

Every investigation returns a :class:`Findings`: a verdict code, a one-paragraph
summary, the evidence (tables with a caption and a note on how to read them), the
mechanism each step used (or why it was skipped) and the remediation, shown but never
applied. It renders as HTML in a notebook and serialises to JSON, which
:func:`netlab.report.record` also embeds in the executed notebook so batch tools and
tests can read it back.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where a frame is made: `netlab run` reads findings without pandas
    import pandas as pd

HEALTHY = "healthy"
INCONCLUSIVE = "inconclusive"

# The MIME type under which findings are embedded in an executed notebook.
FINDINGS_MIME = "application/vnd.netlab.findings+json"
# ... and the evidence they were decided on (netlab.investigations.base.Evidence).
EVIDENCE_MIME = "application/vnd.netlab.evidence+json"


@dataclass
class Evidence:
    """One piece of evidence: a caption, a table (rows) and how to read it."""

    title: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""

    @classmethod
    def table(cls, title: str, frame: pd.DataFrame, note: str = "", limit: int = 50) -> Evidence:
        rows = json.loads(frame.head(limit).to_json(orient="records", date_format="iso"))
        return cls(title, rows, note)

    def frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(self.rows)


@dataclass
class Findings:
    investigation: str
    target: str
    verdict: str
    summary: str
    evidence: list[Evidence] = field(default_factory=list)
    mechanisms: dict[str, str] = field(default_factory=dict)
    remediation: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    kernel: str = ""
    time: str = field(default_factory=lambda: _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))

    @property
    def healthy(self) -> bool:
        return self.verdict == HEALTHY

    def to_dict(self) -> dict[str, Any]:
        return {
            "investigation": self.investigation,
            "target": self.target,
            "verdict": self.verdict,
            "healthy": self.healthy,
            "summary": self.summary,
            "evidence": [{"title": e.title, "note": e.note, "rows": e.rows} for e in self.evidence],
            "mechanisms": dict(self.mechanisms),
            "remediation": list(self.remediation),
            "reasons": list(self.reasons),
            "kernel": self.kernel,
            "time": self.time,
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), default=str, **kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Findings:
        return cls(
            investigation=data["investigation"],
            target=data["target"],
            verdict=data["verdict"],
            summary=data["summary"],
            evidence=[
                Evidence(e["title"], e.get("rows", []), e.get("note", "")) for e in data.get("evidence", [])
            ],
            mechanisms=dict(data.get("mechanisms", {})),
            remediation=list(data.get("remediation", [])),
            reasons=list(data.get("reasons", [])),
            kernel=data.get("kernel", ""),
            time=data.get("time", ""),
        )

    def _repr_html_(self) -> str:
        colour = "#1a7f37" if self.healthy else ("#9a6700" if self.verdict == INCONCLUSIVE else "#cf222e")
        esc = html.escape
        parts = [
            f'<div class="netlab-findings" data-verdict="{esc(self.verdict)}">',
            f'<h3 style="color:{colour}">Verdict: <code>{esc(self.verdict)}</code></h3>',
            f"<p>{esc(self.summary)}</p>",
        ]
        if self.reasons:
            parts.append("<ul>" + "".join(f"<li>{esc(r)}</li>" for r in self.reasons) + "</ul>")
        for item in self.evidence:
            parts.append(f"<h4>{esc(item.title)}</h4>")
            if item.note:
                parts.append(f"<p><em>{esc(item.note)}</em></p>")
            if item.rows:
                parts.append(item.frame().to_html(index=False, border=0, max_rows=50))
        if self.remediation:
            parts.append("<h4>Remediation (shown, not applied)</h4><ul>")
            parts += [f"<li><code>{esc(r)}</code></li>" for r in self.remediation]
            parts.append("</ul>")
        if self.mechanisms:
            import pandas as pd

            parts.append("<h4>Mechanisms</h4>")
            parts.append(
                pd.DataFrame(
                    {"step": list(self.mechanisms), "mechanism": list(self.mechanisms.values())}
                ).to_html(index=False, border=0)
            )
        parts.append("</div>")
        return "\n".join(parts)

    def __str__(self) -> str:
        return f"{self.investigation} on {self.target}: {self.verdict} - {self.summary}"
