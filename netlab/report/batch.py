"""Batch runs: one investigation against many targets, in parallel.

Each target runs as its own ``netlab run`` process (its own Jupyter kernel), with
bounded concurrency and a per-target timeout; one failure becomes an error row and
does not stop the rest. The index page has one row per target with its verdict,
summary and a link to its report.
"""

from __future__ import annotations

import html
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netlab.errors import NetlabError
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


def write_index(title: str, rows: list[dict[str, Any]], out: Path) -> Path:
    (out / "index.json").write_text(json.dumps(rows, indent=2))
    body = []
    for row in rows:
        link = f'<a href="{html.escape(row["report"])}">report</a>' if row.get("report") else ""
        verdict = html.escape(row["verdict"] or "error")
        detail = html.escape(row["summary"] or row.get("error") or "")
        body.append(f"<tr class='{verdict}'><td>{html.escape(row['target'])}</td><td><code>{verdict}</code></td>"
                    f"<td>{detail}</td><td>{link}</td></tr>")  # fmt: skip
    page = out / "index.html"
    page.write_text(
        "<!doctype html><meta charset='utf-8'><title>netlab: {0}</title><h1>netlab: {0}</h1>"
        "<table border='1' cellpadding='4'><tr><th>target</th><th>verdict</th><th>summary</th><th></th></tr>{1}</table>"
        .format(html.escape(title), "".join(body))
    )  # fmt: skip
    return page
