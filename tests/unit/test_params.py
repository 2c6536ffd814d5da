"""Parameter validation: values that reach commands and filters."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netlab import params
from netlab.errors import NetlabError


def test_addresses_are_canonical() -> None:
    assert params.ip_address(" 10.0.0.1 ") == "10.0.0.1"
    assert params.ip_address("FD00:0::1") == "fd00::1"


@pytest.mark.parametrize("bad", ["10.0.0.256", "1.2.3.4; reboot", "", "::g"])
def test_bad_addresses_name_the_parameter(bad: str) -> None:
    with pytest.raises(NetlabError, match="parameter pod_ip"):
        params.ip_address(bad, "pod_ip")


@pytest.mark.parametrize("bad", ["0", "65536", "80;ls", "-1", "http"])
def test_bad_ports(bad: str) -> None:
    with pytest.raises(NetlabError, match="parameter dport"):
        params.port(bad, "dport")


@given(st.text())
def test_names_never_carry_shell_syntax(text: str) -> None:
    try:
        accepted = params.name(text)
    except NetlabError:
        return
    assert not set(accepted) & set(" ;|&$`'\"\\/<>()\n*?")


def test_paths() -> None:
    assert params.path("/sys/fs/bpf/x") == "/sys/fs/bpf/x"
    for bad in ("relative", "-rf", "/a\nb", ""):
        with pytest.raises(NetlabError):
            params.path(bad)


def test_service_is_ipv4_or_bracketed_ipv6() -> None:
    """``fd00::1:80`` could be the address fd00::1 port 80 or the address fd00::1:80 with no
    port: it is refused, naming the bracketed form, never guessed."""
    from netlab.investigations.cgroup_progs import frontend, parse_service

    assert parse_service("10.96.0.10:80") == ("10.96.0.10", 80)
    assert parse_service("[fd00:10:96::a]:8080") == ("fd00:10:96::a", 8080)
    assert frontend(*parse_service("[fd00:10:96::a]:8080")) == "[fd00:10:96::a]:8080"
    for bad in ("fd00::1:80", "10.96.0.10", "[fd00::1]", "[10.96.0.10:80", "10.96.0.10:0", "x:80"):
        with pytest.raises(NetlabError, match="parameter service"):
            parse_service(bad)
