"""Damaged lines: raised by default, kept as warnings for pasted text.

Output read live from a node is whole, so a line that fits nothing means the parser is
wrong about the format and must say so (raise). Output pasted by a person is often damaged
in small ways (a line's first characters lost, a summary line, a sentence between two
commands): a human reads past such a line, and so should the parser, as long as it says
which line it skipped and why. A :class:`Damage` passed to a parser chooses between the two.

What is never tolerated is a value that would come out wrong, e.g. a key whose width
contradicts the others: parsers raise :class:`~netlab.errors.DecodeError` for those
whatever the mode.
"""

from __future__ import annotations

from netlab.errors import DecodeError


class Damage:
    """Collects damaged-line warnings (``tolerate=True``) or raises on the first one."""

    def __init__(self, *, tolerate: bool) -> None:
        self.tolerate = tolerate
        self.warnings: list[str] = []

    def report(self, message: str) -> None:
        """A damaged line: ``message`` names the line and why. Raises unless tolerating."""
        if not self.tolerate:
            raise DecodeError(message)
        self.warnings.append(message)


def strict(damage: Damage | None) -> Damage:
    """The damage policy a parser uses when its caller gave none: raise."""
    return damage if damage is not None else Damage(tolerate=False)
