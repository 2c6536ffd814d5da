"""The answer of one capability probe ("can this node do X?"), kept beside the
mechanisms that probe themselves (``netlab.probes.*.doctor_check``) and aggregated by
:mod:`netlab.doctor`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Check:
    name: str
    available: bool | None  # None: could not be determined
    detail: str
