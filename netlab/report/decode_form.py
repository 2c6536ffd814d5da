"""The paste-and-decode form for JupyterLab (``notebooks/decode.ipynb``): a text area for
output pasted from a ticket, an optional kind and layout, a Decode button, and the decoded
blocks with their warnings below. It reads no node and needs no privilege.

Pre-filled from the notebook's parameters: text given there is decoded at once, so a
papermill run with ``text`` set records the result.
"""

from __future__ import annotations

import html
from typing import Any

from netlab.errors import NetlabError


class DecodeForm:
    """A text area for pasted output, a kind and a layout (both optional) and a Decode
    button; the decoded blocks show below with their warnings. ``form.result`` holds the
    last :class:`~netlab.decoders.decoded.DecodedPaste`. Pre-filled text is decoded at once,
    so a papermill run with ``text`` set records the result."""

    def __init__(self, text: str = "", *, kind: str = "", layout: str = ""):
        import ipywidgets as w

        from netlab.decoders.detect import KINDS

        self.result: Any = None
        self.text = w.Textarea(
            value=text,
            placeholder="paste output here, decoration and all: bpftool, iptables-save, conntrack, ss, stacks...",
            layout=w.Layout(width="100%", height="16em"),
        )
        self.kind = w.Dropdown(
            options=[("detect", "")] + [(k, k) for k in KINDS],
            value=kind if kind in KINDS else "",
            description="kind",
        )
        self.layout = w.Text(value=layout, description="layout", placeholder="e.g. lb4_services/D, ipcache")
        self.button = w.Button(description="Decode", button_style="primary")
        self.message = w.HTML()
        self.output = w.Output()
        self.button.on_click(lambda _: self.run())
        self.widget = w.VBox(
            [self.text, w.HBox([self.kind, self.layout, self.button]), self.message, self.output]
        )
        if text.strip():
            self.run()

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def run(self) -> None:
        """Decode the text area's content with the chosen kind and layout."""
        from IPython.display import display

        from netlab.decoders import decode

        self.output.clear_output()
        try:
            result = decode(
                self.text.value, kind=self.kind.value or None, layout=self.layout.value.strip() or None
            )
        except NetlabError as exc:
            self.result = None
            self.message.value = (
                f"<div class='netlab-error' style='color:#cf222e'>netlab: {html.escape(str(exc))}</div>"
            )
            return
        self.result = result
        rows = sum(len(block.table) for block in result)
        warnings = sum(len(block.warnings) for block in result)
        self.message.value = (
            f"<div class='netlab-decoded-summary'>{len(result)} block(s), {rows} row(s), "
            f"{warnings} warning(s)</div>"
        )
        with self.output:
            display(result)


def decode_form(text: str = "", *, kind: str = "", layout: str = "") -> DecodeForm:
    """The paste-and-decode form, pre-filled from the notebook's parameters."""
    return DecodeForm(text, kind=kind, layout=layout)
