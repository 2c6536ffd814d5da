"""Drops of one flow, counted in the kernel by a BPF program (``bpf/drop_counter.bpf.c``).

The program parses each dropped skb (IPv4/IPv6, TCP/UDP ports) and counts only the
flow's drops by (reason, location, stack id, netns, device, 5-tuple), with one kernel
stack per distinct site; user space reads the maps once, at the end. That keeps the
cost per drop near a tracepoint's own (see ``bench/trace_overhead.py``) where a stack
per event costs tens of percent.

Attach points, chosen on the node: the ``kfree_skb`` tracepoint as ``tp_btf`` (with the
reason argument from 5.17, without it before), or a kprobe on the function behind it
(``sk_skb_reason_drop`` 6.11+, ``kfree_skb_reason`` 5.17+, ``kfree_skb`` before).

The program is compiled here (CO-RE, against the node's BTF) and loaded on the node by a
small script that uses only the standard library and the OS's libbpf (``libbpf.so.1``):
it holds the program and its link as file descriptors and pins nothing, so the probe is
gone when that process ends, however it ends. It stops at its duration, when the cap
is reached, or when its standard input closes (how the caller stops it, and what
happens over ssh when the caller dies).
"""

from __future__ import annotations

import ipaddress
import json
import queue
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from netlab.capability import Check
from netlab.errors import NetlabError
from netlab.probes import bcc, bpf_build, control
from netlab.probes.node_process import NodeProcess
from netlab.targets import Target

KPROBE_FUNCTIONS = {"sk_skb_reason_drop": 3, "kfree_skb_reason": 2, "kfree_skb": 1}
PROGRAM = "_drop_counter"  # the end of the program's name (bpf_build prefixes it)
MAX_SITES = 4096
MAX_STACKS = 1024
LOAD_TIMEOUT = 60.0
_IPPROTO = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "any": 0}

# Runs on the node: the standard library and the OS's libbpf only (netlab is not there).
_NODE_SCRIPT = r"""
import bisect, ctypes, ctypes.util, json, os, select, signal, socket, struct, sys, time
cfg = json.loads(sys.argv[1])
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
P, I, U64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64
lib = ctypes.CDLL(ctypes.util.find_library("bpf") or "libbpf.so.1", use_errno=True)
for fn, res, args in (("bpf_object__open_file", P, [ctypes.c_char_p, P]), ("bpf_object__load", I, [P]),
                      ("bpf_object__find_map_by_name", P, [P, ctypes.c_char_p]), ("bpf_map__fd", I, [P]),
                      ("bpf_object__next_program", P, [P, P]), ("bpf_program__attach", P, [P]),
                      ("bpf_link__destroy", I, [P]), ("bpf_object__close", None, [P]),
                      ("bpf_map_update_elem", I, [I, P, P, U64]), ("bpf_map_lookup_elem", I, [I, P, P]),
                      ("bpf_map_get_next_key", I, [I, P, P]), ("libbpf_num_possible_cpus", I, [])):
    getattr(lib, fn).restype, getattr(lib, fn).argtypes = res, args

def say(**kw):
    print(json.dumps(kw), flush=True)

def fail(what):
    e = ctypes.get_errno()
    say(error=f"{what}: {os.strerror(e)} (errno {e})")
    sys.exit(3)

obj = lib.bpf_object__open_file(cfg["object"].encode(), None)
if not obj:
    fail("opening the BPF object")
link = None
try:
    if cfg["remove_object"]:
        os.unlink(cfg["object"])
    if lib.bpf_object__load(obj):
        fail("loading the program (libbpf's log above says why)")
    fd = {n: lib.bpf_map__fd(lib.bpf_object__find_map_by_name(obj, n.encode()))
          for n in ("flow", "counts", "stacks", "totals")}
    zero = ctypes.c_uint32(0)
    flow = ctypes.create_string_buffer(bytes.fromhex(cfg["flow"]))
    if lib.bpf_map_update_elem(fd["flow"], ctypes.byref(zero), flow, 0):
        fail("writing the flow filter")
    link = lib.bpf_program__attach(lib.bpf_object__next_program(obj, None))
    if not link:
        fail("attaching to " + cfg["attach"])
    say(ready=cfg["attach"])

    ncpu = lib.libbpf_num_possible_cpus()
    per_cpu = (ctypes.c_uint64 * max(ncpu, 1))()

    def total(i):  # a per-CPU array: one value per possible CPU
        key = ctypes.c_uint32(i)
        if lib.bpf_map_lookup_elem(fd["totals"], ctypes.byref(key), per_cpu):
            return 0
        return sum(per_cpu)

    started, stopped = time.monotonic(), "duration"
    while time.monotonic() - started < cfg["seconds"]:
        ready, _, _ = select.select([sys.stdin], [], [], 0.25)
        if ready and not sys.stdin.readline():
            stopped = "stopped by the caller"
            break
        seen = total(0)
        say(progress=seen)
        if seen >= cfg["cap"]:
            stopped = "event cap"
            break
    lib.bpf_link__destroy(link)  # detached before the maps are read: the counts stop here
    link = None

    syms = []
    with open("/proc/kallsyms") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[1] in "tTwW":
                syms.append((int(parts[0], 16), parts[2]))
    syms.sort()
    addrs = [a for a, _ in syms]

    def sym(addr):
        i = bisect.bisect_right(addrs, addr) - 1
        return f"{syms[i][1]}+{addr - syms[i][0]:#x}" if i >= 0 and addrs[i] else hex(addr)

    rows, stack_ids = [], set()
    key, nxt, value = ctypes.create_string_buffer(64), ctypes.create_string_buffer(64), ctypes.create_string_buffer(16)
    prev = None
    while len(rows) < cfg["max_rows"] and lib.bpf_map_get_next_key(fd["counts"], prev, nxt) == 0:
        ctypes.memmove(key, nxt, 64)
        prev = key
        if lib.bpf_map_lookup_elem(fd["counts"], key, value):
            continue
        (loc, reason, _, netns, ifindex, saddr, daddr, sport, dport, family,
         proto) = struct.unpack("<QIIII16s16sHHBB2x", key.raw)
        count, stack_id = struct.unpack("<Qq", value.raw)
        rows.append({"location": sym(loc) if loc else "", "reason": reason, "stack_id": stack_id,
                     "netns": netns, "ifindex": ifindex, "family": family, "protocol": proto,
                     "saddr": saddr.hex(), "daddr": daddr.hex(), "sport": sport, "dport": dport,
                     "count": count})
        stack_ids.add(stack_id)
    stacks = {}
    frames = (ctypes.c_uint64 * 32)()
    for sid in stack_ids:
        sk = ctypes.c_uint32(sid)
        if sid >= 0 and lib.bpf_map_lookup_elem(fd["stacks"], ctypes.byref(sk), frames) == 0:
            stacks[sid] = [sym(a) for a in frames if a]
    names = {}
    for r in rows:  # names in this process's namespace; the caller keeps those of its own
        try:
            names[r["ifindex"]] = socket.if_indextoname(r["ifindex"])
        except OSError:
            pass
    say(rows=rows, stacks=stacks, totals=[total(i) for i in range(3)], stopped=stopped,
        netns=os.stat("/proc/self/ns/net").st_ino, interfaces=names)
finally:
    if link:
        lib.bpf_link__destroy(link)
    lib.bpf_object__close(obj)
"""


@dataclass(frozen=True)
class Variant:
    """Where the program attaches on this node, and what it can see there."""

    attach: str  # "tp_btf" or "kprobe"
    has_reason: bool
    function: str = ""  # the kprobed function

    @property
    def defines(self) -> dict[str, str]:
        if self.attach == "kprobe":
            return {"ATTACH_KPROBE": "1", "KPROBE_FN": f'"{self.function}"',
                    "KPROBE_ARGS": str(KPROBE_FUNCTIONS[self.function])}  # fmt: skip
        return {"ATTACH_KPROBE": "0", "HAS_REASON": "1" if self.has_reason else "0"}

    @property
    def describe(self) -> str:
        where = f"a kprobe on {self.function}" if self.attach == "kprobe" else "tp_btf/kfree_skb"
        what = "reason, location" if self.has_reason else "location (no drop reasons on this kernel)"
        return f"BPF program on {where}, counting this flow's drops in the kernel by {what} and stack"


def kprobe_function(target: Target) -> str:
    """The function behind the drop tracepoint on this kernel (newest name first)."""
    program = " || ".join(f'$3 == "{name}"' for name in KPROBE_FUNCTIONS)
    found = set(target.run(["awk", f"{program} {{ print $3 }}", "/proc/kallsyms"], timeout=30).stdout.split())
    for name in KPROBE_FUNCTIONS:
        if name in found:
            return name
    raise NetlabError(f"{target.url}: none of {', '.join(KPROBE_FUNCTIONS)} is in /proc/kallsyms")


def address_bytes(address: str) -> bytes:
    return ipaddress.ip_address(address).packed.ljust(16, b"\0") if address else bytes(16)


def flow_filter(flow: Any, *, min_reason: int, cap: int, netns: int = 0) -> bytes:
    """``struct flow_filter`` of the program for ``flow`` (a :class:`drops.Flow`)."""
    family = {4: 2, 6: 10}.get(flow.version, 0)
    return struct.pack("<16s16sHHBBBBIII", address_bytes(flow.client), address_bytes(flow.server),
                       flow.client_port, flow.server_port, family, _IPPROTO[flow.protocol], bool(flow.client),
                       bool(flow.server), netns, min_reason, cap)  # fmt: skip


def try_variant(target: Target, variant: Variant, name: str) -> Check:
    """A capability answer: the counter loads and attaches on ``target`` (then goes)."""
    try:
        run(target, variant, bytes(44), 0.0, cap=1, step=f"checking {name}")
    except NetlabError as exc:
        return Check(name, False, exc.message)
    return Check(
        name, True, f"loaded and attached the drop counter ({variant.describe.split(',')[0]}), removed it"
    )


def _address(family: int, hexed: str) -> str:
    raw = bytes.fromhex(hexed)
    return str(ipaddress.IPv4Address(raw[:4]) if family == 2 else ipaddress.IPv6Address(raw))


@dataclass
class Counted:
    rows: list[dict[str, Any]]
    stacks: dict[int, list[str]]
    counted: int
    lost: int
    over_cap: int
    stopped: str
    during: Any = None


def run(
    target: Target,
    variant: Variant,
    flow_bytes: bytes,
    seconds: float,
    *,
    cap: int,
    during: Callable[[], Any] | None = None,
    grace: float = 0.0,
    step: str = "drop trace",
) -> Counted:
    """Load and attach the counter on ``target`` for ``seconds`` while ``during`` runs
    (waiting up to ``grace`` more for it), then read the counts; the probe is gone
    when this returns or raises."""
    host = target.host()
    obj = bpf_build.build("drop_counter.bpf.c", host, defines={**variant.defines, "MAX_SITES": str(MAX_SITES),
                                                                "MAX_STACKS": str(MAX_STACKS)})  # fmt: skip
    placed = bpf_build.place(obj, host)
    config = {"object": placed, "remove_object": placed != obj, "flow": flow_bytes.hex(),
              "attach": variant.describe, "seconds": seconds + grace, "cap": cap, "max_rows": MAX_SITES}  # fmt: skip
    # Run in the target's network namespace (BPF is not per namespace): the devices the
    # drops name are resolved there.
    node = NodeProcess(target, [bcc.node_python(host), "-c", _NODE_SCRIPT, json.dumps(config)],
                       timeout=LOAD_TIMEOUT + seconds + grace + 60, what="the drop counter")  # fmt: skip
    outcome: dict[str, Any] = {}
    try:
        node.message("ready", LOAD_TIMEOUT, "attach")
        started = time.monotonic()
        worker = None
        if during is not None:

            def background() -> None:
                try:
                    outcome["value"] = during()
                except Exception as exc:  # noqa: BLE001 - reported with the trace, not lost in a thread
                    outcome["error"] = exc

            worker = threading.Thread(target=background, daemon=True)
            worker.start()
        counted = 0
        while True:
            elapsed = time.monotonic() - started
            control.tick(control.Progress(step, elapsed, seconds, counted, cap))
            window_over = elapsed >= seconds and (worker is None or not worker.is_alive())
            if window_over or elapsed >= seconds + grace or counted >= cap or node.proc.poll() is not None:
                break
            try:
                line = node.lines.get(timeout=0.25)
            except queue.Empty:
                continue
            if line is None:
                break
            if line.startswith("{"):
                message = json.loads(line)
                if "progress" in message:
                    counted = int(message["progress"])
                elif "rows" in message:  # it stopped itself (its own deadline or the cap)
                    node.lines.put(line)
                    break
        node.close_input()
        result = node.message("rows", 60, "report its counts")
    finally:
        node.stop()
        if placed != obj:
            host.run(["rm", "-f", placed], check=False)
    if "error" in outcome:
        err = outcome["error"]
        raise err if isinstance(err, NetlabError) else NetlabError(f"the reproduction failed: {err}")
    names = {int(k): v for k, v in result["interfaces"].items()}
    rows = []
    for r in result["rows"]:
        rows.append({**r, "saddr": _address(r["family"], r["saddr"]), "daddr": _address(r["family"], r["daddr"]),
                     "interface": names.get(r["ifindex"], "") if r["netns"] == result["netns"] else ""})  # fmt: skip
    stacks = {int(k): v for k, v in result["stacks"].items()}
    counted_, lost, over_cap = (int(x) for x in result["totals"])
    return Counted(rows, stacks, counted_, lost, over_cap, result["stopped"], outcome.get("value"))
