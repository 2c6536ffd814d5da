"""BCC on the node: can Python import it, do kernel headers match, does a program
compile and load, and which attach types the kernel takes.

BCC compiles on the node at run time against ``/lib/modules/$(uname -r)/build``. With
headers of another kernel, programs that read kernel-internal structs get wrong
offsets: only UAPI contexts are safe then, which the ``kernel_headers`` answer says.
Each probe runs a tiny program with the node's ``python3`` and unloads it.
"""

from __future__ import annotations

import re
import sys

from netlab import naming
from netlab.capability import Check, Node, capability
from netlab.targets import Target

OS_PYTHON = "/usr/bin/python3"

_COMPILE = """
from bcc import BPF
import bcc
b = BPF(text="int {name}(void *ctx) {{ return 0; }}")
b.load_func("{name}", BPF.SOCKET_FILTER)
b.cleanup()
print(getattr(bcc, "__version__", "?"))
"""

_FENTRY = """
from bcc import BPF
b = BPF(text="KFUNC_PROBE(tcp_recvmsg) { return 0; }")
b.cleanup()
"""

# Programs named with netlab's prefix ({name}), so a leaked one is found by name.
# Attached the way a BCC trace attaches it (perf_event_open; BCC falls back to
# kprobe_events itself on kernels without the kprobe PMU), then detached.
_KPROBE = """
from bcc import BPF
b = BPF(text="int {name}(void *ctx) {{ return 0; }}")
b.attach_kprobe(event="tcp_recvmsg", fn_name="{name}")
print(b.num_open_kprobes())
b.cleanup()
"""

_RAW_TP = """
from bcc import BPF
b = BPF(text="RAW_TRACEPOINT_PROBE(kfree_skb) { return 0; }")
b.cleanup()
"""


def node_python(target: Target) -> str:
    """The Python that has BCC on ``target``: this one here; on a remote node the OS
    interpreter, which the OS's BCC package (python3-bpfcc) installs into, whatever a
    login's PATH puts first (pyenv, say)."""
    return sys.executable if target.is_local else OS_PYTHON if target.exists(OS_PYTHON) else "python3"


def run_python(target: Target, code: str, timeout: float = 60) -> tuple[bool, str]:
    """Run ``code`` with the node's Python; (succeeded, stdout or the last error line)."""
    result = target.run([node_python(target), "-c", code], timeout=timeout, check=False)
    if result.ok:
        return True, result.stdout.strip()
    lines = [ln for ln in result.stderr.splitlines() if ln.strip() and not ln.startswith((" ", "Traceback"))]
    return False, (lines[-1] if lines else result.brief_error())[:200]


@capability("bcc_import")
def BCC_IMPORT(target: Target, node: Node) -> Check:
    ok, out = run_python(target, "import bcc; print(getattr(bcc, '__version__', '?'))", 30)
    return Check("bcc_import", ok, f"bcc {out} (OS package python3-bpfcc)" if ok else out)


def headers_match(release: str, version: str, uts_release: str, tree_version: str) -> tuple[bool, str]:
    """Do a header tree and the running kernel match?

    ``uts_release`` is the tree's ``UTS_RELEASE`` (include/generated/utsrelease.h): the
    release string the kernel built from it reports, which must equal ``uname -r``.
    Distributions name the ABI there (Debian: ``6.1.0-56-amd64``) and carry the exact
    version in ``uname -v`` (``... Debian 6.1.192-2 ...``); where the tree states its
    version (``include/config/kernel.release``: ``6.1.192``) it must appear there too,
    so headers of another build of the same ABI are not taken for matching ones.
    """
    if not uts_release:
        return False, "the header tree has no include/generated/utsrelease.h"
    if uts_release != release:
        return False, f"headers are for {uts_release}, running kernel is {release}: mismatched"
    if tree_version and tree_version != release:
        # The tree states a version apart from its ABI name: the kernel must be that one.
        if tree_version not in re.findall(r"\d+\.\d+\.\d+", version):
            return False, f"headers are version {tree_version}, `uname -v` says {version!r}: mismatched"
        return True, f"UTS_RELEASE {uts_release} equals uname -r; version {tree_version} is in uname -v"
    return True, f"UTS_RELEASE {uts_release} equals uname -r"


@capability("kernel_headers")
def KERNEL_HEADERS(target: Target, node: Node) -> Check:
    release = node.kernel or target.run(["uname", "-r"]).stdout.strip()
    version = target.run(["uname", "-v"], check=False).stdout.strip()
    build = f"/lib/modules/{release}/build"
    result = target.run(["readlink", "-f", build], check=False)
    if not result.ok or not target.exists(build):
        return Check("kernel_headers", False, f"no {build}: BCC cannot compile")
    real = result.stdout.strip()
    uts = re.search(
        r'UTS_RELEASE\s+"([^"]+)"', target.try_read_text(f"{real}/include/generated/utsrelease.h") or ""
    )
    tree_version = (target.try_read_text(f"{real}/include/config/kernel.release") or "").strip()
    ok, why = headers_match(release, version, uts.group(1) if uts else "", tree_version)
    if ok:
        return Check("kernel_headers", True, f"{real}: {why}")
    return Check("kernel_headers", False, f"{real}: {why}; BCC programs must use only UAPI contexts "
                 "(no kernel-internal structs)")  # fmt: skip


@capability("bcc_compile", requires=[BCC_IMPORT])
def BCC_COMPILE(target: Target, node: Node) -> Check:
    ok, out = run_python(target, _COMPILE.format(name=naming.probe_name("bcc")))
    if not ok:
        return Check("bcc_compile", False, f"compiling a trivial program failed: {out}")
    note = "" if node.ok(KERNEL_HEADERS) else " with mismatched headers (UAPI-only programs)"
    return Check("bcc_compile", True, f"compiled and loaded a trivial program{note}")


@capability("raw_tracepoint", requires=[BCC_COMPILE])
def RAW_TRACEPOINT(target: Target, node: Node) -> Check:
    ok, out = run_python(target, _RAW_TP)
    return Check("raw_tracepoint", ok, "attached a raw tracepoint on kfree_skb via BCC" if ok else out)


@capability("fentry", requires=[BCC_COMPILE])
def FENTRY(target: Target, node: Node) -> Check:
    ok, out = run_python(target, _FENTRY)
    if not ok and "super-user" in out:
        # BCC words every EPERM from the kernel as a privilege problem.
        out = "the kernel refused to load it (EPERM) even with CAP_BPF and CAP_SYS_ADMIN"
    return Check(
        "fentry", ok, "loaded an fentry program on tcp_recvmsg" if ok else f"fentry load failed: {out}"
    )


@capability("kprobes", requires=[BCC_COMPILE])
def KPROBES(target: Target, node: Node) -> Check:
    ok, out = run_python(target, _KPROBE.format(name=naming.probe_name("bcc")))
    if ok and out.strip() == "1":
        return Check(
            "kprobes", True, "attached a kprobe on tcp_recvmsg via BCC (perf_event_open) and removed it"
        )
    return Check("kprobes", False, f"attaching a kprobe on tcp_recvmsg failed: {out}")
