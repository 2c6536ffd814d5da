"""Kernel tests: root, a real kernel, and the lab. See tests/conftest.py for the
skip-or-fail rule."""

from __future__ import annotations

import pytest

from tests.conftest import need, need_root  # noqa: F401  (re-exported for test modules)


@pytest.fixture(autouse=True)
def _kernel_tests_need_root() -> None:
    need_root()
