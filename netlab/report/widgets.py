"""The interactive form for JupyterLab: choose a target and a lab scenario, set every
parameter the investigation declares, run its steps in order, watch the trace budget,
cancel it, read the verdict.

Pre-filled from the notebook's parameters, so the same notebook runs headlessly with
papermill (where the form is simply displayed and not used) and interactively.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any

from netlab.errors import NetlabError
from netlab.findings import Findings
from netlab.investigations import get
from netlab.investigations.base import Investigation, Param
from netlab.probes import control
from netlab.targets import open_target


class InvestigationForm:
    """Target and lab inputs with validation, Run/Cancel buttons, a progress bar and the
    verdict; ``form.widget`` is the ipywidgets box (the form displays itself)."""

    def __init__(self, investigation: str | type[Investigation], *, target: str = "local", lab: str = "",
                 **params: Any):  # fmt: skip
        import ipywidgets as w

        from netlab import lab as labs

        self.cls = get(investigation) if isinstance(investigation, str) else investigation
        self.findings: Findings | None = None
        self._thread: threading.Thread | None = None
        self.inputs = {p.name: _input(w, p, params.get(p.name, p.default)) for p in self.cls.params}
        self.params_error = w.HTML()
        for box in self.inputs.values():
            box.observe(lambda _: self._validate(), names="value")
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
        self.lab.observe(lambda _: self._lab_changed(), names="value")
        self.run_button.on_click(lambda _: self.start())
        self.cancel_button.on_click(lambda _: control.cancel())
        self.lab_up.on_click(lambda _: self._bring_lab_up())
        self.widget = w.VBox(
            [
                w.HTML(f"<b>{self.cls.title}</b>"),
                w.HBox([self.target, self.target_error]),
                w.HBox([self.lab, self.lab_up, self.lab_state]),
                *self.inputs.values(),
                self.params_error,
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

    def values(self) -> dict[str, Any]:
        """The parameters as typed in the form (dicts from JSON text)."""
        out = {}
        for p in self.cls.params:
            value = self.inputs[p.name].value
            if p.type is dict:
                try:
                    value = json.loads(value) if str(value).strip() else None
                except json.JSONDecodeError:
                    raise NetlabError(f"parameter {p.name}: {value!r} is not JSON") from None
            out[p.name] = value
        return out

    def _check_params(self) -> None:
        # With a lab chosen, the parameters it holds count as given (pod_ip, say).
        given = self.values()
        if self.lab.value:
            given = self.cls.resolve("local", self.lab.value, **given)[1]
        self.cls.parse(given)

    def _validate(self) -> bool:
        ok = True
        for box, check in ((self.target_error, lambda: open_target(self.target.value)),
                           (self.params_error, self._check_params)):  # fmt: skip
            try:
                check()
                box.value = ""
            except NetlabError as exc:
                box.value = f"<span style='color:#cf222e' class='netlab-error'>{exc}</span>"
                ok = False
        self.run_button.disabled = not ok
        return ok

    def _lab_changed(self) -> None:
        self._show_lab_state()
        self._validate()

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
        self._validate()

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
        control.add_listener(self._on_progress)
        try:
            session = self.cls.start(self.target.value, self.lab.value, **self.values())
            findings = session.run()  # the notebook's steps, in the notebook's order
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


def _input(w: Any, param: Param, value: Any) -> Any:
    """The widget for one declared parameter, its help as the tooltip."""
    common = {
        "description": param.name,
        "description_tooltip": param.help,
        "style": {"description_width": "initial"},
    }
    if param.type is int:
        return w.IntText(value=int(value or 0), **common)
    if param.type is float:
        return w.FloatText(value=float(value or 0.0), **common)
    if param.type is dict:
        return w.Text(value=json.dumps(value) if value else "", placeholder=param.help, **common)
    return w.Text(value=str(value or ""), placeholder=param.help, **common)


def form(investigation: str | type[Investigation], namespace: Mapping[str, Any] | None = None,
         **params: Any) -> InvestigationForm:  # fmt: skip
    """The form for ``investigation``, pre-filled from the notebook's variables
    (``namespace``, e.g. ``globals()``: target, lab and every declared parameter)."""
    given = dict(namespace or {})
    given.update(params)
    target, lab = str(given.pop("target", "local")), str(given.pop("lab", ""))
    return InvestigationForm(investigation, target=target, lab=lab, **given)
