"""``netlab run``: execute an investigation notebook with papermill, keep the executed
notebook as the record of the run, render the HTML report, read the findings back."""

from __future__ import annotations

import datetime as _dt
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from netlab import naming
from netlab import params as validate
from netlab.errors import NetlabError
from netlab.findings import Findings
from netlab.investigations import get
from netlab.report.notebook import notebook_error, read_findings


@dataclass
class RunResult:
    findings: Findings
    notebook: Path
    html: Path | None


def kit_dir(sub: str, env: str) -> Path:
    """A directory the kit ships as package data (``notebooks``, ``templates``; see
    :mod:`netlab.kit`), or the one named by environment variable ``env``.

    In a checkout or an editable install this is the top-level directory itself (through
    the symlink); from a wheel, the copy inside site-packages."""
    if os.environ.get(env):
        return Path(os.environ[env])
    shipped = resources.files("netlab.kit") / sub
    if isinstance(shipped, Path) and shipped.is_dir():
        return shipped.resolve()
    raise NetlabError(f"cannot find netlab's {sub}/ directory", f"set {env}")


def notebooks_dir() -> Path:
    return kit_dir("notebooks", "NETLAB_NOTEBOOKS")


def report_templates() -> Path:
    return kit_dir("templates", "NETLAB_TEMPLATES")


def parse_parameters(pairs: list[tuple[str, str]] | None) -> dict[str, Any]:
    """``-p KEY VALUE`` pairs; values are parsed as JSON when they look like it."""
    import json

    out: dict[str, Any] = {}
    for key, value in pairs or []:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", key):
            raise NetlabError(f"parameter name {key!r} is not a valid identifier")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def run(
    name: str,
    *,
    target: str = "local",
    lab: str = "",
    parameters: dict[str, Any] | None = None,
    out: str | os.PathLike[str] = "reports",
    timeout: float = 900,
    html: bool = True,
    keep_code: bool = False,
) -> RunResult:
    """Execute investigation ``name`` headlessly and return its findings and files."""
    import papermill
    from nbclient.exceptions import CellTimeoutError
    from papermill.exceptions import PapermillExecutionError

    info = get(name)
    out = validate.output_dir(out, "--out")
    timeout = validate.positive_number(timeout, "--timeout", maximum=86400)
    # Every parameter checked before a kernel starts: unknown names, bad values, and
    # required ones a lab does not fill are one-line errors naming the parameter.
    info.parse(info.resolve(target, lab, **(parameters or {}))[1])
    source = notebooks_dir() / info.notebook
    if not source.exists():
        raise NetlabError(f"notebook {source} is missing")
    if lab:
        validate.name(lab, "lab")
    from netlab.targets import open_target

    open_target(target)  # validate before starting a kernel
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{name}-{lab or target}-{stamp}")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    executed = out_dir / f"{slug}.ipynb"
    injected = {"target": target, "lab": lab, **(parameters or {})}
    runtime = kernel_runtime_dir()
    try:
        papermill.execute_notebook(
            str(source),
            str(executed),
            parameters=injected,
            kernel_name="python3",
            progress_bar=False,
            log_output=False,
            execution_timeout=timeout,
            cwd=str(source.parent),
            kernel_manager_class=ipc_kernel_manager(runtime),
        )
    except PapermillExecutionError:
        problem = notebook_error(executed) or "the notebook failed"
        raise NetlabError(f"{name}: {problem}", f"the executed notebook is {executed}") from None
    except CellTimeoutError:
        raise NetlabError(
            f"{name}: a cell ran longer than {timeout:g} s and was stopped", f"partial record: {executed}"
        ) from None
    finally:
        from netlab import cleanup

        shutil.rmtree(runtime, ignore_errors=True)
        cleanup.sweep_orphans()
    findings = read_findings(executed)
    page = render_html(executed, keep_code=keep_code) if html else None
    return RunResult(findings, executed, page)


def kernel_runtime_dir() -> Path:
    """A private directory (mode 0700) for one run's notebook kernel: its connection file,
    which holds the HMAC key, and its IPC sockets. Removed after the run; named
    ``<prefix>_kernel_<pid>-*`` so the sweep removes those of a killed run."""
    base = naming.runtime_base()
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{naming.probe_name('kernel')}-", dir=base))


def ipc_kernel_manager(runtime: Path) -> type:
    """A kernel manager that talks to the kernel over IPC sockets in ``runtime``.

    Over TCP every message (code and outputs) crosses loopback in plain text, and
    ipykernel says so on stderr in the middle of ``netlab run``'s output; a Unix socket in
    a private directory has neither problem."""
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class IpcKernelManager(AsyncKernelManager):
        @default("transport")
        def _netlab_transport(self) -> str:
            return "ipc"

        @default("connection_file")
        def _netlab_connection_file(self) -> str:
            return str(runtime / "kernel.json")

    return IpcKernelManager


def prepare(investigation: str, parameters: dict[str, Any], *, out_dir: str = "prepared") -> str:
    """A copy of an investigation's notebook with ``parameters`` injected (not run), for
    triage to link to. It goes in ``out_dir`` under the kernel's working directory, which
    is the triage notebook's own (the shipped notebooks under ``netlab run``, the user's
    copy from ``netlab notebooks`` in JupyterLab), so the returned relative path opens."""
    import papermill

    info = get(investigation)
    base = Path.cwd()
    directory = base / out_dir
    directory.mkdir(exist_ok=True)
    target = directory / info.notebook
    source = notebooks_dir() / info.notebook
    papermill.execute_notebook(
        str(source), str(target), parameters=parameters, prepare_only=True, progress_bar=False
    )
    return str(target.relative_to(base))


def copy_notebooks(directory: str | os.PathLike[str], *, force: bool = False) -> list[Path]:
    """``netlab notebooks DIR``: the shipped investigation notebooks copied into
    ``directory`` (created if needed) to open in JupyterLab. Files already there are
    kept, and nothing is copied, unless ``force``."""
    sources = sorted(notebooks_dir().glob("*.ipynb"))
    if not sources:
        raise NetlabError(f"no notebooks in {notebooks_dir()}")
    dest = Path(directory)
    if dest.exists() and not dest.is_dir():
        raise NetlabError(f"{dest} is not a directory")
    clashes = [s.name for s in sources if (dest / s.name).exists()]
    if clashes and not force:
        raise NetlabError(f"{dest} already has {', '.join(clashes)}", "add --force to overwrite")
    dest.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copyfile(s, dest / s.name)) for s in sources]


PLOTLY_MIME = "application/vnd.plotly.v1+json"


def write_plotly_js(directory: Path) -> str:
    """One copy of plotly.js in ``directory`` (written once, whole or not at all); its name."""
    import plotly
    from plotly.offline import get_plotlyjs

    name = f"plotly-{plotly.__version__}.min.js"
    asset = directory / name
    if not asset.is_file():
        partial = directory / f".{name}.{os.getpid()}"
        partial.write_text(get_plotlyjs(), encoding="utf-8")
        partial.replace(asset)  # reports written at the same time never read half a file
    return name


def plotly_asset(directory: Path) -> str:
    """The address, relative to a report in ``directory``, of the plotly.js every report
    shares: the copy in the parent directory if there is one (a batch's reports sit in a
    directory per target, the copy beside the index), else the one beside the report.
    Reports stay small and still render with no network."""
    import plotly

    name = f"plotly-{plotly.__version__}.min.js"
    if (directory.parent / name).is_file():
        return f"../{name}"
    return write_plotly_js(directory)


def _has_charts(nb: Any) -> bool:
    return any(
        PLOTLY_MIME in output.get("data", {}) for cell in nb.cells for output in cell.get("outputs", [])
    )


def render_html(executed: Path, *, keep_code: bool = False) -> Path:
    """The report: verdict first, code hidden unless ``keep_code``, charts offline."""
    import nbconvert
    import nbformat

    template_dir = report_templates()
    exporter = nbconvert.HTMLExporter(
        template_name="netlab-report",
        extra_template_basedirs=[str(template_dir)],
        exclude_input=not keep_code,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )
    nb = nbformat.read(str(executed), as_version=4)
    try:
        nb.metadata["netlab"] = read_findings(nb).to_dict()
    except NetlabError:
        pass  # a failed run still gets its page, without a verdict header
    if _has_charts(nb):
        nb.metadata["netlab_plotly_js"] = plotly_asset(executed.parent)
    body, _ = exporter.from_notebook_node(nb)
    page = executed.with_suffix(".html")
    page.write_text(body, encoding="utf-8")
    return page
