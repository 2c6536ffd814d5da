"""Investigations read BPF maps through one reader (collectors.bpf_objects.read: the
kernel's batch lookup where it runs, bpftool elsewhere, the mechanism recorded), or for
a sockhash the sockmap iterator with ``bpf_objects.keys`` as its fallback: never their
own ``bpftool map dump``."""

from __future__ import annotations

from pathlib import Path

import netlab.investigations

HERE = Path(netlab.investigations.__file__).parent


def test_no_investigation_dumps_a_map_itself() -> None:
    for path in sorted(HERE.glob("*.py")):
        text = path.read_text()
        for call in ('"map", "dump"', "'map', 'dump'", "bpf_objects.dump(", "bpfmap.read("):
            assert call not in text, f"{path.name} reads a map with {call}; use bpf_objects.read"
