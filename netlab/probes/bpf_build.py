"""Building CO-RE BPF objects on the node, against the running kernel's BTF.

Sources live in ``netlab/probes/bpf/*.bpf.c``. Objects are compiled with clang against a
``vmlinux.h`` generated from ``/sys/kernel/btf/vmlinux`` and cached per kernel release
and source hash (``$NETLAB_CACHE``, default ``/var/cache/netlab``), so the first use
costs a few seconds and later ones nothing. CO-RE relocations make field offsets right
for this kernel, which BCC with mismatched headers cannot promise.
"""

from __future__ import annotations

import hashlib
import os
from importlib import resources

from netlab import naming
from netlab.capability import Check, Node, capability, command
from netlab.errors import CapabilityMissing, NetlabError
from netlab.targets import LocalTarget, Target

BTF = "/sys/kernel/btf/vmlinux"


def cache_dir(target: Target) -> str:
    release = target.run(["uname", "-r"]).stdout.strip()
    return os.path.join(os.environ.get("NETLAB_CACHE", "/var/cache/netlab"), release)


def vmlinux_h(target: Target) -> str:
    """Path of the cached ``vmlinux.h`` for the running kernel, generating it once."""
    directory = cache_dir(target)
    header = os.path.join(directory, "vmlinux.h")
    if target.exists(header):
        return header
    if not target.exists(BTF):
        raise CapabilityMissing(f"{target.url}: no {BTF}: CO-RE programs cannot be built")
    target.run(["mkdir", "-p", directory])
    dump = target.run(["bpftool", "btf", "dump", "file", BTF, "format", "c"], timeout=120)
    tmp = f"{header}.{os.getpid()}.tmp"
    target.write_text(tmp, dump.stdout)
    target.run(["mv", "-f", tmp, header])
    return header


def source_text(name: str, package: str = "netlab.probes") -> str:
    try:
        return resources.files(package).joinpath("bpf", name).read_text()
    except FileNotFoundError:
        raise NetlabError(f"no BPF source {name!r} in {package.replace('.', '/')}/bpf") from None


def build(
    name: str,
    target: Target | None = None,
    *,
    package: str = "netlab.probes",
    defines: dict[str, str] | None = None,
) -> str:
    """Compile ``<package>/bpf/NAME`` (CO-RE) and return the object's path.

    ``defines`` become ``-D`` options and are part of the cache key. The program is
    named ``PROBE_NAME``, defined here as ``<prefix>_<source name>`` so that a leaked
    one is found by name like everything else netlab makes (the kernel keeps 15
    characters of it).
    """
    target = (target or LocalTarget()).host()
    if not target.is_local:
        raise NetlabError("CO-RE objects are built on the node: run this step through `netlab` there")
    text = source_text(name, package)
    named = {"PROBE_NAME": f"{naming.PREFIX}_{name.removesuffix('.bpf.c')}", **(defines or {})}
    flags = [f"-D{k}={v}" for k, v in sorted(named.items())]
    digest = hashlib.sha256("\n".join([text, *flags]).encode()).hexdigest()[:16]
    directory = cache_dir(target)
    obj = os.path.join(directory, f"{name.removesuffix('.bpf.c')}-{digest}.o")
    if target.exists(obj):
        return obj
    header = vmlinux_h(target)
    src = os.path.join(directory, f"{name.removesuffix('.bpf.c')}-{digest}.bpf.c")
    target.write_text(src, text)
    if target.which("clang") is None:
        raise CapabilityMissing(f"{target.url}: clang is missing", "apt-get install clang libbpf-dev")
    result = target.run(
        [
            "clang", "-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86",
            "-I", os.path.dirname(header), "-I", "/usr/include/x86_64-linux-gnu",
            *flags, "-c", src, "-o", f"{obj}.tmp",
        ],
        timeout=180,
        check=False,
    )  # fmt: skip
    if not result.ok:
        raise NetlabError(f"compiling {name} failed: {result.brief_error()}")
    target.run(["mv", "-f", f"{obj}.tmp", obj])
    return obj


# --- capabilities --------------------------------------------------------------------
@capability("btf")
def BTF_FILE(target: Target, node: Node) -> Check:
    result = target.run(["od", "-An", "-tx1", "-N2", BTF], check=False)
    magic = result.stdout.split()
    # BTF magic 0xeB9F, in the node's byte order.
    if result.ok and magic in (["9f", "eb"], ["eb", "9f"]):
        return Check("btf", True, f"{BTF} readable (BTF magic found)")
    return Check("btf", False, f"{BTF}: {result.brief_error() if not result.ok else 'no BTF magic'}")


CLANG = command("clang", ["clang", "--version"], "clang is missing: CO-RE objects cannot be built")
