"""Guest tests: the second node, Debian's 6.1 kernel in a VM netlab boots, over ssh.

One guest serves the whole session: it takes about 25 s to boot under emulation. The
session fixture boots it (or reuses one already running) and stops it at the end if it
booted it. Where the machine cannot boot a guest, the tests skip with the reason, and
fail instead under ``NETLAB_REQUIRE_KERNEL=1`` (see tests/conftest.py).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator

import pytest

from netlab.lab import guest
from tests.conftest import need

# Console lines kept from a guest that stopped answering: a whole stall report (its header,
# RIP and every CPU's stack) is about 60.
CONSOLE_LINES = 80


@pytest.fixture(scope="session")
def booted_guest() -> Iterator[guest.Guest]:
    reason = guest.missing()
    need(not reason, f"this machine cannot boot the guest node: {reason}")
    was_up = guest.status()["state"] == "up"
    yield guest.up()
    if not was_up:
        guest.down()


@pytest.fixture
def node(booted_guest: guest.Guest, monkeypatch: pytest.MonkeyPatch) -> guest.Guest:
    """The session's guest, booted again if a test stopped it, with ``NETLAB_SSH_CONFIG``
    pointing at its ssh_config as a user would set it."""
    current = guest.up()  # one ssh round trip when it is running
    monkeypatch.setenv("NETLAB_SSH_CONFIG", current.ssh_config)
    return current


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    """A guest test that failed carries the guest's state and the end of its console: when
    the guest stopped answering, the next test's boot replaces it and its console with it."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and "booted_guest" in getattr(item, "fixturenames", ()):
        state = guest.status().get("state", "?")
        cpus = [] if state == "up" else ["where its CPUs were:", *guest.where_stuck()]
        report.sections.append(
            ("guest", f"state: {state}\n" + "\n".join([*guest.console_tail(CONSOLE_LINES), *cpus]))
        )
