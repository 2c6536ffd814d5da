"""The lab's bounded wait: it returns once ready and otherwise fails naming what it was
still waiting for (no root needed)."""

from __future__ import annotations

import itertools

import pytest

from netlab.errors import NetlabError
from netlab.lab.ready import wait_for


def test_returns_once_ready() -> None:
    asked = []
    answers = itertools.chain(["eth0 (DOWN)", "eth0 (DOWN)"], itertools.repeat(""))

    def problem() -> str:
        asked.append(1)
        return next(answers)

    waited = wait_for("links", problem, timeout=5, interval=0.01)
    assert len(asked) == 3 and 0.02 <= waited < 5


def test_fails_naming_what_is_missing() -> None:
    with pytest.raises(NetlabError, match=r"lab: links not ready after 0\.2 s: eth1 \(LOWERLAYERDOWN\)"):
        wait_for("links", lambda: "eth1 (LOWERLAYERDOWN)", timeout=0.2, interval=0.05)
