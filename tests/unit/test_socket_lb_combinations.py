"""Any combination of socket-LB programs and LB map copies a node can hold, reasoned about
without a kernel (netlab.investigations.socket_lb is pure): service and backend map
copies pinned where the agent pins them, pinned elsewhere or unpinned, empty or full,
agreeing or not; programs using both maps, the service map alone (post_bind4), the
backend map alone, or neither, on connect4 and other hooks, in any order. The map
contents are real bytes in Cilium's layouts, decoded by netlab's decoders.

Never an exception; the verdict is one of the three; when every non-empty copy holds
the same services and backends, never a stale program; a connect4 program first with
a copy that disagrees with the agent's is named."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from netlab.decoders import decode_lb_backends, decode_lb_services, map_layout
from netlab.decoders.bulk import encode
from netlab.investigations.base import Evidence
from netlab.investigations.cgroup_progs import VERDICT, CgroupProgs, frontend
from netlab.investigations.socket_lb import SocketLB

CGROUP = "/sys/fs/cgroup/kubepods"
# Per family: services, good and stale backends, the hooks, and the map names and layouts.
FAMILY = {
    4: {"services": ["10.96.0.10", "10.96.0.11"], "good": {1: "10.244.1.11", 2: "10.244.1.12"},
        "stale": {1: "10.244.1.99", 2: "10.244.1.12"}, "hooks": ["connect4", "post_bind4", "sendmsg4", "recvmsg4"],
        "lb": "lb4", "unknown": "10.0.0.1"},
    6: {"services": ["fd00:10:96::a", "fd00:10:96::b"], "good": {1: "fd00:10:244:1::11", 2: "fd00:10:244:1::12"},
        "stale": {1: "fd00:10:244:1::99", 2: "fd00:10:244:1::12"},
        "hooks": ["connect6", "post_bind6", "sendmsg6", "recvmsg6"], "lb": "lb6", "unknown": "fd00::1"},
}  # fmt: skip


@dataclass
class Raw:
    name: str
    key_size: int
    value_size: int
    keys: bytes
    values: bytes


def _services(content: str, family: int = 4) -> Raw:
    fam = FAMILY[family]
    svc = map_layout(f"{fam['lb']}_services", "D")
    rows_k, rows_v = [], []
    if content != "empty":
        for n, address in enumerate(fam["services"], start=1):
            rows_k += [{"address": address, "dport": 80, "backend_slot": 0}, {"address": address, "dport": 80,
                       "backend_slot": 1}]  # fmt: skip
            rows_v += [{"backend_id": 0, "count": 1, "rev_nat_index": n}, {"backend_id": n, "count": 0,
                       "rev_nat_index": n}]  # fmt: skip
    return Raw(
        f"cilium_{fam['lb']}_serv",
        svc.key.size,
        svc.value.size,
        encode(svc.key, pd.DataFrame(rows_k)),
        encode(svc.value, pd.DataFrame(rows_v)),
    )


def _backends(content: str, family: int = 4) -> Raw:
    fam = FAMILY[family]
    be = map_layout(f"{fam['lb']}_backends", "E")
    table = {} if content == "empty" else fam["stale"] if content == "stale" else fam["good"]
    ids = pd.DataFrame({"backend_id": list(table)})
    values = pd.DataFrame([{"address": a, "port": 8080, "proto": 6} for a in table.values()])
    return Raw(
        f"cilium_{fam['lb']}_back", be.key.size, be.value.size, encode(be.key, ids), encode(be.value, values)
    )


PIN = st.sampled_from(["agent", "elsewhere", "unpinned"])
CONTENT = st.sampled_from(["good", "stale", "empty"])
MAP_COPIES = st.lists(st.tuples(PIN, CONTENT), min_size=0, max_size=3)
PROGRAMS = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 2), st.integers(0, 2), st.booleans(), st.booleans()),
    min_size=0, max_size=5,
)  # fmt: skip


def _pins(kind: str, name: str, n: int) -> list[str]:
    return {
        "agent": [f"/sys/fs/bpf/tc/globals/{name}"],
        "elsewhere": [f"/sys/fs/bpf/{name}_{n}"],
        "unpinned": [],
    }[kind]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    family=st.sampled_from([4, 6]),
    services=MAP_COPIES,
    backends=MAP_COPIES,
    programs=PROGRAMS,
    asked=st.sampled_from([None, 0, 1, "unknown"]),
)
def test_any_combination_gets_a_verdict(family, services, backends, programs, asked) -> None:
    fam = FAMILY[family]
    service = fam["unknown"] if asked == "unknown" else None if asked is None else fam["services"][asked]
    findings = _decide(
        services, backends, [(fam["hooks"][h], *rest) for h, *rest in programs], service, family
    )
    assert findings.verdict in {"healthy", VERDICT, "inconclusive"}, findings.summary
    full = {c for (_, c) in services if c != "empty"} | {c for (_, c) in backends if c != "empty"}
    if len(full) <= 1:  # every copy that holds anything holds the same
        assert findings.verdict != VERDICT, findings.summary
    if findings.verdict == VERDICT:
        assert "Program " in findings.summary and f"{fam['hooks'][0]} programs" in findings.summary
        assert any(f"bpftool cgroup detach {CGROUP} {fam['hooks'][0]} id" in r for r in findings.remediation)


def test_the_old_generation_first_is_named_and_an_empty_copy_is_not() -> None:
    """Case 003's shape with Cilium's family: old connect4 + post_bind4 (service map
    alone) with their own maps, attached first; the agent's pair; an empty side copy."""
    services = [("agent", "good"), ("unpinned", "stale"), ("elsewhere", "empty")]
    backends = [("agent", "good"), ("unpinned", "stale")]
    programs = [("connect4", 1, 1, True, True), ("post_bind4", 1, 0, True, False),
                ("connect4", 0, 0, True, True), ("post_bind4", 0, 0, True, False)]  # fmt: skip
    findings = _decide(services, backends, programs, None)
    assert findings.verdict == VERDICT, findings.summary
    assert findings.summary.startswith("Program 1 (sock4_0, loaded 2026-11-25T00:00:00) runs at position 1")
    assert (
        "10.244.1.99:8080" in findings.summary
        and "The program using the agent's map is 3" in findings.summary
    )
    rollout = _decide([("agent", "good"), ("unpinned", "good")], [("agent", "good"), ("unpinned", "good")],
                      programs, None)  # fmt: skip
    assert rollout.verdict == "healthy" and "as in the middle of an agent rollout" in rollout.summary
    assert (
        "1 (sock4_0, loaded 2026-11-25T00:00:00), 3 (sock4_2, loaded 2026-11-25T00:02:00)" in rollout.summary
    )
    assert "agree on every service they share" in rollout.summary
    assert "Not using the agent-managed map: 1. Still attached once the rollout is over" in rollout.summary


def test_the_rollout_note_claims_agreement_only_where_it_was_compared() -> None:
    """The incident's copies, walked only for the service they agree on: healthy for that
    service, and the note says the maps agree on it, not on every service."""
    services = [("agent", "good"), ("unpinned", "stale")]
    programs = [("connect4", 1, 1, True, True), ("connect4", 0, 0, True, True)]
    findings = _decide(services, services, programs, "10.96.0.11")
    assert findings.verdict == "healthy", findings.summary
    assert "for the 1 service walked" in findings.summary
    assert (
        "Their maps agree on the 1 service walked (2 service slots differ between copies)" in findings.summary
    )
    assert "every service" not in findings.summary and "rollout is over" in findings.summary


def _decide(services, backends, programs, asked, family=4):  # type: ignore[no-untyped-def]
    maps, decoded, lb = [], {}, FAMILY[family]["lb"]
    for n, (pin, content) in enumerate(services):
        decoded[100 + n] = decode_lb_services(_services(content, family), map_name=None)
        maps.append(
            {
                "map_id": 100 + n,
                "name": f"cilium_{lb}_serv",
                "pinned": _pins(pin, f"cilium_{lb}_services_v2", n),
            }
        )
    for n, (pin, content) in enumerate(backends):
        decoded[200 + n] = decode_lb_backends(_backends(content, family), map_name=None)
        maps.append(
            {
                "map_id": 200 + n,
                "name": f"cilium_{lb}_back",
                "pinned": _pins(pin, f"cilium_{lb}_backends_v3", n),
            }
        )
    progs, attached = [], []
    for n, (hook, svc, back, uses_svc, uses_back) in enumerate(programs):
        ids = ([100 + svc % len(services)] if uses_svc and services else []) + (
            [200 + back % len(backends)] if uses_back and backends else []
        )
        progs.append(
            {"prog_id": n + 1, "name": f"sock4_{n}", "loaded_at": f"2026-11-25T00:0{n}:00", "map_ids": ids}
        )
        position = sum(1 for a in attached if a["hook"] == hook) + 1
        attached.append(
            {"cgroup": CGROUP, "hook": hook, "position": position, "prog_id": n + 1, "name": f"sock4_{n}"}
        )
    progs_frame = pd.DataFrame(progs, columns=["prog_id", "name", "loaded_at", "map_ids"])
    attached_frame = pd.DataFrame(attached, columns=["cgroup", "hook", "position", "prog_id", "name"])
    # A node may hold no map at all: the table keeps its columns.
    socket_lb = SocketLB(progs_frame, pd.DataFrame(maps, columns=["map_id", "name", "pinned"]), decoded)

    copies = socket_lb.copies()
    rows = socket_lb.service_rows()
    walk, summary = socket_lb.walk(
        attached_frame, attached_frame, [frontend(asked, 80)] if asked else None, "/sys/fs/cgroup"
    )
    results = {
        "cgroup_root": "/sys/fs/cgroup", "lb_copies": copies, "lb_programs": len({p for p, _ in socket_lb.tables()}),
        "lb_maps": rows[rows["copies_disagree"].astype(bool)], "walk": walk[walk["differs_from_pinned"]] if len(walk)
        else walk, "walk_summary": summary,
        "lb_rows": {"rows": len(rows), "disagreeing": int(rows["copies_disagree"].astype(bool).sum())},
    }  # fmt: skip
    return CgroupProgs.decide(Evidence("cgroup-progs", "local", "6.1", results=results))
