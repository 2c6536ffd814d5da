"""Shared test configuration.

Tests marked ``kernel`` need root and real kernel features. On a machine without them
they skip with a reason, unless ``NETLAB_REQUIRE_KERNEL=1`` (set by CI), which turns
every such skip into a failure: CI must prove the kernel behaviour, not skip it.
"""

from __future__ import annotations

import os

import pytest

REQUIRE_KERNEL = os.environ.get("NETLAB_REQUIRE_KERNEL") == "1"


def need(condition: bool, reason: str) -> None:
    """Skip (or fail under NETLAB_REQUIRE_KERNEL=1) unless ``condition`` holds."""
    if condition:
        return
    if REQUIRE_KERNEL:
        pytest.fail(f"NETLAB_REQUIRE_KERNEL=1 but {reason}")
    pytest.skip(reason)


def need_root() -> None:
    need(os.geteuid() == 0, "needs root")


@pytest.fixture
def root() -> None:
    need_root()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "kernel" in item.keywords:
            item.add_marker(pytest.mark.usefixtures("root"))
