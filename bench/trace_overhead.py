"""Tracing overhead: throughput of a drop-heavy loopback workload (UDP to a closed port:
every datagram is dropped with NO_SOCKET and answered by ICMP) untraced, with a bare
tracefs kfree_skb event, with a bpftrace one-liner counting by reason, and with netlab's
drop trace: the in-kernel counter (its default) filtered on another flow (the usual
case: the node drops other traffic while one flow is investigated) and on the flow
being dropped (every drop counted, a stack taken once per site), and the tracefs
fallback (a stack per event). Runs in a network namespace with netlab's prefix, removed
afterwards."""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from netlab import naming
from netlab.probes import drops, tracefs
from netlab.targets import LocalTarget, NetnsTarget

SECONDS = 4.0
SENDER = """
import socket, time, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end = time.monotonic() + float(sys.argv[1]); n = 0
while time.monotonic() < end:
    for _ in range(200):
        try: s.sendto(b"x", ("127.0.0.1", 9))
        except OSError: pass
    n += 200
print(n / float(sys.argv[1]))
"""


def rate(ns: NetnsTarget) -> float:
    return float(ns.run([sys.executable, "-c", SENDER, str(SECONDS)], timeout=SECONDS + 20).stdout)


ROUNDS = 5  # each figure is the median of this many runs, mechanisms interleaved


def _in_kernel(ns: NetnsTarget, flow: drops.Flow, counted: list[int]) -> float:
    trace = drops.trace(
        ns, 0.5, flow=flow, mechanism=drops.IN_KERNEL, max_events=10**7, during=lambda: rate(ns)
    )
    counted.append(int(trace.summary["count"].sum()))
    return float(trace.during)


def _tracefs(ns: NetnsTarget, host: LocalTarget, **enable: object) -> float:
    with tracefs.Instance(host, "bench") as inst:
        inst.enable("skb", "kfree_skb", **enable)  # type: ignore[arg-type]
        return rate(ns)


def _bpftrace(ns: NetnsTarget) -> float:
    tracer = subprocess.Popen(["bpftrace", "-e", "tracepoint:skb:kfree_skb { @[args->reason] = count(); }"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        time.sleep(3)
        return rate(ns)
    finally:
        tracer.terminate()
        tracer.wait()


def main() -> None:
    name = f"{naming.PREFIX}-bench"
    host = LocalTarget()
    host.run(["ip", "netns", "add", name])
    try:
        host.run(["ip", "-n", name, "link", "set", "lo", "up"])
        ns = NetnsTarget(name)
        other = drops.Flow("10.9.9.9", "10.9.9.10", 9, protocol="udp")
        this = drops.Flow("127.0.0.1", "127.0.0.1", 9, protocol="udp")
        counted: dict[str, list[int]] = {"another flow": [], "this flow": []}
        runs: dict[str, Callable[[], float]] = {
            "untraced": lambda: rate(ns),
            "tracefs event alone": lambda: _tracefs(ns, host),
            "netlab in-kernel counter, another flow": lambda: _in_kernel(ns, other, counted["another flow"]),
            "netlab in-kernel counter, this flow": lambda: _in_kernel(ns, this, counted["this flow"]),
            "netlab tracefs fallback (stack per event)": lambda: _tracefs(ns, host, filter="reason > 2",
                                                                          stacktrace=True),
        }  # fmt: skip
        if shutil.which("bpftrace"):
            runs["bpftrace count by reason"] = lambda: _bpftrace(ns)
        results: dict[str, list[float]] = {label: [] for label in runs}
        for _ in range(ROUNDS):
            for label, run in runs.items():
                results[label].append(run())
        base = statistics.median(results["untraced"])
        print(f"{'mechanism':>42} {'drops/s':>10} {'cost':>7}   (median of {ROUNDS})")
        for mechanism, values in results.items():
            value = statistics.median(values)
            print(f"{mechanism:>42} {value:10.0f} {100 * (1 - value / base):6.1f}%")
        for label, n in counted.items():
            print(f"(in-kernel counter, {label}: {statistics.median(n):.0f} drops counted per run)")
    finally:
        host.run(["ip", "netns", "del", name], check=False)


if __name__ == "__main__":
    main()
