"""Namespaces that go away while netlab reads them, on the real kernel: a pod deleted
mid-investigation, or the process whose /proc path was listed exiting. (The demo met
this: stuck-tcp's keys-only route listed the namespaces of a lab that another lab's
teardown removed a moment later, and stopped on nsenter's error.)"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from netlab import naming
from netlab.collectors import netns, ss
from netlab.errors import NetlabError
from netlab.targets import LocalTarget
from tests.kernel.labtools import leftovers

pytestmark = pytest.mark.kernel
NAME = f"{naming.PREFIX}-nsg-a"
PATH = f"/run/netns/{NAME}"
ADDRESS = "10.250.7.1"


@pytest.fixture
def namespace() -> Iterator[int]:
    """A named namespace holding ADDRESS; its inode."""
    subprocess.run(["ip", "netns", "delete", NAME], capture_output=True, check=False)
    subprocess.run(["ip", "netns", "add", NAME], check=True)
    try:
        subprocess.run(["ip", "-n", NAME, "addr", "add", f"{ADDRESS}/32", "dev", "lo"], check=True)
        yield os.stat(PATH).st_ino
    finally:
        subprocess.run(["ip", "netns", "delete", NAME], capture_output=True, check=False)
    assert leftovers() == []


def test_a_namespace_deleted_after_it_was_listed_is_gone_not_an_error(namespace: int) -> None:
    host = LocalTarget()
    listed = netns.paths(host)
    assert listed[namespace] == PATH
    assert netns.addresses(host, PATH) == {ADDRESS}
    subprocess.run(["ip", "netns", "delete", NAME], check=True)
    assert netns.addresses(host, PATH) is None
    assert ss.sockets_in(host, PATH, [80]) is None
    assert netns.each(host, {namespace: PATH}, lambda path: netns.addresses(host, path)) == {namespace: None}


def test_a_namespace_still_held_by_a_process_is_read_through_that_process(namespace: int) -> None:
    """Its name is deleted after the listing, but a process still lives in it: the
    second look finds it by inode under /proc and reads it there."""
    holder = subprocess.Popen(["ip", "netns", "exec", NAME, "sleep", "60"])
    try:
        for _ in range(100):  # until the process has entered the namespace
            if _inside(holder.pid, namespace):
                break
            time.sleep(0.05)
        subprocess.run(["ip", "netns", "delete", NAME], check=True)
        host = LocalTarget()
        found = netns.each(host, {namespace: PATH}, lambda path: netns.addresses(host, path))
        assert found == {namespace: {ADDRESS}}
    finally:
        holder.kill()
        holder.wait()


def _inside(pid: int, inode: int) -> bool:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino == inode
    except FileNotFoundError:
        return False


def test_a_path_that_is_there_but_no_namespace_still_fails_with_the_command_error() -> None:
    with pytest.raises(NetlabError, match="nsenter"):
        netns.addresses(LocalTarget(), "/etc/hostname")
