"""What this node can do, established by trying it.

Each capability is *probed*: a tracepoint is enabled in a private tracefs instance, a
kprobe event is defined and removed, BCC compiles a program, an fentry program is
loaded; everything a probe creates is named with netlab's prefix and removed before the
probe returns. Nothing is guessed from a version number.

The result says, for each investigation step, which mechanism it will use on this node
(or why it cannot run), and is shown as a table, JSON or a pandas DataFrame.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from netlab import mounts, naming
from netlab.capability import Check
from netlab.errors import NetlabError
from netlab.targets import Target, open_target


@dataclass
class Report:
    target: str
    kernel: str
    checks: dict[str, Check] = field(default_factory=dict)
    via: str = "probed from this process"

    def ok(self, name: str) -> bool:
        check = self.checks.get(name)
        return bool(check and check.available)

    def steps(self) -> dict[str, str]:
        """Investigation step -> the mechanism it will use here, or why it cannot run."""
        return {step: plan_step(self, options) for step, options in STEP_MECHANISMS.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "kernel": self.kernel,
            "via": self.via,
            "capabilities": {n: asdict(c) for n, c in self.checks.items()},
            "steps": self.steps(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        report = cls(data["target"], data["kernel"], via=data.get("via", ""))
        for key, value in data.get("capabilities", {}).items():
            report.checks[key] = Check(**value)
        return report

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(c) for c in self.checks.values()])

    def text(self) -> str:
        def mark(v: bool | None) -> str:
            return {True: "yes", False: "no", None: "?"}[v]

        width = max(len(n) for n in self.checks) if self.checks else 10
        lines = [f"netlab doctor: {self.target}  kernel {self.kernel}  ({self.via})", ""]
        lines += [f"  {c.name:<{width}}  {mark(c.available):<3}  {c.detail}" for c in self.checks.values()]
        lines += ["", "Investigation steps on this node:"]
        steps = self.steps()
        width = max(len(s) for s in steps)
        lines += [f"  {s:<{width}}  {m}" for s, m in steps.items()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return self.frame().to_html(index=False)


# Step -> mechanisms in order of preference, each with the capabilities it needs.
STEP_MECHANISMS: dict[str, list[tuple[str, list[str]]]] = {
    "stuck-tcp: socket counters": [("ss -tine (sock_diag netlink)", ["ss"])],
    "stuck-tcp: recvmsg handler per socket": [
        ("BPF TCP iterator (CO-RE, clang + bpftool)", ["btf", "bpf_iter", "bpftool"]),
    ],
    "stuck-tcp: recvmsg call trace": [("BCC kprobes with kernel stacks", ["kprobes", "bcc_compile"])],
    "stuck-tcp: sockmap dump": [("bpftool map dump (JSON)", ["bpftool_json"])],
    "packet-drops: drop points": [
        ("BCC raw tracepoint skb:kfree_skb, in-kernel flow filter", ["bcc_compile", "raw_tracepoint"]),
        ("tracefs skb:kfree_skb event + stacktrace trigger", ["tracepoints"]),
    ],
    "packet-drops: netfilter rules": [("iptables-save -c / nft -j", ["iptables"])],
    "packet-drops: conntrack": [("conntrack over netlink", ["conntrack"])],
    "route-cache: rt6_stats": [("/proc/net/rt6_stats", ["rt6_stats"])],
    "route-cache: percpu fast vs slow": [
        ("BPF iterator reading the percpu counter (CO-RE)", ["btf", "bpf_iter", "bpftool"])
    ],
    "route-cache: ip6_pkt_drop trace": [
        ("kprobe on ip6_pkt_drop with stacks", ["kprobes"]),
        ("tracefs skb:kfree_skb filtered to IPv6 route drop reasons", ["tracepoints"]),
    ],
    "cgroup-progs: inventory": [("bpftool cgroup tree / prog / map (JSON)", ["bpftool_json", "cgroup2"])],
}


def plan_step(report: Report, options: list[tuple[str, list[str]]]) -> str:
    missing_all: list[str] = []
    for mechanism, needs in options:
        missing = [n for n in needs if not report.ok(n)]
        if not missing:
            return mechanism
        missing_all.append(f"{mechanism} needs {', '.join(missing)}")
    return "unavailable: " + "; ".join(missing_all)


# --- the probes -------------------------------------------------------------------

Probe = Callable[[Target, Report], Check]
PROBES: list[tuple[str, Probe]] = []


def probe(name: str) -> Callable[[Probe], Probe]:
    def register(func: Probe) -> Probe:
        PROBES.append((name, func))
        return func

    return register


_CAPS = {"CAP_NET_ADMIN": 12, "CAP_SYS_ADMIN": 21, "CAP_SYS_RESOURCE": 24, "CAP_PERFMON": 38, "CAP_BPF": 39}


@probe("privileges")
def _privileges(target: Target, report: Report) -> Check:
    status = target.read_text("/proc/self/status")
    match = re.search(r"^CapEff:\s*([0-9a-f]+)", status, re.M)
    uid = re.search(r"^Uid:\s*(\d+)", status, re.M)
    eff = int(match.group(1), 16) if match else 0
    have = [n for n, bit in _CAPS.items() if eff >> bit & 1]
    lacking = [n for n in _CAPS if n not in have]
    needed = {"CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"}
    ok = needed.issubset(have) or "CAP_SYS_ADMIN" in have and "CAP_NET_ADMIN" in have
    detail = f"uid {uid.group(1) if uid else '?'}; has {', '.join(have) or 'none'}"
    if lacking:
        detail += f"; lacks {', '.join(lacking)}"
    return Check("privileges", ok, detail)


@probe("btf")
def _btf(target: Target, report: Report) -> Check:
    path = "/sys/kernel/btf/vmlinux"
    result = target.run(["od", "-An", "-tx1", "-N2", path], check=False)
    magic = result.stdout.split()
    # BTF magic 0xeB9F, little-endian on x86.
    if result.ok and magic in (["9f", "eb"], ["eb", "9f"]):
        return Check("btf", True, f"{path} readable (BTF magic found)")
    return Check("btf", False, f"{path}: {result.brief_error() if not result.ok else 'no BTF magic'}")


@probe("tracefs")
def _tracefs(target: Target, report: Report) -> Check:
    try:
        path = mounts.tracefs(target.host())
    except NetlabError as exc:
        return Check("tracefs", False, exc.message)
    return Check("tracefs", True, f"{path}")


@probe("tracepoints")
def _tracepoints(target: Target, report: Report) -> Check:
    if not report.ok("tracefs"):
        return Check("tracepoints", False, "needs tracefs")
    host = target.host()
    from netlab.probes import tracefs

    try:
        with tracefs.Instance(host, "doctor") as inst:
            inst.enable("skb", "kfree_skb")
            state = inst.read("events/skb/kfree_skb/enable").strip()
    except NetlabError as exc:
        return Check("tracepoints", False, exc.message)
    if state != "1":
        return Check("tracepoints", False, "skb:kfree_skb did not stay enabled")
    return Check("tracepoints", True, "enabled skb:kfree_skb in a private tracefs instance, removed it")


@probe("kprobes")
def _kprobes(target: Target, report: Report) -> Check:
    if not report.ok("tracefs"):
        return Check("kprobes", False, "needs tracefs")
    host = target.host()
    base = mounts.tracefs(host)
    events = f"{base}/kprobe_events"
    if not host.exists(events):
        return Check("kprobes", False, f"no {events}: kernel built without CONFIG_KPROBES")
    name = naming.probe_name("kp")
    try:
        host.write_text(events, f"p:{name} tcp_recvmsg\n", append=True)
    except NetlabError as exc:
        return Check("kprobes", False, f"defining a kprobe on tcp_recvmsg failed: {exc.message}")
    created = host.exists(f"{base}/events/kprobes/{name}")
    if created:
        host.write_text(events, f"-:{name}\n", append=True)
    else:
        return Check("kprobes", False, "kprobe definition was accepted but no event appeared")
    return Check("kprobes", True, "defined and removed a kprobe on tcp_recvmsg")


_BCC_COMPILE = """
import sys
from bcc import BPF
import bcc
b = BPF(text="int netlab_probe(void *ctx) { return 0; }")
b.load_func("netlab_probe", BPF.SOCKET_FILTER)
b.cleanup()
print(getattr(bcc, "__version__", "?"))
"""

_BCC_FENTRY = """
from bcc import BPF
b = BPF(text="KFUNC_PROBE(tcp_recvmsg) { return 0; }")
b.cleanup()
"""

_BCC_RAW_TP = """
from bcc import BPF
b = BPF(text="RAW_TRACEPOINT_PROBE(kfree_skb) { return 0; }")
b.cleanup()
"""


def _python_probe(target: Target, code: str, timeout: float = 60) -> tuple[bool, str]:
    python = sys.executable if target.is_local else "python3"
    result = target.run([python, "-c", code], timeout=timeout, check=False)
    if result.ok:
        return True, result.stdout.strip()
    lines = [ln for ln in result.stderr.splitlines() if ln.strip() and not ln.startswith((" ", "Traceback"))]
    return False, (lines[-1] if lines else result.brief_error())[:200]


@probe("bcc_import")
def _bcc_import(target: Target, report: Report) -> Check:
    ok, out = _python_probe(target, "import bcc; print(getattr(bcc, '__version__', '?'))", 30)
    return Check("bcc_import", ok, f"bcc {out} (OS package python3-bpfcc)" if ok else out)


@probe("kernel_headers")
def _headers(target: Target, report: Report) -> Check:
    build = f"/lib/modules/{report.kernel}/build"
    result = target.run(["readlink", "-f", build], check=False)
    if not result.ok or not target.exists(build):
        return Check("kernel_headers", False, f"no {build}: BCC cannot compile")
    real = result.stdout.strip()
    release_file = target.try_read_text(f"{real}/include/config/kernel.release")
    release = (release_file or "").strip() or real.rsplit("linux-headers-", 1)[-1]
    if release == report.kernel:
        return Check("kernel_headers", True, f"{real} matches the running kernel")
    return Check(
        "kernel_headers",
        False,
        f"headers are {release}, running kernel is {report.kernel}: mismatched; BCC programs "
        "must use only UAPI contexts (no kernel-internal structs)",
    )


@probe("bcc_compile")
def _bcc_compile(target: Target, report: Report) -> Check:
    if not report.ok("bcc_import"):
        return Check("bcc_compile", False, "needs bcc importable")
    ok, out = _python_probe(target, _BCC_COMPILE)
    if not ok:
        return Check("bcc_compile", False, f"compiling a trivial program failed: {out}")
    note = "" if report.ok("kernel_headers") else " with mismatched headers (UAPI-only programs)"
    return Check("bcc_compile", True, f"compiled and loaded a trivial program{note}")


@probe("raw_tracepoint")
def _raw_tp(target: Target, report: Report) -> Check:
    if not report.ok("bcc_compile"):
        return Check("raw_tracepoint", False, "needs BCC")
    ok, out = _python_probe(target, _BCC_RAW_TP)
    return Check("raw_tracepoint", ok, "attached a raw tracepoint on kfree_skb via BCC" if ok else out)


@probe("fentry")
def _fentry(target: Target, report: Report) -> Check:
    if not report.ok("bcc_compile"):
        return Check("fentry", False, "needs BCC")
    ok, out = _python_probe(target, _BCC_FENTRY)
    if not ok and "super-user" in out:
        # BCC words every EPERM from the kernel as a privilege problem.
        out = "the kernel refused to load it (EPERM) even with CAP_BPF and CAP_SYS_ADMIN"
    return Check(
        "fentry", ok, "loaded an fentry program on tcp_recvmsg" if ok else f"fentry load failed: {out}"
    )


@probe("bpffs")
def _bpffs(target: Target, report: Report) -> Check:
    try:
        return Check("bpffs", True, mounts.bpffs(target.host()))
    except NetlabError as exc:
        return Check("bpffs", False, exc.message)


@probe("cgroup2")
def _cgroup2(target: Target, report: Report) -> Check:
    try:
        return Check("cgroup2", True, mounts.cgroup2(target.host()))
    except NetlabError as exc:
        return Check("cgroup2", False, exc.message)


@probe("bpftool")
def _bpftool(target: Target, report: Report) -> Check:
    result = target.run(["bpftool", "version"], check=False)
    if not result.ok:
        return Check("bpftool", False, result.brief_error())
    return Check("bpftool", True, result.stdout.splitlines()[0].strip())


@probe("bpftool_json")
def _bpftool_json(target: Target, report: Report) -> Check:
    if not report.ok("bpftool"):
        return Check("bpftool_json", False, "needs bpftool")
    try:
        data = target.run_json(["bpftool", "-j", "prog", "show"])
    except NetlabError as exc:
        return Check("bpftool_json", False, exc.message)
    return Check(
        "bpftool_json", isinstance(data, list), f"`bpftool -j prog show` listed {len(data or [])} programs"
    )


@probe("bpf_iter")
def _bpf_iter(target: Target, report: Report) -> Check:
    if not (report.ok("btf") and report.ok("bpftool")):
        return Check("bpf_iter", False, "needs BTF and bpftool")
    clang = target.run(["clang", "--version"], check=False)
    if not clang.ok:
        return Check("bpf_iter", False, "clang is missing: cannot build the CO-RE iterator")
    try:
        from netlab.probes import bpf_iter
    except ImportError:
        return Check("bpf_iter", None, "iterator support not installed")
    return bpf_iter.doctor_check(target)


@probe("ss")
def _ss(target: Target, report: Report) -> Check:
    result = target.run(["ss", "-V"], check=False)
    return Check("ss", result.ok, result.stdout.strip() or result.brief_error())


@probe("iptables")
def _iptables(target: Target, report: Report) -> Check:
    result = target.run(["iptables", "-V"], check=False)
    if not result.ok:
        return Check("iptables", False, result.brief_error())
    version = result.stdout.strip()
    backend = "nft" if "nf_tables" in version else "legacy"
    save = target.run(["iptables-save", "-t", "filter"], check=False)
    if not save.ok:
        return Check("iptables", False, f"{version}: iptables-save failed: {save.brief_error()}")
    legacy = target.run(["iptables-legacy-save"], check=False)
    also = " (legacy tables also readable)" if legacy.ok and backend == "nft" else ""
    return Check("iptables", True, f"{version}; backend {backend}{also}")


@probe("nft")
def _nft(target: Target, report: Report) -> Check:
    result = target.run(["nft", "-j", "list", "tables"], check=False)
    return Check("nft", result.ok, "nft -j works" if result.ok else result.brief_error())


@probe("conntrack")
def _conntrack(target: Target, report: Report) -> Check:
    version = target.run(["conntrack", "--version"], check=False)
    if not version.ok:
        return Check("conntrack", False, "conntrack tool missing")
    count = target.run(["conntrack", "-C"], check=False)
    if not count.ok:
        return Check("conntrack", False, f"conntrack netlink: {count.brief_error()}")
    return Check(
        "conntrack", True, f"{version.stdout.strip()}; netlink answers ({count.stdout.strip()} entries)"
    )


@probe("rt6_stats")
def _rt6(target: Target, report: Report) -> Check:
    text = target.try_read_text("/proc/net/rt6_stats")
    return Check("rt6_stats", bool(text), "/proc/net/rt6_stats readable" if text else "no IPv6 route stats")


def check(target: str | Target | None = None, *, only: list[str] | None = None) -> Report:
    """Probe ``target`` (default: this machine) and return the :class:`Report`.

    A remote node runs its own ``netlab doctor --json`` when netlab is installed there;
    otherwise the probes that only need commands run through the target and the ones
    that need code on the node say so.
    """
    tgt = open_target(target)
    if not tgt.is_local:
        try:
            data = tgt.run_netlab(["doctor"])
            report = Report.from_dict(data)
            report.target, report.via = tgt.url, f"netlab doctor run on the node through {tgt.url}"
            return report
        except NetlabError as exc:
            if "needs netlab installed" not in exc.message:
                raise
            fallback = True
    else:
        fallback = False
    kernel = tgt.run(["uname", "-r"]).stdout.strip()
    report = Report(tgt.url, kernel)
    if fallback:
        report.via = "commands through the target; netlab is not installed on the node"
    for name, func in PROBES:
        if only and name not in only:
            continue
        if fallback and name in ("bcc_import", "bcc_compile", "raw_tracepoint", "fentry", "bpf_iter"):
            report.checks[name] = Check(name, None, "needs netlab installed on the node")
            continue
        try:
            report.checks[name] = func(tgt, report)
        except NetlabError as exc:
            report.checks[name] = Check(name, None, exc.message)
    return report


def frame(target: str | Target | None = None) -> pd.DataFrame:
    """The doctor's capabilities as a DataFrame (capability, available, detail)."""
    return check(target).frame()
