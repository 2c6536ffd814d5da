"""The report plumbing: record -> executed notebook -> findings, HTML, write-up, batch
index. Uses a tiny notebook in place of an investigation (no kernel access needed)."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from netlab.errors import NetlabError
from netlab.findings import Findings
from netlab.report import batch, read_findings, writeup
from netlab.report import run as runner
from netlab.report.run import prepare

RECORDING = """
import netlab.report
from netlab.findings import Findings, Evidence
import pandas as pd
netlab.report.init_notebook()
f = Findings("stuck-tcp", target, "stale-sockmap-entry", f"pod_ip={pod_ip} pod_port={pod_port}",
             evidence=[Evidence.table("sockmap", pd.DataFrame({"sip": ["10.0.0.1"], "sport": [80]}))],
             mechanisms={"sockmap dump": "bpftool"}, remediation=["bpftool map delete id 1 key hex 00"])
netlab.report.record(f)
import plotly.graph_objects as go
go.Figure(go.Bar(x=["a", "b"], y=[1, 2])).show()
go.Figure(go.Scatter(y=[3, 1, 2])).show()
"""


@pytest.fixture
def notebooks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell(
        'target: str = "local"\nlab: str = ""\npod_ip: str = ""\npod_port: int = 8080'
    )
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# A test investigation\nWhat we check."), params,
                nbformat.v4.new_code_cell(RECORDING)]  # fmt: skip
    directory = tmp_path / "notebooks"
    directory.mkdir()
    nbformat.write(nb, directory / "stuck-tcp.ipynb")
    monkeypatch.setenv("NETLAB_NOTEBOOKS", str(directory))
    return directory


def test_run_records_findings_and_renders_offline_html(notebooks: Path, tmp_path: Path) -> None:
    result = runner.run("stuck-tcp", parameters={"pod_ip": "10.0.0.1", "pod_port": 81}, out=tmp_path / "out")
    assert result.findings.verdict == "stale-sockmap-entry"
    assert result.findings.summary == "pod_ip=10.0.0.1 pod_port=81"
    assert read_findings(result.notebook).to_dict() == result.findings.to_dict()
    assert result.html is not None
    page = result.html.read_text()
    assert page.index("stale-sockmap-entry") < page.index("A test investigation")
    assert "bpftool map delete id 1 key hex 00" in page
    assert 'src="http' not in page  # offline: nothing from a CDN
    assert "RECORDING" not in page and "netlab.report.record(f)" not in page  # code hidden
    # plotly.js is one shared copy beside the reports, loaded before the charts; neither
    # the report nor the notebook carries it.
    import plotly

    asset = f"plotly-{plotly.__version__}.min.js"
    assert f'<script src="{asset}"></script>' in page and page.count("Plotly.newPlot") == 2
    assert (tmp_path / "out" / asset).stat().st_size > 3_000_000
    assert result.html.stat().st_size < 1_500_000 and result.notebook.stat().st_size < 1_500_000
    again = runner.run("stuck-tcp", parameters={"pod_ip": "10.0.0.2"}, out=tmp_path / "out")
    assert again.html is not None and f'src="{asset}"' in again.html.read_text()
    assert [p.name for p in (tmp_path / "out").glob("*.js")] == [asset]


def test_a_batch_shares_one_plotly_js_beside_its_index(notebooks: Path, tmp_path: Path) -> None:
    import plotly

    base = tmp_path / "reports"
    (base / "000").mkdir(parents=True)
    runner.write_plotly_js(base)
    result = runner.run("stuck-tcp", parameters={"pod_ip": "10.0.0.1"}, out=base / "000")
    assert result.html is not None
    assert f'<script src="../plotly-{plotly.__version__}.min.js"></script>' in result.html.read_text()
    assert list((base / "000").glob("*.js")) == []


def test_index_page_puts_findings_first_with_colours_and_the_first_sentence(tmp_path: Path) -> None:
    rows = [
        {"target": "node-a", "verdict": "healthy", "summary": "All good.", "report": "000/a.html", "error": None},
        {"target": "node-b", "verdict": None, "summary": "", "report": None, "error": "cannot reach the node"},
        {"target": "node-c", "verdict": "stale-cgroup-program", "report": "002/c.html", "error": None,
         "summary": "Program 7 rewrites 10.96.0.10:80 to 10.244.1.99:8080. The program using the agent's map is 9."},
    ]  # fmt: skip
    page = batch.write_index("cgroup-progs", rows, tmp_path).read_text()
    assert page.index("node-c") < page.index("node-b") < page.index("node-a")  # findings, errors, healthy
    assert "<summary>Program 7 rewrites 10.96.0.10:80 to 10.244.1.99:8080.</summary>" in page
    assert "The program using the agent&#x27;s map is 9." in page
    assert "color:#cf222e'>stale-cgroup-program<" in page and "color:#1a7f37'>healthy<" in page
    assert page.count("report</a>") == 2 and "cannot reach the node" in page
    assert "3 targets" in page and "<script>" in page and "src=" not in page.replace('href="', "")
    assert json.loads((tmp_path / "index.json").read_text()) == rows


def test_writeup(notebooks: Path, tmp_path: Path) -> None:
    result = runner.run("stuck-tcp", parameters={"pod_ip": "10.0.0.1"}, out=tmp_path / "out")
    paths = writeup.write(str(result.notebook))
    markdown = paths["markdown"].read_text()
    assert "# stuck-tcp: `stale-sockmap-entry`" in markdown
    assert "| sip" in markdown and "What we check." in markdown
    assert "<code>stale-sockmap-entry</code>" in paths["html"].read_text()


def test_unknown_investigation_and_bad_parameters() -> None:
    with pytest.raises(NetlabError, match="no investigation 'nope'"):
        runner.run("nope")
    with pytest.raises(NetlabError, match="not a valid identifier"):
        runner.parse_parameters([("a-b", "1")])
    assert runner.parse_parameters([("n", "3"), ("s", "x y")]) == {"n": 3, "s": "x y"}


def test_findings_round_trip() -> None:
    f = Findings("x", "local", "healthy", "fine")
    assert Findings.from_dict(json.loads(f.to_json())).to_dict() == f.to_dict()
    assert f.healthy and "healthy" in f._repr_html_()


def test_targets_file_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "nodes.txt"
    path.write_text("# nodes\nlocal\nssh://bad host\n")
    with pytest.raises(NetlabError, match="line 3"):
        batch.read_targets(str(path))


def test_notebooks_command_copies_refuses_to_overwrite_then_forces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from netlab import cli

    monkeypatch.delenv("NETLAB_NOTEBOOKS", raising=False)
    shipped = runner.notebooks_dir()
    names = sorted(p.name for p in shipped.glob("*.ipynb"))
    dest = tmp_path / "work" / "notebooks"
    assert cli.main(["notebooks", str(dest)]) == 0
    assert sorted(p.name for p in dest.iterdir()) == names
    (dest / names[0]).write_text("edited")
    capsys.readouterr()
    assert cli.main(["notebooks", str(dest)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"netlab: {dest} already has ") and "--force" in err and err.count("\n") == 1
    assert (dest / names[0]).read_text() == "edited"
    assert cli.main(["notebooks", str(dest), "--force"]) == 0
    assert (dest / names[0]).read_bytes() == (shipped / names[0]).read_bytes()


def test_prepared_copy_goes_beside_the_running_notebook(
    notebooks: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In JupyterLab the kernel runs in the user's copy (netlab notebooks DIR), so triage's
    # relative link must resolve there, whatever the shipped notebooks directory is.
    copy = tmp_path / "copy"
    copy.mkdir()
    monkeypatch.chdir(copy)
    path = prepare("stuck-tcp", {"port": 5})
    assert path == "prepared/stuck-tcp.ipynb"
    assert "port = 5" in (copy / path).read_text()
    assert not (notebooks / "prepared").exists()
