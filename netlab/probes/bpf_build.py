"""Building CO-RE BPF objects on the node, against the running kernel's BTF.

Sources live in ``netlab/probes/bpf/*.bpf.c``. Objects are compiled with clang against a
``vmlinux.h`` generated from ``/sys/kernel/btf/vmlinux`` and cached per kernel release
and source hash (``$NETLAB_CACHE``, default ``/var/cache/netlab``), so the first use
costs a few seconds and later ones nothing. CO-RE relocations make field offsets right
for this kernel, which BCC with mismatched headers cannot promise.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from importlib import resources

from netlab import naming
from netlab.capability import Check, Node, capability
from netlab.errors import CapabilityMissing, NetlabError
from netlab.targets import LocalTarget, Target

BTF = "/sys/kernel/btf/vmlinux"


def cache_dir(target: Target) -> str:
    """The directory, on the machine running netlab, that holds what is built for the
    node's kernel release."""
    release = target.run(["uname", "-r"]).stdout.strip()
    return os.path.join(os.environ.get("NETLAB_CACHE", "/var/cache/netlab"), release)


def btf_file(target: Target) -> str:
    """A local path of the node's kernel BTF: the file itself here, or a copy fetched
    once from a remote node (base64 over the target: the transport carries text)."""
    host = target.host()
    if not host.exists(BTF):
        raise CapabilityMissing(f"{host.url}: no {BTF}: CO-RE programs cannot be built")
    if host.is_local:
        return BTF
    copy = os.path.join(cache_dir(host), "vmlinux.btf")
    if not os.path.exists(copy):
        os.makedirs(os.path.dirname(copy), exist_ok=True)
        data = base64.b64decode(host.run(["base64", "-w0", BTF], timeout=120).stdout)
        with open(f"{copy}.{os.getpid()}.tmp", "wb") as out:
            out.write(data)
        os.replace(f"{copy}.{os.getpid()}.tmp", copy)
    return copy


def vmlinux_h(target: Target) -> str:
    """Local path of the cached ``vmlinux.h`` for the node's kernel, generated once from
    its BTF."""
    directory = cache_dir(target)
    header = os.path.join(directory, "vmlinux.h")
    if os.path.exists(header):
        return header
    btf = btf_file(target)
    os.makedirs(directory, exist_ok=True)
    dump = LocalTarget().run(["bpftool", "btf", "dump", "file", btf, "format", "c"], timeout=120)
    tmp = f"{header}.{os.getpid()}.tmp"
    with open(tmp, "w") as out:
        out.write(dump.stdout)
    os.replace(tmp, header)
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
    # Built here, for the node's kernel (its BTF), and loaded there: what CO-RE is for.
    target = (target or LocalTarget()).host()
    local = LocalTarget()
    text = source_text(name, package)
    named = {"PROBE_NAME": f"{naming.PREFIX}_{name.removesuffix('.bpf.c')}", **(defines or {})}
    flags = [f"-D{k}={v}" for k, v in sorted(named.items())]
    digest = hashlib.sha256("\n".join([text, *flags]).encode()).hexdigest()[:16]
    directory = cache_dir(target)
    obj = os.path.join(directory, f"{name.removesuffix('.bpf.c')}-{digest}.o")
    if os.path.exists(obj):
        return obj
    header = vmlinux_h(target)
    # Private names until done: several processes may build the same object at once
    # (the demo runs its scenarios side by side on a machine with an empty cache).
    token = f"{os.getpid()}-{threading.get_ident()}"
    src = os.path.join(directory, f"{name.removesuffix('.bpf.c')}-{digest}.{token}.bpf.c")
    local.write_text(src, text)
    if local.which("clang") is None:
        raise CapabilityMissing("clang is missing on this machine", "apt-get install clang libbpf-dev")
    result = local.run(
        [
            "clang", "-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86",
            "-I", os.path.dirname(header), "-I", "/usr/include/x86_64-linux-gnu",
            *flags, "-c", src, "-o", f"{obj}.{token}.tmp",
        ],
        timeout=180,
        check=False,
    )  # fmt: skip
    if not result.ok:
        os.unlink(src)
        # clang's last line only counts the errors; the first one says what is wrong.
        first = [ln for ln in result.stderr.splitlines() if " error: " in ln]
        raise NetlabError(f"compiling {name} failed: {first[0] if first else result.brief_error()}")
    os.replace(f"{obj}.{token}.tmp", obj)
    os.replace(src, src.replace(f".{token}.bpf.c", ".bpf.c"))  # kept beside the object it built
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


@capability("clang")
def CLANG(target: Target, node: Node) -> Check:
    """clang on the machine running netlab, which builds the node's CO-RE objects."""
    result = LocalTarget().run(["clang", "--version"], check=False)
    if not result.ok:
        return Check("clang", False, "clang is missing on this machine: CO-RE objects cannot be built")
    return Check("clang", True, f"{result.stdout.splitlines()[0].strip()} (on this machine)")


def place(obj: str, target: Target) -> str:
    """The object's path on the node: itself here; on a remote node a copy under /tmp
    named ``<prefix>_obj_<pid>_...`` (the caller removes it; a sweep removes those of
    dead runs)."""
    host = target.host()
    if host.is_local:
        return obj
    remote = f"/tmp/{naming.probe_name('obj')}_{os.path.basename(obj)}"
    with open(obj, "rb") as handle:
        host.run(["dd", f"of={remote}", "status=none"], input=handle.read(), timeout=60)
    return remote
