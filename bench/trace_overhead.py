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
import subprocess
import sys
import time

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


def main() -> None:
    name = f"{naming.PREFIX}-bench"
    host = LocalTarget()
    host.run(["ip", "netns", "add", name])
    try:
        host.run(["ip", "-n", name, "link", "set", "lo", "up"])
        ns = NetnsTarget(name)
        results = {"untraced": rate(ns)}
        counted: dict[str, int] = {}
        with tracefs.Instance(host, "bench") as inst:
            inst.enable("skb", "kfree_skb")
            results["tracefs event"] = rate(ns)
        flows = {
            "netlab in-kernel counter, another flow": drops.Flow("10.9.9.9", "10.9.9.10", 9, protocol="udp"),
            "netlab in-kernel counter, this flow": drops.Flow("127.0.0.1", "127.0.0.1", 9, protocol="udp"),
        }
        for label, flow in flows.items():
            trace = drops.trace(ns, 0.5, flow=flow, mechanism=drops.IN_KERNEL, max_events=10**7,
                                during=lambda: rate(ns))  # fmt: skip
            results[label] = float(trace.during)
            counted[label] = int(trace.summary["count"].sum())
        with tracefs.Instance(host, "bench") as inst:
            inst.enable("skb", "kfree_skb", filter="reason > 2", stacktrace=True)
            results["netlab tracefs fallback (stack per event)"] = rate(ns)
        if shutil.which("bpftrace"):
            tracer = subprocess.Popen(["bpftrace", "-e", "tracepoint:skb:kfree_skb { @[args->reason] = count(); }"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            time.sleep(3)
            results["bpftrace count by reason"] = rate(ns)
            tracer.terminate()
            tracer.wait()
        base = results["untraced"]
        print(f"{'mechanism':>42} {'drops/s':>10} {'cost':>7}")
        for mechanism, value in results.items():
            print(f"{mechanism:>42} {value:10.0f} {100 * (1 - value / base):6.1f}%")
        for label, n in counted.items():
            print(f"({label}: {n} drops counted)")
    finally:
        host.run(["ip", "netns", "del", name], check=False)


if __name__ == "__main__":
    main()
