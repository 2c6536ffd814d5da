"""Notebook-side set-up and reading findings back from executed notebooks."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from netlab.errors import NetlabError
from netlab.findings import EVIDENCE_MIME, FINDINGS_MIME, Findings

if TYPE_CHECKING:
    from netlab.investigations.base import Evidence


def init_notebook(*, sweep: bool = True) -> None:
    """The one call at the top of every investigation notebook.

    - plotly charts are HTML that needs no network (jump hosts rarely have any): the
      report loads plotly.js from one copy beside it (:func:`netlab.report.run.render_html`),
      so neither the notebook nor the report carries the 4.6 MB library;
    - a :class:`NetlabError` shows as one line with its remedy, not a traceback;
    - the kernel exits without a last garbage collection (the system frees its memory);
    - probes left behind by a killed earlier kernel are swept (by netlab's naming), and a
      guard (:mod:`netlab.guard`) will do the same for this kernel's if it is killed,
      unless ``sweep`` is False: a notebook that attaches nothing and needs no privilege
      (decoding pasted output) leaves the kernel alone.
    """
    import plotly.io as pio

    pio.renderers["netlab_offline"] = _offline_renderer()
    pio.renderers.default = "netlab_offline+plotly_mimetype"
    try:
        from IPython import get_ipython
    except ImportError:  # plain Python
        return
    shell = get_ipython()
    if shell is not None:
        import atexit
        import gc

        # The kernel's last garbage collection, as it exits, would walk every object it
        # made (0.2 s with pandas loaded) just before the system frees them all.
        atexit.unregister(gc.freeze)
        atexit.register(gc.freeze)

        def show_netlab_error(
            shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: Any = None
        ) -> None:
            print(f"netlab: {value}")

        shell.set_custom_exc((NetlabError,), show_netlab_error)
    if not sweep:
        return
    from netlab import cleanup, guard

    cleanup.sweep_orphans()
    guard.ensure()  # this kernel's probes removed even if it is killed


def _offline_renderer() -> Any:
    from plotly.io.base_renderers import MimetypeRenderer

    class OfflineHtmlRenderer(MimetypeRenderer):
        """Plotly figures as HTML without the library and without MathJax (plotly's own
        notebook renderer fetches MathJax from a CDN). JupyterLab shows the plotly
        mimetype instead; exported reports load plotly.js from the shared copy."""

        def to_mimebundle(self, fig_dict: dict[str, Any]) -> dict[str, str]:
            from plotly.io import to_html

            html = to_html(fig_dict, include_plotlyjs=False, include_mathjax=False, full_html=False,
                           default_width="100%", default_height=480)  # fmt: skip
            return {"text/html": html}

    return OfflineHtmlRenderer()


def _load(nb: str | os.PathLike[str] | dict[str, Any]) -> dict[str, Any]:
    if isinstance(nb, dict):
        return nb
    try:
        with open(nb, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, json.JSONDecodeError) as exc:
        raise NetlabError(f"cannot read notebook {nb}: {exc}") from None


def _recorded(nb: str | os.PathLike[str] | dict[str, Any], mime: str) -> dict[str, Any] | None:
    """The last payload of type ``mime`` in an executed notebook's outputs."""
    found: dict[str, Any] | None = None
    for cell in _load(nb).get("cells", []):
        for output in cell.get("outputs", []) or []:
            payload = output.get("data", {}).get(mime)
            if payload is not None:
                found = payload if isinstance(payload, dict) else json.loads(payload)
    return found


def read_findings(nb: str | os.PathLike[str] | dict[str, Any]) -> Findings:
    """The findings recorded in an executed notebook (the last ones, if several)."""
    found = _recorded(nb, FINDINGS_MIME)
    if found is None:
        raise NetlabError(f"{nb}: no findings recorded (did the notebook finish?)")
    return Findings.from_dict(found)


def read_evidence(nb: str | os.PathLike[str] | dict[str, Any]) -> Evidence:
    """The evidence a recorded verdict was decided on, to replay into ``decide``."""
    from netlab.investigations.base import Evidence

    found = _recorded(nb, EVIDENCE_MIME)
    if found is None:
        raise NetlabError(f"{nb}: no evidence recorded (did the notebook finish?)")
    return Evidence.from_dict(found)


def notebook_error(nb: str | os.PathLike[str] | dict[str, Any]) -> str | None:
    """The error that stopped an executed notebook, as one line, or None."""
    data = _load(nb)
    for cell in data.get("cells", []):
        for output in cell.get("outputs", []) or []:
            if output.get("output_type") == "error":
                return f"{output.get('ename')}: {output.get('evalue')}"
            text = "".join(output.get("text", [])) if output.get("name") == "stdout" else ""
            for line in text.splitlines():
                if line.startswith("netlab: "):
                    return line[len("netlab: ") :]
    return None
