"""A node that changes while netlab reads it, on the real kernel: namespaces and cgroups
that go away mid-read (a pod deleted, the process whose /proc path was listed exiting).
The demo met the first: stuck-tcp's keys-only route listed the namespaces of a lab
that another lab's teardown removed a moment later, and stopped on nsenter's error."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from netlab import naming
from netlab.collectors import bpf_objects, netns, ss
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
    before = set(leftovers())  # the session's guest node may be up: it is not this test's
    subprocess.run(["ip", "netns", "add", NAME], check=True)
    try:
        subprocess.run(["ip", "-n", NAME, "addr", "add", f"{ADDRESS}/32", "dev", "lo"], check=True)
        yield os.stat(PATH).st_ino
    finally:
        subprocess.run(["ip", "netns", "delete", NAME], capture_output=True, check=False)
    assert set(leftovers()) - before == set()


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


def test_cgroups_that_come_and_go_do_not_end_the_walk_of_the_tree() -> None:
    """bpftool stops its walk at a cgroup removed after it was listed (about 2 in 100
    walks while a cgroup is made and removed in a loop here): netlab walks again."""
    root = f"/sys/fs/cgroup/unified/{naming.PREFIX}-churn"
    before = set(leftovers())
    os.makedirs(root, exist_ok=True)
    stop = threading.Event()

    def churn() -> None:
        i = 0
        while not stop.is_set():
            path = f"{root}/c{i % 8}"
            os.mkdir(path)
            os.rmdir(path)
            i += 1

    worker = threading.Thread(target=churn)
    worker.start()
    try:
        walks = [bpf_objects.cgroup_attachments(LocalTarget(), root) for _ in range(400)]
    finally:
        stop.set()
        worker.join()
        os.rmdir(root)
    assert all(w.empty for w in walks)
    assert set(leftovers()) - before == set()


def test_a_cgroup_root_that_is_not_there_fails_at_once_naming_it() -> None:
    with pytest.raises(
        NetlabError, match=f"cgroup tree /sys/fs/cgroup/unified/{naming.PREFIX}-absent` failed"
    ):
        bpf_objects.cgroup_attachments(LocalTarget(), f"/sys/fs/cgroup/unified/{naming.PREFIX}-absent")
