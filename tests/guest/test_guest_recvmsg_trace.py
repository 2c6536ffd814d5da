"""The BCC kprobe trace of recvmsg calls on Debian's 6.1 (kprobes, matching headers), over
ssh: it counts real calls, and its probes are gone from the node when it returns, when
the reproduction fails, when the caller is interrupted (SIGINT) and when the caller is
killed (SIGKILL: the ssh pipe closes and the node script stops on its own)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from netlab import naming
from netlab.errors import NetlabError
from netlab.lab import guest
from netlab.probes import recvmsg_trace
from netlab.targets import open_target

pytestmark = pytest.mark.guest

SSH_PORT = 22  # the guest's own sshd: the trace's request is this test's own ssh traffic


def _ours(url: str) -> list[str]:
    """netlab's programs on the node now (the trace's kprobe programs carry the prefix)."""
    progs = open_target(url).run_json(["bpftool", "-j", "prog", "show"]) or []
    return [p.get("name", "") for p in progs if naming.owned(p.get("name", ""))]


def _kprobes(url: str) -> str:
    listing = open_target(url).run(["cat", "/sys/kernel/debug/kprobes/list"], check=False).stdout
    return "\n".join(line for line in listing.splitlines() if "recvmsg" in line or "update_common" in line)


def test_trace_counts_calls_and_detaches_on_return_and_on_error(node: guest.Guest) -> None:
    target = open_target(node.url)
    before = _kprobes(node.url)
    traced = recvmsg_trace.trace(target, SSH_PORT, 2, during=lambda: target.run(["true"]))
    assert set(traced.attached) >= {"tcp_recvmsg", "tcp_bpf_recvmsg", "sock_hash_update_common"}
    # sshd reads this test's commands with tcp_recvmsg, on the node's own namespace.
    sshd = traced.calls[
        (traced.calls["function"] == "tcp_recvmsg") & (traced.calls["local_port"] == SSH_PORT)
    ]
    assert len(sshd) and sshd["comm"].str.startswith("sshd").any(), traced.calls
    assert sshd["stack"].str.startswith("tcp_recvmsg <- inet_recvmsg").all()
    assert traced.refused.empty
    assert _ours(node.url) == [] and _kprobes(node.url) == before

    def fails() -> None:
        raise NetlabError("the reproduction broke")

    with pytest.raises(NetlabError, match="the reproduction broke"):
        recvmsg_trace.trace(target, SSH_PORT, 2, during=fails)
    assert _ours(node.url) == [] and _kprobes(node.url) == before


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_trace_detaches_when_the_caller_is_interrupted_or_killed(
    node: guest.Guest, sig: signal.Signals
) -> None:
    before = _kprobes(node.url)
    code = (
        "from netlab.probes import recvmsg_trace\nfrom netlab.targets import open_target\n"
        f"recvmsg_trace.trace(open_target({node.url!r}), {SSH_PORT}, 300)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ), stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + recvmsg_trace.COMPILE_TIMEOUT + 30
        while not _ours(node.url):
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "the trace never attached"
            time.sleep(1)
        assert f"{naming.PREFIX}_rcv" in _ours(node.url)
        proc.send_signal(sig)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while _ours(node.url) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _ours(node.url) == [], "the trace's programs outlived their caller"
        assert _kprobes(node.url) == before
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if sig == signal.SIGINT:
        stderr = proc.stderr.read().decode() if proc.stderr else ""
        assert "KeyboardInterrupt" in stderr, stderr


def test_trace_parameters_are_checked_before_anything_runs(node: guest.Guest) -> None:
    target = open_target(node.url)
    with pytest.raises(NetlabError, match="parameter port"):
        recvmsg_trace.trace(target, 0)
    with pytest.raises(NetlabError, match="parameter duration"):
        recvmsg_trace.trace(target, SSH_PORT, float("nan"))
    assert json.dumps(_ours(node.url)) == "[]"
