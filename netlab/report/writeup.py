"""``netlab writeup RUN.ipynb``: an executed investigation as a knowledge-sharing
document (HTML and Markdown) — the narrative cells, the key evidence, the verdict."""

from __future__ import annotations

from pathlib import Path

from netlab.errors import NetlabError
from netlab.report.notebook import _load, read_findings
from netlab.report.run import report_templates


def write(notebook: str, out: str | None = None) -> dict[str, Path]:
    import jinja2
    import pandas as pd

    source = Path(notebook)
    data = _load(source)
    findings = read_findings(data)
    narrative = [
        "".join(c.get("source", "")) for c in data.get("cells", []) if c.get("cell_type") == "markdown"
    ]
    templates = report_templates() / "writeup"
    if not templates.is_dir():
        raise NetlabError(f"write-up templates missing in {templates}")
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates)), autoescape=jinja2.select_autoescape(["html"])
    )
    evidence = [{"title": e.title, "note": e.note, "frame": pd.DataFrame(e.rows)} for e in findings.evidence]
    context = {"f": findings, "narrative": narrative, "evidence": evidence, "source": source.name}
    base = Path(out) if out else source.parent
    base.mkdir(parents=True, exist_ok=True)
    stem = source.stem + "-writeup"
    paths = {}
    for kind, suffix in (("markdown", "md"), ("html", "html")):
        text = env.get_template(f"writeup.{suffix}.j2").render(**context)
        path = base / f"{stem}.{suffix}"
        path.write_text(text, encoding="utf-8")
        paths[kind] = path
    return paths
