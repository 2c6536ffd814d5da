"""Progress and cancellation for running traces.

A trace's wait loop calls :func:`tick` a few times a second; listeners (the notebook's
progress bar) see the time and event budget left, and :func:`cancel` (the widget's
Cancel button, from another thread) makes the next tick raise :class:`Cancelled`, so the
probe's ``with`` block detaches it exactly as on Ctrl-C.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

from netlab.errors import NetlabError


class Cancelled(NetlabError):
    """The person asked to stop the trace; the probe was detached."""


@dataclass
class Progress:
    step: str
    elapsed: float
    duration: float
    events: int | None = None
    max_events: int | None = None

    @property
    def fraction(self) -> float:
        parts = [self.elapsed / self.duration if self.duration else 0.0]
        if self.events is not None and self.max_events:
            parts.append(self.events / self.max_events)
        return min(1.0, max(parts))

    def text(self) -> str:
        if not self.duration:  # a message, not a countdown
            return self.step
        left = max(0.0, self.duration - self.elapsed)
        events = f", {self.events}/{self.max_events} events" if self.max_events else ""
        return f"{self.step}: {left:.1f} s left{events}"


Listener = Callable[[Progress], None]
_listeners: list[Listener] = []
_cancel = threading.Event()


def announce(message: str) -> None:
    """Ask the person at the keyboard to act now (reproduce the failure, say): the
    notebook's progress line shows it, and so does the terminal that started a headless
    run (written to the process's own stderr, which papermill's kernel inherits)."""
    for listener in list(_listeners):
        listener(Progress(message, 0.0, 0.0))
    try:
        os.write(2, f"netlab: {message}\n".encode())
    except OSError:
        pass


def add_listener(listener: Listener) -> None:
    _listeners.append(listener)


def remove_listener(listener: Listener) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def cancel() -> None:
    _cancel.set()


def reset() -> None:
    _cancel.clear()


def tick(progress: Progress) -> None:
    """Report progress; raise :class:`Cancelled` if a cancel was requested."""
    for listener in list(_listeners):
        listener(progress)
    if _cancel.is_set():
        _cancel.clear()
        raise Cancelled(f"{progress.step}: cancelled after {progress.elapsed:.1f} s; the probe was detached")
