"""``netlab run``: execute an investigation notebook with papermill, keep the executed
notebook as the record of the run, render the HTML report, read the findings back."""

from __future__ import annotations

import datetime as _dt
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from netlab import naming
from netlab import params as validate
from netlab.errors import NetlabError
from netlab.findings import EVIDENCE_MIME, FINDINGS_MIME, Findings
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
    """Execute investigation ``name`` headlessly and return its findings and files.

    The notebook kernel starts first: it takes about half a second to be ready, which
    the parameter checks and papermill's import overlap (it is its own process). No code
    runs in it before every parameter has passed; after a bad one it is stopped and the
    error is the same one line. While the kernel runs the cells, the HTML exporter is
    set up beside it; while the kernel exits, the report is written."""
    out = validate.output_dir(out, "--out")
    timeout = validate.positive_number(timeout, "--timeout", maximum=86400)
    directory = notebooks_dir()
    runtime = kernel_runtime_dir()
    kernel: NotebookKernel | None = None
    ran = False
    try:
        kernel = NotebookKernel(runtime, cwd=directory)
        from netlab.investigations import get

        info = get(name)
        # Every parameter checked before the notebook runs: unknown names, bad values,
        # and required ones a lab does not fill are one-line errors naming the parameter.
        info.parse(info.resolve(target, lab, **(parameters or {}))[1])
        source = directory / info.notebook
        if not source.exists():
            raise NetlabError(f"notebook {source} is missing")
        if lab:
            validate.name(lab, "lab")
        from netlab.targets import open_target

        open_target(target)  # validate before the notebook runs

        import papermill
        from nbclient.exceptions import CellTimeoutError
        from papermill.exceptions import PapermillExecutionError

        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{name}-{lab or target}-{stamp}")
        out_dir = Path(out)
        out_dir.mkdir(parents=True, exist_ok=True)
        executed = out_dir / f"{slug}.ipynb"
        injected = {"target": target, "lab": lab, **(parameters or {})}
        exporter = _in_background(html_exporter, keep_code=keep_code) if html else None
        ran = True
        try:
            papermill.execute_notebook(
                str(source),
                str(executed),
                parameters=injected,
                kernel_name="python3",
                progress_bar=False,
                log_output=False,
                execution_timeout=timeout,
                cwd=str(directory),
                km=kernel.manager,
            )
        except PapermillExecutionError:
            problem = notebook_error(executed) or "the notebook failed"
            raise NetlabError(f"{name}: {problem}", f"the executed notebook is {executed}") from None
        except CellTimeoutError:
            raise NetlabError(
                f"{name}: a cell ran longer than {timeout:g} s and was stopped", f"partial record: {executed}"
            ) from None
        kernel.request_exit()  # it exits (and tells its guard) while the report is written
        import nbformat

        record = nbformat.read(str(executed), as_version=4)  # read once: findings, then the page
        findings = read_findings(record)
        page = render_html(executed, keep_code=keep_code, nb=record, exporter=exporter) if exporter else None
    finally:
        if kernel is not None:
            kernel.stop(now=not ran)  # a kernel that ran nothing has nothing to clean up
        shutil.rmtree(runtime, ignore_errors=True)
        if ran:
            from netlab import cleanup

            cleanup.sweep_orphans()
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
    from traitlets import List, default

    class IpcKernelManager(AsyncKernelManager):
        clients: List[Any] = List()  # the clients made for this kernel, closed when it stops

        @default("transport")
        def _netlab_transport(self) -> str:
            return "ipc"

        @default("connection_file")
        def _netlab_connection_file(self) -> str:
            return str(runtime / "kernel.json")

        def client(self, **kwargs: Any) -> Any:
            made = super().client(**kwargs)
            self.clients.append(made)
            return made

    return IpcKernelManager


class NotebookKernel:
    """One run's python3 kernel (IPC, in ``runtime``), started before papermill needs it
    and stopped the way nbclient stops a kernel it started: an interrupt, then a
    shutdown request, and SIGTERM, then SIGKILL, if it has not exited within
    ``shutdown_wait_time``. The request and the wait are separate calls, so the
    report is written while the kernel exits."""

    def __init__(self, runtime: Path, *, cwd: Path) -> None:
        from jupyter_core.utils import run_sync

        self._sync = run_sync
        self.manager = ipc_kernel_manager(runtime)(kernel_name="python3")
        self._exiting = False
        # What nbclient passes when it starts the kernel itself: history kept in memory.
        run_sync(self.manager.start_kernel)(
            cwd=str(cwd), extra_arguments=["--HistoryManager.hist_file=:memory:"]
        )

    def request_exit(self) -> None:
        """Ask the kernel, idle after the last cell, to exit (it runs its exit handlers and
        tells its guard), without waiting. No interrupt first, unlike ``shutdown_kernel``:
        there is nothing to interrupt, and a SIGINT landing while the kernel handled the
        request was seen to leave it running until the SIGTERM 2.5 s later."""
        self._sync(self.manager.request_shutdown)()
        self._exiting = True

    def stop(self, *, now: bool = False) -> None:
        """The kernel gone (killed at once if ``now``), its clients closed, its files removed."""
        km = self.manager
        try:
            if self._sync(km.is_alive)():
                if self._exiting:  # polled every 10 ms, not 100: it is usually gone by now
                    self._sync(km.finish_shutdown)(pollinterval=0.01)
                else:
                    self._sync(km.shutdown_kernel)(now=now)
        finally:
            self._sync(km.cleanup_resources)()
            for client in km.clients:
                client.stop_channels()


def _in_background(func: Callable[..., Any], **kwargs: Any) -> Future[Any]:
    """``func(**kwargs)`` in a thread: the command's process is idle while the kernel runs
    the cells, and this machine has a second CPU for it."""
    future: Future[Any] = Future()

    def work() -> None:
        try:
            future.set_result(func(**kwargs))
        except BaseException as exc:  # handed to whoever waits for the result
            future.set_exception(exc)

    threading.Thread(target=work, name=f"netlab-{func.__name__}", daemon=True).start()
    return future


def prepare(investigation: str, parameters: dict[str, Any], *, out_dir: str = "prepared") -> str:
    """A copy of an investigation's notebook with ``parameters`` injected (not run), for
    triage to link to. It goes in ``out_dir`` under the kernel's working directory, which
    is the triage notebook's own (the shipped notebooks under ``netlab run``, the user's
    copy from ``netlab notebooks`` in JupyterLab), so the returned relative path opens."""
    import papermill

    from netlab.investigations import get

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


def html_exporter(*, keep_code: bool = False) -> Any:
    """nbconvert's HTML exporter with netlab's report template, ready to convert."""
    import nbconvert
    import nbformat

    exporter = nbconvert.HTMLExporter(
        template_name="netlab-report",
        extra_template_basedirs=[str(report_templates())],
        exclude_input=not keep_code,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )
    # The first conversion compiles the templates netlab's extends and sets up the
    # markdown renderer and the page's clean-up: done now, on a notebook of two cells.
    exporter.from_notebook_node(
        nbformat.v4.new_notebook(cells=[
            nbformat.v4.new_markdown_cell("# report"),
            nbformat.v4.new_code_cell(outputs=[nbformat.v4.new_output("display_data", {"text/html": "<p>a</p>"})]),
        ])
    )  # fmt: skip
    return exporter


def render_html(
    executed: Path, *, keep_code: bool = False, nb: Any = None, exporter: Future[Any] | None = None
) -> Path:
    """The report: verdict first, code hidden unless ``keep_code``, charts offline.
    ``nb`` is the executed notebook as read from ``executed`` (read here if not given;
    its netlab payloads are taken out), ``exporter`` one made beforehand by
    :func:`html_exporter`."""
    import nbformat

    if nb is None:
        nb = nbformat.read(str(executed), as_version=4)
    try:
        nb.metadata["netlab"] = read_findings(nb).to_dict()
    except NetlabError:
        pass  # a failed run still gets its page, without a verdict header
    if _has_charts(nb):
        nb.metadata["netlab_plotly_js"] = plotly_asset(executed.parent)
    for cell in nb.cells:  # netlab's JSON payloads are not shown: not worth the exporter's deep copy
        for output in cell.get("outputs", []):
            for mime in (FINDINGS_MIME, EVIDENCE_MIME):
                output.get("data", {}).pop(mime, None)
    made = exporter.result() if exporter is not None else html_exporter(keep_code=keep_code)
    body, _ = made.from_notebook_node(nb)
    page = executed.with_suffix(".html")
    page.write_text(body, encoding="utf-8")
    return page
