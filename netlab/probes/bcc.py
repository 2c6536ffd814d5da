"""BCC on the node: can Python import it, do kernel headers match, does a program
compile and load, and which attach types the kernel takes.

BCC compiles on the node at run time against ``/lib/modules/$(uname -r)/build``. With
headers of another kernel, programs that read kernel-internal structs get wrong
offsets: only UAPI contexts are safe then, which the ``kernel_headers`` answer says.
Each probe runs a tiny program with the node's ``python3`` and unloads it.
"""

from __future__ import annotations

import sys

from netlab.capability import Check, Node, capability
from netlab.targets import Target

_COMPILE = """
from bcc import BPF
import bcc
b = BPF(text="int netlab_probe(void *ctx) { return 0; }")
b.load_func("netlab_probe", BPF.SOCKET_FILTER)
b.cleanup()
print(getattr(bcc, "__version__", "?"))
"""

_FENTRY = """
from bcc import BPF
b = BPF(text="KFUNC_PROBE(tcp_recvmsg) { return 0; }")
b.cleanup()
"""

_RAW_TP = """
from bcc import BPF
b = BPF(text="RAW_TRACEPOINT_PROBE(kfree_skb) { return 0; }")
b.cleanup()
"""


def run_python(target: Target, code: str, timeout: float = 60) -> tuple[bool, str]:
    """Run ``code`` with the node's Python; (succeeded, stdout or the last error line)."""
    python = sys.executable if target.is_local else "python3"
    result = target.run([python, "-c", code], timeout=timeout, check=False)
    if result.ok:
        return True, result.stdout.strip()
    lines = [ln for ln in result.stderr.splitlines() if ln.strip() and not ln.startswith((" ", "Traceback"))]
    return False, (lines[-1] if lines else result.brief_error())[:200]


@capability("bcc_import", runs_python=True)
def BCC_IMPORT(target: Target, node: Node) -> Check:
    ok, out = run_python(target, "import bcc; print(getattr(bcc, '__version__', '?'))", 30)
    return Check("bcc_import", ok, f"bcc {out} (OS package python3-bpfcc)" if ok else out)


@capability("kernel_headers")
def KERNEL_HEADERS(target: Target, node: Node) -> Check:
    release = node.kernel or target.run(["uname", "-r"]).stdout.strip()
    build = f"/lib/modules/{release}/build"
    result = target.run(["readlink", "-f", build], check=False)
    if not result.ok or not target.exists(build):
        return Check("kernel_headers", False, f"no {build}: BCC cannot compile")
    real = result.stdout.strip()
    release_file = target.try_read_text(f"{real}/include/config/kernel.release")
    headers = (release_file or "").strip() or real.rsplit("linux-headers-", 1)[-1]
    if headers == release:
        return Check("kernel_headers", True, f"{real} matches the running kernel")
    return Check(
        "kernel_headers",
        False,
        f"headers are {headers}, running kernel is {release}: mismatched; BCC programs "
        "must use only UAPI contexts (no kernel-internal structs)",
    )


@capability("bcc_compile", requires=[BCC_IMPORT], runs_python=True)
def BCC_COMPILE(target: Target, node: Node) -> Check:
    ok, out = run_python(target, _COMPILE)
    if not ok:
        return Check("bcc_compile", False, f"compiling a trivial program failed: {out}")
    note = "" if node.ok(KERNEL_HEADERS) else " with mismatched headers (UAPI-only programs)"
    return Check("bcc_compile", True, f"compiled and loaded a trivial program{note}")


@capability("raw_tracepoint", requires=[BCC_COMPILE], runs_python=True)
def RAW_TRACEPOINT(target: Target, node: Node) -> Check:
    ok, out = run_python(target, _RAW_TP)
    return Check("raw_tracepoint", ok, "attached a raw tracepoint on kfree_skb via BCC" if ok else out)


@capability("fentry", requires=[BCC_COMPILE], runs_python=True)
def FENTRY(target: Target, node: Node) -> Check:
    ok, out = run_python(target, _FENTRY)
    if not ok and "super-user" in out:
        # BCC words every EPERM from the kernel as a privilege problem.
        out = "the kernel refused to load it (EPERM) even with CAP_BPF and CAP_SYS_ADMIN"
    return Check(
        "fentry", ok, "loaded an fentry program on tcp_recvmsg" if ok else f"fentry load failed: {out}"
    )
