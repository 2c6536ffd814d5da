"""Runs last: after the whole suite, nothing netlab made is left on the machine.

Every lab scenario, probe and test created objects named with netlab's prefix; each
was supposed to remove them on success, error, timeout and interrupt. This looks for
any survivor by name, with the same listing ``netlab cleanup`` and every lab test use.
"""

from __future__ import annotations

import pytest

from netlab.cleanup import leftovers

pytestmark = pytest.mark.kernel


def test_nothing_of_netlab_is_left() -> None:
    assert leftovers() == []
