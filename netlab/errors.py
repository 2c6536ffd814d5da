"""The one error type a user sees.

Anything the person at the keyboard can fix (a bad parameter, a missing tool, a node
that lacks a capability) raises :class:`NetlabError` with a short message naming what
was wrong and, where there is one, a remedy. The CLI and the notebooks show it as one
line, never as a traceback.
"""

from __future__ import annotations


class NetlabError(Exception):
    """A user-fixable problem: ``message`` says what was wrong, ``remedy`` what to do."""

    def __init__(self, message: str, remedy: str | None = None):
        super().__init__(message)
        self.message = message
        self.remedy = remedy

    def __str__(self) -> str:
        if self.remedy:
            return f"{self.message} ({self.remedy})"
        return self.message


class DecodeError(NetlabError):
    """Bytes or text that do not fit the expected layout or format.

    The message names the entry, line or field that did not fit.
    """


class CapabilityMissing(NetlabError):
    """The node cannot do what a step needs (no kprobes, no BTF, tool missing...)."""
