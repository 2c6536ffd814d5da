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
