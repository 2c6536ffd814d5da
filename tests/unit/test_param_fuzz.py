"""Every declared parameter of every investigation, fed arbitrary values: each either
comes back as its declared type or is refused with a one-line error that names it.
Never another exception, never a silent substitution."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netlab import params
from netlab.errors import NetlabError
from netlab.investigations import REGISTRY

PARAMS = [(name, p) for name, cls in REGISTRY.items() for p in cls.params]
VALUES = st.one_of(
    st.text(max_size=80),
    st.text(alphabet="0123456789.:-/abcdef ;|&$`'\"\\\n\x00", max_size=40),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
)


@pytest.mark.parametrize(("investigation", "param"), PARAMS, ids=[f"{n}.{p.name}" for n, p in PARAMS])
@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(value=VALUES)
def test_a_value_is_typed_or_refused_by_name(investigation: str, param, value: object) -> None:
    try:
        parsed = param.parse(value)
    except NetlabError as exc:
        text = str(exc)
        assert text.startswith(f"parameter {param.name}:"), text
        assert "\n" not in exc.message
        return
    if value is None or value == param.default:
        assert parsed == param.default
    else:
        assert isinstance(parsed, param.type), (param.name, value, parsed)
    # Accepted text never carries a shell or filter metacharacter into a command. Paths
    # are exempt: any byte but NUL is legal in one, and they only ever travel as one argv
    # element (quoted with shlex.join over ssh), never through a shell or a filter. So are
    # command lines (a reproduction the user gives): split into an argument vector and run
    # without a shell, their metacharacters are plain characters.
    if isinstance(parsed, str) and param.check not in (params.path, params.url_path, params.command_line):
        assert not set(parsed) & set(";|&$`'\"\\\n\x00 "), (param.name, parsed)
