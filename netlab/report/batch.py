"""Batch runs: one investigation against many targets, in parallel.

Each target runs as its own ``netlab run`` process (its own Jupyter kernel), with
bounded concurrency and a per-target timeout; one failure becomes an error row and
does not stop the rest. The index page has one row per target with its verdict,
summary and a link to its report.
"""

from __future__ import annotations

import html
import json
import re
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netlab.errors import NetlabError
from netlab.report.run import write_plotly_js
from netlab.targets import LocalTarget, open_target


@dataclass
class BatchIndex:
    investigation: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    page: Path | None = None

    def text(self) -> str:
        lines = [f"{self.investigation}: {len(self.rows)} targets"]
        for row in self.rows:
            outcome = row["verdict"] or f"error: {row['error']}"
            lines.append(f"  {row['target']:<32} {outcome}")
        if self.page:
            lines.append(f"index: {self.page}")
        return "\n".join(lines)


def read_targets(path: str) -> list[str]:
    """One target URL per line; blank lines and ``#`` comments ignored. Each is
    validated before anything runs."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise NetlabError(f"--targets {path}: {exc.strerror}") from None
    targets = []
    for number, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            targets.append(open_target(text).url)
        except NetlabError as exc:
            raise NetlabError(f"--targets {path} line {number}: {exc.message}") from None
    if not targets:
        raise NetlabError(f"--targets {path}: no targets in the file")
    return targets


def run_one(investigation: str, target: str, *, lab: str, parameters: dict[str, Any], out: Path,
            timeout: float) -> dict[str, Any]:  # fmt: skip
    argv = [
        sys.executable,
        "-m",
        "netlab",
        "run",
        investigation,
        "--target",
        target,
        "--out",
        str(out),
        "--json",
    ]
    if lab:
        argv += ["--lab", lab]
    for key, value in parameters.items():
        argv += ["-p", key, json.dumps(value)]
    row: dict[str, Any] = {"target": target, "verdict": None, "summary": "", "report": None, "error": None}
    try:
        result = LocalTarget().run(argv, timeout=timeout, check=False)
    except NetlabError as exc:
        row["error"] = exc.message
        return row
    if not result.ok:
        row["error"] = result.brief_error().removeprefix("netlab: ")
        return row
    findings = json.loads(result.stdout)
    row.update(verdict=findings["verdict"], summary=findings["summary"])
    reports = sorted(out.glob("*.html"), key=lambda p: p.stat().st_mtime)
    row["report"] = reports[-1].name if reports else None
    return row


def run_many(investigation: str, targets_file: str, *, lab: str = "", parameters: dict[str, Any] | None = None,
             out: str = "reports", timeout: float = 900, jobs: int = 4) -> BatchIndex:  # fmt: skip
    targets = read_targets(targets_file)
    if not 1 <= jobs <= 64:
        raise NetlabError(f"--jobs {jobs}: must be between 1 and 64")
    base = Path(out)
    base.mkdir(parents=True, exist_ok=True)
    write_plotly_js(base)  # one copy for every target's report, in the directories below

    def one(item: tuple[int, str]) -> dict[str, Any]:
        index, target = item
        directory = base / f"{index:03d}"
        directory.mkdir(exist_ok=True)
        row = run_one(
            investigation, target, lab=lab, parameters=parameters or {}, out=directory, timeout=timeout
        )
        if row["report"]:
            row["report"] = f"{directory.name}/{row['report']}"
        return row

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        rows = list(pool.map(one, enumerate(targets)))
    index = BatchIndex(investigation, rows)
    index.page = write_index(investigation, rows, base)
    return index


# Verdict colours, as in each report's header: healthy green, inconclusive amber, a
# finding red, a run that failed grey.
_COLOURS = {"healthy": "#1a7f37", "inconclusive": "#9a6700", "error": "#6e7781"}
_FINDING = "#cf222e"
_RANK = {"error": 1, "inconclusive": 2, "healthy": 3}  # findings first (0)


def first_sentence(text: str) -> str:
    """The summary's first sentence: up to a full stop followed by a capital (addresses
    such as 10.96.0.10:80 have dots too)."""
    match = re.search(r"[.!?](?=\s+[A-Z0-9(])", text)
    return text[: match.end()] if match else text


# Sorting by a column's header, with no library: a click sorts by that column, a second
# click reverses. Cells sort by data-key when they have one (the verdict's severity).
_SORT = """
document.querySelectorAll('th[data-col]').forEach(th => th.addEventListener('click', () => {
  const body = th.closest('table').tBodies[0], col = +th.dataset.col;
  const down = th.dataset.dir !== 'up'; th.dataset.dir = down ? 'up' : 'down';
  const key = tr => { const td = tr.cells[col]; return td.dataset.key ?? td.textContent.trim(); };
  [...body.rows].sort((a, b) => key(a).localeCompare(key(b), undefined, {numeric: true}) * (down ? 1 : -1))
    .forEach(tr => body.appendChild(tr));
}));
"""

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#1f2328}
table{border-collapse:collapse;width:100%}
th,td{padding:.45em .7em;border-bottom:1px solid #d0d7de;text-align:left;vertical-align:top}
th{cursor:pointer;background:#f6f8fa;user-select:none;white-space:nowrap}
th:after{content:' \\2195';color:#8c959f}
td.verdict{font-weight:600;white-space:nowrap;border-left:6px solid}
code{font-size:95%}
details summary{cursor:pointer}
.counts span{margin-right:1.2em}
"""


def write_index(title: str, rows: list[dict[str, Any]], out: Path) -> Path:
    """``index.json`` and ``index.html``: one row per target with its verdict in colour,
    the summary's first sentence (the rest a click away) and a link to its report;
    findings first, sortable by any column."""
    (out / "index.json").write_text(json.dumps(rows, indent=2))
    body, counts = [], Counter(row["verdict"] or "error" for row in rows)

    def rank(row: dict[str, Any]) -> int:
        return _RANK.get(row["verdict"] or "error", 0)

    for row in sorted(rows, key=rank):
        verdict = row["verdict"] or "error"
        colour = _COLOURS.get(verdict, _FINDING)
        text = row["summary"] or row.get("error") or ""
        lead = first_sentence(text)
        detail = html.escape(lead)
        if lead != text:
            detail = f"<details><summary>{detail}</summary>{html.escape(text[len(lead) :])}</details>"
        link = f'<a href="{html.escape(row["report"])}">report</a>' if row.get("report") else ""
        body.append(
            f"<tr><td>{html.escape(row['target'])}</td>"
            f"<td class='verdict' data-key='{rank(row)} {html.escape(verdict)}' "
            f"style='border-left-color:{colour};color:{colour}'>{html.escape(verdict)}</td>"
            f"<td>{detail}</td><td>{link}</td></tr>"
        )
    tally = "".join(
        f"<span style='color:{_COLOURS.get(v, _FINDING)}'><b>{n}</b> {html.escape(v)}</span>"
        for v, n in sorted(counts.items(), key=lambda item: _RANK.get(item[0], 0))
    )
    page = out / "index.html"
    page.write_text(
        f"<!doctype html><html lang='en'><meta charset='utf-8'><title>netlab: {html.escape(title)}</title>"
        f"<style>{_STYLE}</style><h1>netlab: {html.escape(title)}</h1>"
        f"<p class='counts'>{len(rows)} targets: {tally}</p>"
        "<table><thead><tr><th data-col='0'>target</th><th data-col='1'>verdict</th>"
        "<th data-col='2'>summary</th><th data-col='3'>report</th></tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table><script>{_SORT}</script></html>\n"
    )
    return page
