"""Case 002: IPv6 probes fail now and then — the route cache over ``max_size``.

Every IPv6 route-cache entry is a dst entry counted by a percpu_counter. ``dst_alloc``
calls the garbage collector once the *fast* count (the shared part only) passes
``gc_thresh``; on kernels before 6.3 the collector then fails the allocation when the
*slow* count (shared part plus every CPU's local delta) is still above ``max_size``, the
route falls back to ``ip6_null_entry`` and the packet is dropped in ``ip6_pkt_discard``.
Each CPU folds its delta into the shared count only past a batch, so fast and slow
disagree by up to nr_cpus*(batch-1), depending on which CPU runs: the drops come and go.
Linux 6.3 removed the max_size check (commit af6d10345ca7, also backported: Debian's
6.1 has it); the kernel's BTF tells which kind of kernel the node runs.

Read-only: rt6_stats and sysctls are read inside each namespace, the counter by a BPF
iterator (pinned, read, unpinned), drops by a bounded trace of the drop tracepoint and,
where kprobes and matching headers exist, of ip6_pkt_drop itself (case 002's method).
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from netlab import params
from netlab.capability import Mechanism, Step
from netlab.collectors import kernel_btf, reach, rt6
from netlab.errors import NetlabError
from netlab.findings import HEALTHY, Findings
from netlab.investigations.base import LIKELY, NOTHING, WORTH_A_LOOK, Evidence, Investigation, Param, Signal
from netlab.probes import bpf_build, drops, dst_counter, ip6_drop_trace
from netlab.targets import Target, open_target

OVER_MAX_SIZE = "route-cache-over-max-size"
SKEW = "percpu-counter-skew"
# Read on the node: its kernel release and CPU count, which set the batch and the worst gap;
# where it has BTF, whether its dst GC can refuse an allocation (max_size enforced).
BTF_RULES = Mechanism(
    "the kernel's BTF (struct dst_ops.gc returns int: max_size checked; void: removed) and the "
    "percpu_counter batch rule for its release and CPU count",
    (bpf_build.BTF_FILE,),
)
KERNEL_RULES = Mechanism("the kernel's percpu_counter batch rule for its release and CPU count")
# Drop reasons of IPv6 route lookups that found no route (ip6_pkt_discard and friends).
ROUTE_DROP_REASONS = (
    "IP_INNOROUTES",
    "IP_OUTNOROUTES",
    "IPV6_NDISC_NS_OTHERHOST",
    "IP_INADDRERRORS",
    "IP_OUTADDRERRORS",
)
MAX_SIZE_HINT = "Route cache is full: consider increasing sysctl net.ipv6.route.max_size"


def _count(table: Any) -> int:
    if isinstance(table, pd.DataFrame):
        return int(table["count"].sum()) if "count" in table else len(table)
    return len(table or [])


def release_tuple(release: str) -> tuple[int, int, int]:
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", release)
    if not match:
        raise ValueError(f"kernel release {release!r} has no version number")
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


@dataclass(frozen=True)
class KernelRules:
    """What a kernel release does with the dst counter, and how sure the kit is."""

    release: str
    enforces_max_size: bool
    max_size_certainty: str
    batch_rule: str
    batch: int
    worst_gap: int


def kernel_rules(release: str, nr_cpus: int, gc_returns: str | None = None) -> KernelRules:
    """max_size enforcement and the dst counter batch for ``release`` on ``nr_cpus``.

    - max_size: checked in ip6_dst_gc() until Linux 6.3 removed it (commit af6d10345ca7,
      "ipv6: remove max_size check inline with ipv4"), which also made ``dst_ops.gc``
      return void instead of the "over max_size" answer dst_alloc() acted on. Stable
      series and vendors backported it, so the release alone says "likely"; the return
      type of ``gc`` in the kernel's BTF (``gc_returns``) says "certain".
    - batch: 4.19's dst_entries_add() used the global percpu_counter_batch,
      max(32, 2*nr_cpus); later kernels pass a fixed DST_PERCPU_COUNTER_BATCH of 32
      (include/net/dst_ops.h). The fast count can lag the slow one by nr_cpus*(batch-1).
    """
    version = release_tuple(release)
    if gc_returns is not None:
        enforced = gc_returns != "void"
        certainty = (f"certain: this kernel's BTF has dst_ops.gc returning {gc_returns}, "
                     + ("so dst_alloc() fails when ip6_dst_gc() finds the exact count over max_size"
                        if enforced else "the max_size check removed (af6d10345ca7 or its backport)"))  # fmt: skip
    elif version >= (6, 3):
        enforced, certainty = False, "certain: removed upstream in 6.3 (af6d10345ca7)"
    else:
        enforced = True
        certainty = ("likely: kernels before 6.3 check max_size unless their stable series or vendor "
                     "backported af6d10345ca7; the kernel log's max_size hint settles it")  # fmt: skip
    if version < (4, 20):
        batch, rule = max(32, 2 * nr_cpus), "percpu_counter_batch = max(32, 2*nr_cpus)"
    else:
        batch, rule = 32, "DST_PERCPU_COUNTER_BATCH = 32"
    return KernelRules(release, enforced, certainty, rule, batch, nr_cpus * (batch - 1))


def simulate(
    nr_cpus: int, batch: int, allocations: int, *, frees: float = 0.2, seed: int = 1
) -> pd.DataFrame:
    """A percpu_counter under a workload of dst allocations (and some frees) landing on
    random CPUs: the shared count (fast) and the exact total (slow) after each event.
    A model for the write-up, not a measurement."""
    rng = random.Random(seed)
    local = [0] * nr_cpus
    shared = 0
    rows = []
    for step in range(allocations):
        cpu = rng.randrange(nr_cpus)
        amount = -1 if rng.random() < frees and shared + sum(local) > 0 else 1
        value = local[cpu] + amount
        if abs(value) >= batch:  # percpu_counter_add_batch(): fold into the shared count
            shared += value
            local[cpu] = 0
        else:
            local[cpu] = value
        rows.append({"event": step, "fast": shared, "slow": shared + sum(local)})
    return pd.DataFrame(rows)


def _pod_targets(value: Any, name: str) -> dict[str, str]:
    return {params.name(k, name): open_target(url).url for k, url in value.items()}


class RouteCache(Investigation):
    name = "route-cache"
    title = "IPv6 route cache and percpu counters: fast vs slow"
    notebook = "route-cache.ipynb"
    scenario = "ipv6-route-cache"
    params = (
        Param("pod_targets", dict, None, "pods' vantage points by name, e.g. {\"pod1\": \"netns://NAME\"}",
              _pod_targets, lab="pod_netns", lab_format="netns://{}"),
        Param("pod_ip6", str, "", "a pod's IPv6 address the node probes during the drop trace", params.ip_address,
              lab="pod_ip6"),
        Param("pod_port", int, 8080, "its TCP port", params.port, lab="health_port"),
        Param("path", str, "/health", "URL path the probes request", params.url_path),
        Param("samples", int, 5, "counter samples", params.up_to(1000)),
        Param("interval", float, 0.5, "seconds between samples", params.seconds_up_to(60)),
        Param("duration", float, 5.0, "seconds of the drop trace", params.seconds_up_to(600)),
        Param("max_events", int, 10000, "drop events kept at most", params.up_to(1_000_000)),
    )  # fmt: skip
    steps = (
        Step("route_state", "rt6_stats", (rt6.PROC,)),
        Step("fast_vs_slow", "percpu fast vs slow", (dst_counter.ITERATOR,)),
        Step("why_intermittent", "why intermittent", (BTF_RULES, KERNEL_RULES)),
        Step("route_drops", "ip6 route drops", (drops.KFREE_SKB,)),
        Step("pkt_drop_trace", "ip6_pkt_drop calls (kprobes)", (ip6_drop_trace.KPROBE_TRACE,)),
    )

    def prepare(self) -> None:
        v = self.values
        self.pods = {
            name: open_target(url, node=self.target) for name, url in (v["pod_targets"] or {}).items()
        }
        self.pod_ip6, self.pod_port, self.path = v["pod_ip6"], v["pod_port"], v["path"]
        self.samples, self.interval = v["samples"], v["interval"]
        self.duration, self.max_events = v["duration"], v["max_events"]

    def route_state(self) -> pd.DataFrame:
        """rt6_stats with every column named, and the route sysctls, per namespace."""
        if self.mechanism("route_state") is None:
            return pd.DataFrame()
        frame = rt6.table({"node": self.target, **self.pods})
        self.results["state"] = frame
        self.evidence("route cache per namespace", frame, "dst_entries is column 6, the exact (slow) count")
        return frame

    def fast_vs_slow(self) -> pd.DataFrame:
        """The node's dst counter sampled ``samples`` times: fast, slow and their gap."""
        if self.mechanism("fast_vs_slow") is None:
            return pd.DataFrame()
        rows = []
        start = time.monotonic()
        counter = None
        for _ in range(self.samples):
            counter = dst_counter.read(self.target)
            rows.append({"t": round(time.monotonic() - start, 2), "fast": counter.fast, "slow": counter.slow,
                         "gap": counter.gap, "rt6_dst_entries": counter.rt6_dst_entries,
                         **{f"cpu{c}": v for c, v in sorted(counter.per_cpu.items())}})  # fmt: skip
            time.sleep(self.interval)
        frame = pd.DataFrame(rows)
        assert counter is not None
        self.results["counter"] = frame
        self.results["counter_note"] = counter.note
        self.used("percpu fast vs slow", f"{dst_counter.ITERATOR.name}; {counter.note}")
        self.evidence("dst counter: fast vs slow", frame, counter.note)
        return frame

    def counter_chart(self) -> go.Figure:
        import plotly.express as px  # only where a chart is drawn: ~0.06 s to import

        frame = self.results.get("counter")
        if frame is None:
            frame = self.fast_vs_slow()
        if not len(frame):
            why = self.mechanisms.get(self.step("fast_vs_slow").title, "not collected")
            return go.Figure(layout={"title": f"IPv6 dst entries: fast vs slow not read here ({why})"})
        return px.line(frame, x="t", y=["fast", "slow", "rt6_dst_entries"], markers=True,
                       title="IPv6 dst entries: fast (shared count) vs slow (exact)")  # fmt: skip

    def why_intermittent(self) -> pd.DataFrame:
        """The batch this kernel uses and the worst-case fast/slow gap on this host."""
        chosen = self.mechanism("why_intermittent")
        release = self.kernel()
        cpus = int(self.target.run(["nproc", "--all"]).stdout.strip() or 1)
        gc_returns = None
        if chosen is BTF_RULES:
            try:
                gc_returns = kernel_btf.function_pointer_returns(
                    kernel_btf.raw_dump(self.target), "dst_ops", "gc"
                )
            except NetlabError as exc:
                self.used(self.step("why_intermittent").title,
                          f"{KERNEL_RULES.name} (the BTF could not say: {exc.message})")  # fmt: skip
        rules = kernel_rules(release, cpus, gc_returns)
        self.results["rules"] = asdict(rules)
        frame = pd.DataFrame([{"kernel": release, "cpus": cpus, "batch": rules.batch, "batch_rule": rules.batch_rule,
                               "worst_case_gap": rules.worst_gap, "enforces_max_size": rules.enforces_max_size,
                               "certainty": rules.max_size_certainty}])  # fmt: skip
        self.evidence("why it is intermittent", frame, "fast can lag slow by up to cpus*(batch-1)")
        return frame

    def simulation_chart(self, allocations: int = 3000) -> go.Figure:
        import plotly.express as px  # only where a chart is drawn: ~0.06 s to import

        known = self.results.get("rules")
        rules = KernelRules(**known) if known else kernel_rules(self.kernel(), 96)
        cpus = max(2, rules.worst_gap // max(rules.batch - 1, 1))
        frame = simulate(cpus, rules.batch, allocations)
        fig = px.line(frame, x="event", y=["fast", "slow"],
                      title=f"SIMULATION: percpu_counter with {cpus} CPUs, batch {rules.batch} "
                            "(fast = shared count; slow = exact)")  # fmt: skip
        return fig

    def route_drops(self) -> pd.DataFrame:
        """IPv6 no-route drops during a bounded trace while the node probes its pod."""
        if self.mechanism("route_drops") is None:
            return pd.DataFrame()
        trace = drops.trace(self.target, self.duration, max_events=self.max_events,
                            during=self._probe_pod if self.pod_ip6 else None)  # fmt: skip
        events = trace.summary
        route = events[events["reason"].isin(ROUTE_DROP_REASONS)] if len(events) else events
        self.results["route_drops"] = route
        self.results["probe_ok"] = trace.during
        log = self.target.host().run(["dmesg"], check=False).stdout
        hints = [line for line in log.splitlines() if MAX_SIZE_HINT in line]
        self.results["max_size_hints"] = hints
        self.used("ip6 route drops", trace.mechanism)
        self.evidence("IPv6 no-route drops", route, f"kernel log max_size hints: {len(hints)}")
        return route

    def _probe_pod(self) -> list[bool]:
        return [
            reach.http(self.target, self.pod_ip6, self.pod_port, self.path, timeout=1)[1].ok for _ in range(5)
        ]

    def pkt_drop_trace(self) -> pd.DataFrame:
        """Where kprobes and matching headers exist, case 002's own method: every call of
        ip6_pkt_drop (a route lookup that fell back to the null route) during a bounded
        window while the node probes its pod, with kernel stacks."""
        if self.mechanism("pkt_drop_trace") is None:
            return pd.DataFrame()
        title = self.step("pkt_drop_trace").title
        try:
            traced = ip6_drop_trace.trace(self.target, self.duration, max_events=self.max_events,
                                          during=self._probe_pod if self.pod_ip6 else None)  # fmt: skip
        except NetlabError as exc:
            self.skipped(title, exc.message)
            return pd.DataFrame()
        if not traced.attached:
            self.skipped(title, "neither ip6_pkt_drop nor ip6_pkt_discard(_out) is in this kernel's symbols")
            return pd.DataFrame()
        self.results["pkt_drops"] = traced.drops
        probes = f" while the node probed [{self.pod_ip6}]:{self.pod_port}" if self.pod_ip6 else ""
        notes = "".join(f"; {n}" for n in traced.notes)
        self.used(title, f"{ip6_drop_trace.KPROBE_TRACE.name}: {', '.join(traced.attached)}; {traced.total} "
                         f"drops in {traced.seconds:g} s{probes}{notes}")  # fmt: skip
        self.evidence("ip6_pkt_drop calls (kprobes)", traced.drops,
                      "each row: packets whose route lookup fell back to the null route, by namespace, device "
                      "and stack")  # fmt: skip
        return traced.drops

    @staticmethod
    def decide(evidence: Evidence) -> Findings:
        results = evidence.results
        missing = [k for k in ("state", "rules") if k not in results]
        if missing:
            return evidence.inconclusive([f"step result {k!r} was not collected" for k in missing])
        state = results["state"].iloc[0]
        rules = KernelRules(**results["rules"])
        dst = int(state["dst_entries"])
        max_size, gc_thresh = int(state.get("max_size", 0)), int(state.get("gc_thresh", 0))
        # The tracepoint and the ip6_pkt_drop kprobe see the same drops: the larger count.
        drops_seen = max(_count(results.get("route_drops")), _count(results.get("pkt_drops")))
        enforcement = (f"{rules.release} {'enforces' if rules.enforces_max_size else 'does not enforce'} "
                       f"net.ipv6.route.max_size ({rules.max_size_certainty})")  # fmt: skip
        counters = results.get("counter")
        if isinstance(counters, pd.DataFrame) and len(counters):
            counter = counters.iloc[-1]
            fast, slow = int(counter["fast"]), int(counter["slow"])
            gap = slow - fast
            skew = f"the fast count {fast} lags the exact count {slow} by {gap} (batch {rules.batch}, worst case {rules.worst_gap} on this host)"
        else:
            # Kernels without BTF or BPF iterators (4.19): rt6_stats, the sysctls and the
            # kernel's rules still decide; only the measured gap is lost.
            gap = None
            why = evidence.mechanisms.get("percpu fast vs slow", "not collected")
            skew = (f"the fast count was not read ({why}), so the gap is not measured: it can reach "
                    f"{rules.worst_gap} on this host (batch {rules.batch})")  # fmt: skip
        # What the kernel compares with max_size after its GC is the exact (slow) sum,
        # which is rt6_stats' dst count (the counter step's slow sum, read apart). The fast
        # count's lag (up to batch x CPUs) only decides when that exact check runs, so
        # "close to max_size" is no evidence; the exact count past it, or IPv6 route
        # drops seen, are.
        exact = dst
        over = exact > max_size
        if rules.enforces_max_size and (over or drops_seen):
            because = (f"the exact count {exact} is past max_size {max_size}" if over else
                       f"{drops_seen} IPv6 route drops were seen with the exact count at {exact} of {max_size}")  # fmt: skip
            return evidence.findings(OVER_MAX_SIZE, f"{dst} IPv6 dst entries against max_size {max_size}: {because}, "
                                 f"and route lookups fail whenever gc cannot bring the exact count under it; {skew}. "
                                 f"{enforcement}.",
                                 remediation=[f"sysctl -w net.ipv6.route.max_size={max(4 * exact, 16384)}   # in the node's network namespace",
                                              "upgrade to a kernel with af6d10345ca7 (6.3+, or a stable backport)"],
                                 reasons=[f"exact dst count {exact} > max_size {max_size}" if over else
                                          f"exact dst count {exact} <= max_size {max_size}",
                                          f"{drops_seen} IPv6 route drops traced"])  # fmt: skip
        if gap is None and dst > gc_thresh and not over:
            return evidence.inconclusive([f"{dst} IPv6 dst entries, past gc_thresh {gc_thresh}, under max_size "
                                          f"{max_size}; {skew}; {drops_seen} IPv6 route drops seen. {enforcement}."])  # fmt: skip
        if over or (dst > gc_thresh and gap != 0):
            where = f"past gc_thresh {gc_thresh}" + (
                f" and max_size {max_size}" if over else f", under max_size {max_size}"
            )
            effect = ("nothing is dropped for it here" if not rules.enforces_max_size
                      else "no IPv6 route drop was seen")  # fmt: skip
            return evidence.findings(SKEW, f"{dst} IPv6 dst entries, {where}; {skew}. {enforcement}, so {effect}. "
                                 "The fast count's lag is why such failures are intermittent on kernels that "
                                 "enforce max_size: the exact check runs only when the fast count crosses it.",
                                 remediation=[f"sysctl -w net.ipv6.route.max_size={max(4 * dst, 16384)}   # harmless here, needed on older kernels",
                                              "find what creates the route-cache entries (ip -6 route show cache): PMTU exceptions, redirects"],
                                 reasons=[f"gap {gap}", f"dst_entries {dst}", enforcement])  # fmt: skip
        return evidence.findings(HEALTHY, f"{dst} IPv6 dst entries, under gc_thresh {gc_thresh} and max_size {max_size}; "
                             f"{skew}. {enforcement}.")  # fmt: skip

    @staticmethod
    def triage(target: Target) -> Signal:
        """Quick look: the dst count against gc_thresh and max_size."""
        state = rt6.table({"node": target}).iloc[0]
        dst, max_size = int(state["dst_entries"]), int(state.get("max_size", 0) or 0)
        if max_size and dst > max_size:
            return Signal("route-cache", LIKELY, f"{dst} IPv6 dst entries > max_size {max_size}")
        if max_size and dst > max_size / 2:
            return Signal("route-cache", WORTH_A_LOOK, f"{dst} IPv6 dst entries, max_size {max_size}")
        return Signal("route-cache", NOTHING, f"{dst} IPv6 dst entries, max_size {max_size}")
