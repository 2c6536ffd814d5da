"""The interactive form for JupyterLab: choose a target and a lab scenario, run the
investigation (or one step), watch the trace budget, cancel it, read the verdict.

Pre-filled from the notebook's parameters, so the same notebook runs headlessly with
papermill (where the form is simply displayed and not used) and interactively.
"""

from __future__ import annotations

import importlib
import threading
from typing import Any

from netlab.errors import NetlabError
from netlab.investigations import REGISTRY
from netlab.probes import control
from netlab.targets import open_target


class InvestigationForm:
    """Target and lab inputs with validation, Run/Cancel buttons, a progress bar and the
    verdict; ``form.widget`` is the ipywidgets box (the form displays itself)."""

    def __init__(self, investigation: str, *, target: str = "local", lab: str = "", **params: Any):
        import ipywidgets as w

        from netlab import lab as labs

        if investigation not in REGISTRY:
            raise NetlabError(f"no investigation {investigation!r}", f"choose one of: {', '.join(REGISTRY)}")
        self.info = REGISTRY[investigation]
        self.params = params
        self.findings = None
        self._thread: threading.Thread | None = None
        scenarios = [""] + list(labs.SCENARIOS())
        self.target = w.Text(
            value=target, description="target", placeholder="local | netns://NAME | ssh://root@node"
        )
        self.lab = w.Dropdown(options=scenarios, value=lab if lab in scenarios else "", description="lab")
        self.target_error = w.HTML()
        self.lab_state = w.HTML()
        self.lab_up = w.Button(
            description="Bring lab up", tooltip="netlab lab up SCENARIO (creates namespaces)"
        )
        self.run_button = w.Button(description="Run investigation", button_style="primary")
        self.cancel_button = w.Button(description="Cancel trace", button_style="warning", disabled=True)
        self.progress = w.FloatProgress(value=0.0, min=0.0, max=1.0, description="budget")
        self.progress_text = w.Label()
        self.verdict = w.HTML()
        self.output = w.Output()
        self.target.observe(lambda _: self._validate(), names="value")
        self.lab.observe(lambda _: self._show_lab_state(), names="value")
        self.run_button.on_click(lambda _: self.start())
        self.cancel_button.on_click(lambda _: control.cancel())
        self.lab_up.on_click(lambda _: self._bring_lab_up())
        self.widget = w.VBox(
            [
                w.HTML(f"<b>{self.info.title}</b>"),
                w.HBox([self.target, self.target_error]),
                w.HBox([self.lab, self.lab_up, self.lab_state]),
                w.HBox([self.run_button, self.cancel_button]),
                w.HBox([self.progress, self.progress_text]),
                self.verdict,
                self.output,
            ]
        )
        self._validate()
        self._show_lab_state()

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def _validate(self) -> bool:
        try:
            open_target(self.target.value)
        except NetlabError as exc:
            self.target_error.value = f"<span style='color:#cf222e' class='netlab-error'>{exc}</span>"
            self.run_button.disabled = True
            return False
        self.target_error.value = ""
        self.run_button.disabled = False
        return True

    def _show_lab_state(self) -> None:
        from netlab import lab as labs

        if not self.lab.value:
            self.lab_state.value, self.lab_up.disabled = "", True
            return
        row = next(r for r in labs.status() if r["scenario"] == self.lab.value)
        self.lab_state.value = f"<span class='netlab-lab-state'>{row['state']}</span>"
        self.lab_up.disabled = row["state"].startswith("up")

    def _bring_lab_up(self) -> None:
        from netlab import lab as labs

        self.lab_state.value = "bringing it up..."
        try:
            labs.up(self.lab.value)
        except NetlabError as exc:
            self.lab_state.value = f"<span style='color:#cf222e'>{exc}</span>"
            return
        self._show_lab_state()

    def _on_progress(self, progress: control.Progress) -> None:
        self.progress.value = progress.fraction
        self.progress_text.value = progress.text()

    def start(self) -> None:
        """Run the whole investigation in a background thread (the UI stays live)."""
        if self._thread and self._thread.is_alive() or not self._validate():
            return
        self.verdict.value = "<i class='netlab-running'>running...</i>"
        self.run_button.disabled, self.cancel_button.disabled = True, False
        control.reset()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        module = importlib.import_module(self.info.module)
        control.add_listener(self._on_progress)
        try:
            findings = module.investigate(target=self.target.value, lab=self.lab.value, **self.params)
            self.findings = findings
            self.verdict.value = (
                f"<div class='netlab-verdict-text'>Verdict: <code>{findings.verdict}</code> — "
                f"{findings.summary}</div>"
            )
            with self.output:
                self.output.clear_output()
                from IPython.display import display

                display(findings)
        except NetlabError as exc:
            self.verdict.value = f"<div class='netlab-error' style='color:#cf222e'>netlab: {exc}</div>"
        except Exception as exc:  # noqa: BLE001 - shown in the form, not lost in a thread
            self.verdict.value = (
                f"<div class='netlab-error' style='color:#cf222e'>{type(exc).__name__}: {exc}</div>"
            )
        finally:
            control.remove_listener(self._on_progress)
            self.run_button.disabled, self.cancel_button.disabled = False, True
            self.progress.value = 0.0

    def wait(self, timeout: float | None = None) -> None:
        if self._thread:
            self._thread.join(timeout)


def form(investigation: str, *, target: str = "local", lab: str = "", **params: Any) -> InvestigationForm:
    """The form for ``investigation``, pre-filled from the notebook's parameters."""
    return InvestigationForm(investigation, target=target, lab=lab, **params)
