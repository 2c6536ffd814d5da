"""Triage: quick, read-only checks from every investigation against one target, ranked.

Each investigation class offers ``triage(target) -> Signal``: a cheap look (no traces,
no traffic) at the symptom it knows, with a score and the parameters to open its
notebook with. Triage runs them all, ranks them, and says which notebook to open
next and why.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pandas as pd

from netlab.errors import NetlabError
from netlab.investigations import REGISTRY
from netlab.investigations.base import NOTHING, Signal
from netlab.targets import Target, open_target


def run(target: str | Target = "local", *, lab: str = "") -> list[Signal]:
    """Every investigation's quick check against ``target``, highest score first."""
    tgt = open_target(target)
    if lab:
        from netlab import lab as labs

        tgt, _ = labs.node_target(lab, tgt)
    signals = []
    for cls in REGISTRY.values():
        try:
            signal = cls.triage(tgt)
        except NetlabError as exc:
            signal = Signal(cls.name, NOTHING, "quick check could not run", exc.message)
        if lab:
            signal.params.setdefault("lab", lab)
        signals.append(signal)
    return sorted(signals, key=lambda s: -s.score)


def table(signals: list[Signal]) -> pd.DataFrame:
    rows = []
    for s in signals:
        row = asdict(s)
        row["score"] = ["nothing", "worth a look", "likely"][s.score]
        row["notebook"] = REGISTRY[s.investigation].notebook
        rows.append(row)
    return pd.DataFrame(rows, columns=["investigation", "score", "headline", "detail", "notebook", "params"])


def next_step(signals: list[Signal], *, target: str = "local", out_dir: str = "prepared") -> Any:
    """Which notebook to open next and why, as Markdown, with a copy of that notebook
    prepared with its parameters filled in (``prepared/`` beside the triage notebook)."""
    from IPython.display import Markdown

    from netlab.report.run import prepare

    if not signals or signals[0].score == NOTHING:
        return Markdown("No quick check found a symptom. Open the notebook that matches what users report.")
    top = signals[0]
    info = REGISTRY[top.investigation]
    path = prepare(top.investigation, {"target": target, **top.params}, out_dir=out_dir)
    return Markdown(
        f"**Open next: [{info.notebook}]({path})** ({info.title}) because {top.headline}. "
        f"That copy has these parameters filled in: `{top.params}`."
    )
