"""A built wheel is a working kit: it carries the notebooks and the templates (symlinked
into ``netlab/kit`` from the top-level directories), and an installed wheel finds them
inside its own site-packages. Builds in a copy of the tree, so no ``build/`` or
``*.egg-info`` is left in the checkout; takes a few seconds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Run in the wheel's venv with -I (no PYTHONPATH, no checkout on sys.path); third-party
# dependencies come from the dev environment, appended after the venv's own site-packages.
PROBE = """
import json, sys, sysconfig
sys.path += sys.argv[1:]
import netlab
from netlab.report.run import notebooks_dir, report_templates
print(json.dumps({"package": netlab.__file__, "site": sysconfig.get_paths()["purelib"],
                  "notebooks": str(notebooks_dir()), "templates": str(report_templates())}))
"""


def _check(command: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{command}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.mark.timeout(180)
def test_wheel_ships_and_finds_notebooks_and_templates(tmp_path: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis",
        "reports", "artifacts", "prepared", ".ipynb_checkpoints"))  # fmt: skip
    dist = tmp_path / "dist"
    _check([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-q", "-w", str(dist)])
    (wheel,) = dist.glob("netlab-*.whl")

    notebooks = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    templates = sorted(
        str(p.relative_to(ROOT / "templates")) for p in (ROOT / "templates").rglob("*") if p.is_file()
    )
    assert notebooks and templates
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [f"netlab/kit/notebooks/{n}" for n in notebooks] + [
        f"netlab/kit/templates/{t}" for t in templates
    ]
    assert [n for n in missing if n not in names] == []

    venv = tmp_path / "venv"
    _check([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    _check([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)])
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NETLAB_", "PYTHON"))}
    found = json.loads(_check([str(python), "-I", "-c", PROBE, *deps], cwd=tmp_path, env=env))

    site = Path(found["site"]).resolve()
    assert Path(found["package"]).resolve().is_relative_to(site)
    shipped = Path(found["notebooks"])
    assert shipped.is_relative_to(site) and shipped.is_dir()
    assert sorted(p.name for p in shipped.glob("*.ipynb")) == notebooks
    kit_templates = Path(found["templates"])
    assert kit_templates.is_relative_to(site)
    assert all((kit_templates / t).is_file() for t in templates)
