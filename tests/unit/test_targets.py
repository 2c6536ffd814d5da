"""Target URLs, argument quoting and one-line errors (no root needed)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from netlab import naming
from netlab.errors import NetlabError
from netlab.targets import LocalTarget, NetnsTarget, SshTarget, open_target


@pytest.mark.parametrize(
    ("url", "kind", "canonical"),
    [
        ("local", LocalTarget, "local"),
        ("", LocalTarget, "local"),
        ("netns://nlab-stk-node", NetnsTarget, "netns://nlab-stk-node"),
        ("ssh://root@127.0.0.1", SshTarget, "ssh://root@127.0.0.1"),
        ("ssh://node-3.example.org:2222", SshTarget, "ssh://node-3.example.org:2222"),
        ("ssh://admin@[fd00::1]:22", SshTarget, "ssh://admin@[fd00::1]:22"),
        (
            "ssh://root@10.0.0.7:2222/netns/nlab-stk-node",
            SshTarget,
            "ssh://root@10.0.0.7:2222/netns/nlab-stk-node",
        ),
    ],
)
def test_valid_targets(url: str, kind: type, canonical: str) -> None:
    target = open_target(url)
    assert isinstance(target, kind)
    assert target.url == canonical


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ssh://host;rm -rf /", "not a valid host"),
        ("ssh://$(reboot)", "not a valid"),
        ("ssh://-oProxyCommand=x", "not a valid host"),
        ("ssh://root@host:99999", "outside 1-65535"),
        ("ssh://ro ot@host", "not a valid user"),
        ("gopher://x", "unknown scheme 'gopher'"),
        ("netns://a b", "not a valid name"),
        ("netns://../etc", "not a valid name"),
        ("ssh://root@node/netns/a;b", "not a valid name"),
        ("ssh://root@node/netns/", "not a valid ssh URL"),
    ],
)
def test_invalid_targets_get_one_line_errors(url: str, words: str) -> None:
    with pytest.raises(NetlabError) as info:
        open_target(url)
    message = str(info.value)
    assert words in message
    assert "\n" not in message


def test_ssh_quotes_every_argument_and_bounds_time() -> None:
    target = SshTarget("127.0.0.1", "root")
    argv = target._spawn_argv(["cat", "/tmp/a b; reboot"], 7)
    assert argv[:2] == ["ssh", "-o"]
    assert "StrictHostKeyChecking=yes" in argv and "BatchMode=yes" in argv
    remote = argv[-1]
    # The remote shell sees exactly one argument for the path, and a timeout wrapper.
    assert shlex.split(remote) == ["timeout", "-k", "2", "7", "cat", "/tmp/a b; reboot"]


def test_run_refuses_shell_strings() -> None:
    with pytest.raises(TypeError):
        LocalTarget().run("ls -l")  # type: ignore[arg-type]


def test_missing_command_is_one_line() -> None:
    with pytest.raises(NetlabError, match="command 'netlab-no-such-tool' not found"):
        LocalTarget().run(["netlab-no-such-tool"])


def test_failed_command_names_it() -> None:
    with pytest.raises(NetlabError) as info:
        LocalTarget().run(["ls", "/netlab/does/not/exist"])
    assert "ls /netlab/does/not/exist" in str(info.value)


def test_timeout_is_reported() -> None:
    with pytest.raises(NetlabError, match="did not finish within 0.5 s"):
        LocalTarget().run(["sleep", "10"], timeout=0.5)


def test_a_namespace_is_on_the_node_under_investigation() -> None:
    node = open_target("ssh://root@10.0.0.7:2222")
    pod = open_target("netns://nlab-stk-pod1", node=node)
    assert pod.url == "ssh://root@10.0.0.7:2222/netns/nlab-stk-pod1"
    assert pod.host().url == node.url
    remote = shlex.split(pod._spawn_argv(["ss", "-tn"], 5)[-1])
    assert remote == [
        "timeout",
        "-k",
        "2",
        "5",
        "nsenter",
        "--net=/run/netns/nlab-stk-pod1",
        "--",
        "ss",
        "-tn",
    ]
    # A sibling namespace of a namespace target is on the same machine.
    assert open_target("netns://b", node=pod).url == "ssh://root@10.0.0.7:2222/netns/b"
    assert open_target("netns://b", node=LocalTarget()).url == "netns://b"
    assert open_target("netns://b", node=NetnsTarget("a")).url == "netns://b"


def _control(target: SshTarget) -> tuple[list[str], str]:
    argv = target._spawn_argv(["true"], 5)
    options = [argv[i + 1] for i, a in enumerate(argv) if a == "-o"]
    return options, next(o for o in options if o.startswith("ControlPath="))


def test_ssh_connections_are_shared_per_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    options, path = _control(SshTarget("127.0.0.1", "root"))
    assert "ControlMaster=auto" in options
    assert path.startswith(f"ControlPath={naming.runtime_base()}/{naming.PREFIX}_ssh_") and path.endswith(
        "_%C"
    )
    assert _control(SshTarget("127.0.0.1", "root"))[1] == path
    # A connection opened under one ssh configuration (keys, known hosts) is never
    # reused under another: host keys are checked again.
    config = tmp_path / "ssh_config"
    config.write_text("UserKnownHostsFile /dev/null\n")
    monkeypatch.setenv("NETLAB_SSH_CONFIG", str(config))
    under_config = _control(SshTarget("127.0.0.1", "root"))[1]
    assert under_config != path
    config.write_text("UserKnownHostsFile /tmp/other\n")
    assert _control(SshTarget("127.0.0.1", "root"))[1] not in (path, under_config)
    assert _control(SshTarget("127.0.0.1", "root", ssh_options=["-4"]))[1] != path
