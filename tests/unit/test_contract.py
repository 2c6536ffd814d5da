"""The investigation contract, without root: parameters declared once (and the notebooks,
CLI and form derived from or checked against them), bad input named in one line, no
import cycles in the package."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from netlab.cli import main
from netlab.errors import NetlabError
from netlab.investigations import REGISTRY, get
from netlab.investigations.base import Evidence
from netlab.report.run import run as runner_run

ROOT = Path(__file__).resolve().parents[2]


def _cells(cls: type) -> list[dict]:
    return json.loads((ROOT / "notebooks" / cls.notebook).read_text())["cells"]


@pytest.mark.parametrize("name", list(REGISTRY))
def test_notebook_parameters_cell_is_the_declaration(name: str) -> None:
    cls = get(name)
    cell = next(c for c in _cells(cls) if "parameters" in (c["metadata"].get("tags") or []))
    assert "".join(cell["source"]) == cls.parameters_cell(), (
        f"notebooks/{cls.notebook}: regenerate its parameters cell from {cls.__name__}.parameters_cell()"
    )


@pytest.mark.parametrize("name", list(REGISTRY))
def test_notebook_runs_the_declared_steps_in_order(name: str) -> None:
    cls = get(name)
    methods = [step.method for step in cls.steps]
    called = []
    for cell in _cells(cls):
        if cell["cell_type"] != "code":
            continue
        for node in ast.walk(ast.parse("".join(cell["source"]).replace(";", ""))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                if getattr(node.func.value, "id", "") == "session" and node.func.attr in methods:
                    called.append(node.func.attr)
    assert called == methods


@pytest.mark.parametrize(
    ("name", "given", "message"),
    [
        ("stuck-tcp", {"pod_ip": "10.0.0.1; reboot"}, "parameter pod_ip"),
        ("stuck-tcp", {"pod_ip": "10.0.0.1", "client_ports": "9-x"}, "parameter client_ports"),
        ("stuck-tcp", {"pod_ip": "10.0.0.1", "pod_port": 0}, "parameter pod_port: 0 is outside"),
        ("stuck-tcp", {}, "parameter pod_ip: required"),
        ("packet-drops", {"server_port": "9418; reboot"}, "parameter server_port"),
        ("packet-drops", {"duration": -1}, "parameter duration"),
        ("packet-drops", {"duration": "nan"}, "parameter duration"),
        ("cgroup-progs", {"service": "10.96.0.10;reboot:80"}, "parameter service"),
        ("cgroup-progs", {"sevice": "10.96.0.10:80"}, "parameter sevice: cgroup-progs has no such parameter"),
        ("cgroup-progs", {"cgroup_progs": 1}, "parameter cgroup_progs: cgroup-progs has no such parameter"),
        ("route-cache", {"samples": 0}, "parameter samples"),
        ("route-cache", {"pod_targets": "netns://x"}, "parameter pod_targets"),
    ],
)
def test_bad_parameters_are_one_line_errors(name: str, given: dict, message: str) -> None:
    with pytest.raises(NetlabError, match=message):
        get(name).parse(given)


def test_cli_rejects_unknown_parameters_before_running(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "cgroup-progs", "-p", "sevice", "10.96.0.10:80", "--out", "/tmp/never"]) == 2
    assert "parameter sevice" in capsys.readouterr().err
    assert not Path("/tmp/never").exists()


def test_run_help_lists_the_parameters(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["run", "stuck-tcp", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for param in get("stuck-tcp").params:
        assert f"  {param.name}: {param.type.__name__}" in out


def test_list_names_every_investigation_and_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows if r["kind"] == "investigation"} == set(REGISTRY)
    assert {r["name"] for r in rows if r["kind"] == "lab scenario"} == {c.scenario for c in REGISTRY.values()}


def test_evidence_round_trips_through_json(tmp_path: Path) -> None:
    import pandas as pd

    frame = pd.DataFrame({"port": pd.array([80, 443], dtype="int64"), "ok": [True, False], "who": ["a", "b"]})
    ev = Evidence(
        "x", "local", "6.18", {"p": 1}, {"table": frame, "n": 3, "nested": {"t": frame}}, {"s": "m"}
    )
    ev.save(tmp_path / "e.json")
    back = Evidence.load(tmp_path / "e.json")
    pd.testing.assert_frame_equal(back.results["table"], frame)
    pd.testing.assert_frame_equal(back.results["nested"]["t"], frame)
    assert back.results["n"] == 3 and back.params == {"p": 1} and back.mechanisms == {"s": "m"}


def _imports(path: Path, package: str) -> set[str]:
    """Every netlab module ``path`` imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("netlab")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("netlab"):
            found.add(node.module)
            # ``from netlab.x import y`` where y is a submodule imports it too.
            for alias in node.names:
                sub = ROOT / (node.module.replace(".", "/") + f"/{alias.name}.py")
                if sub.exists() or (sub.parent / alias.name / "__init__.py").exists():
                    found.add(f"{node.module}.{alias.name}")
    return found


def test_no_import_cycles_in_the_package() -> None:
    modules = {}
    for path in (ROOT / "netlab").rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        modules[name] = path
    graph = {m: {i for i in _imports(p, m) if i in modules and i != m} for m, p in modules.items()}
    # A package's __init__ is what ``import netlab.x.y`` runs first: not an edge back.
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if m.startswith(n + "."):
                continue
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n) :] + [n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles[:10])


@pytest.mark.parametrize("param", ["cgroup", "cgroup_root"])
def test_a_cgroup_parameter_must_be_a_cgroup2_directory(param: str, tmp_path: Path) -> None:
    with pytest.raises(NetlabError, match=rf"parameter {param}: {tmp_path} is not a cgroup v2 directory"):
        get("cgroup-progs").start(**{param: str(tmp_path)})
    assert list(tmp_path.iterdir()) == []  # nothing written there (no cgroup.procs)


@pytest.mark.parametrize(
    ("out", "message"),
    [("/etc", "system directory"), ("/proc/sys/net", "system directory"), ("", "not a usable directory"),
     ("/etc/passwd", "system directory")],
)  # fmt: skip
def test_reports_are_never_written_into_system_directories(out: str, message: str) -> None:
    with pytest.raises(NetlabError, match=message):
        runner_run("cgroup-progs", out=out)


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf")])
def test_timeout_must_be_a_positive_finite_number(timeout: float, tmp_path: Path) -> None:
    with pytest.raises(NetlabError, match="parameter --timeout"):
        runner_run("cgroup-progs", out=tmp_path, timeout=timeout)
