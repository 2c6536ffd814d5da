"""ss -tine parsing on the case's published output and on real output captured here."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netlab.collectors import ss
from netlab.errors import DecodeError

from .conftest import sample_text

CAPTURED = """State     Recv-Q Send-Q Local Address:Port  Peer Address:Port Process
ESTAB     0      0          127.0.0.1:43684    127.0.0.1:52155 ino:412195 sk:1005 cgroup:unreachable:1 <->
\t skmem:(r86,rb131072,t0,tb3939840,f4010,w0,o0,bl0,d0) ts sack bbr wscale:10,10 rto:204 rtt:0.031/0.015 mss:32741 cwnd:10 bytes_acked:1 segs_out:2 segs_in:1 lastsnd:10644 lastrcv:10644 lastack:10644
TIME-WAIT 0      0       192.168.50.2:50056  10.244.1.11:8080  timer:(timewait,51sec,0) ino:0 sk:1010
"""


def test_captured_output() -> None:
    frame = ss.parse(CAPTURED)
    first = frame.iloc[0]
    assert (first["state"], first["local_port"], first["peer"], first["cookie"]) == (
        "ESTAB",
        43684,
        "127.0.0.1",
        0x1005,
    )
    assert (first["segs_out"], first["segs_in"], first["bytes_acked"]) == (2, 1, 1)
    assert frame.iloc[1]["state"] == "TIME-WAIT" and frame.iloc[1]["peer_port"] == 8080


def test_the_cases_published_ss_i() -> None:
    frame = ss.parse(sample_text("ss_i_01.txt"))
    stuck = frame[frame["local_port"] == 57424]
    assert len(stuck) == 2  # before and after the request
    assert set(stuck["segs_out"]) == {2} and set(stuck["segs_in"]) == {1}  # nothing moved
    normal = frame[frame["local_port"] == 50504]
    assert list(normal["segs_in"]) == [1, 2]


@pytest.mark.parametrize("bad", ["ESTAB 0 0 nocolon 1.2.3.4:5", "HELLO 0 0 a:1 b:2", "\tsegs_in:1"])
def test_malformed_lines_are_named(bad: str) -> None:
    with pytest.raises(DecodeError, match="ss line 1"):
        ss.parse(bad)


@given(st.text(max_size=200))
def test_junk_only_ever_raises_decode_error(text: str) -> None:
    try:
        ss.parse(text)
    except DecodeError:
        pass
