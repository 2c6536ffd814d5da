from __future__ import annotations

from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "samples"


def sample_text(name: str) -> str:
    """The original output of a sample: everything after its '# ---' header marker line."""
    lines = (SAMPLES / name).read_text("utf-8").splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.startswith("# ---"):
            return "".join(lines[i + 1 :])
    raise AssertionError(f"{name}: no '# ---' marker")


@pytest.fixture
def sample():
    return sample_text
