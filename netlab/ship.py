"""netlab's own code, shipped to a node as one zipapp and run there with its ``python3``.

Investigations never need netlab on a node: their steps run plain commands there. The
lab is different: building an incident means starting servers inside namespaces that
outlive the command, so ``netlab lab ... --target ssh://NODE`` copies this package (its
Python sources and BPF C sources; no notebooks, no third-party packages) to the node
and runs ``netlab lab ...`` there. What the shipped code imports must therefore come from
the standard library (a test runs it with the OS Python, which has no pandas).

The copy lives in the node's lab state directory while a lab is up there and is removed
by ``netlab lab down --all --target``; its name starts with netlab's prefix like
everything else, so :func:`netlab.cleanup.leftovers` finds it.
"""

from __future__ import annotations

import hashlib
import io
import shlex
import zipfile
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from netlab import naming
from netlab.errors import NetlabError
from netlab.targets import CommandResult, Target

# Everything but the notebooks and templates (the node renders nothing) and caches.
_SKIP_DIRS = {"kit", "__pycache__"}
_SUFFIXES = {".py", ".c", ".h", ".sh", ".json"}
OS_PYTHON = "/usr/bin/python3"
# Where the node keeps it: its lab state directory (netlab.lab.state_dir's default).
NODE_DIR = f"/run/netlab/{naming.PREFIX}"
APP = f"{NODE_DIR}/{naming.PREFIX}_netlab.pyz"
_MAIN = b"""import sys
try:
    from netlab.cli import main
    sys.exit(main())
except ModuleNotFoundError as exc:  # verify's tables need pandas, which a node may lack
    sys.exit(f"netlab: this needs the Python module {exc.name!r}, which the node's python3 lacks")
"""


@cache
def build() -> bytes:
    """The zipapp's bytes: deterministic (fixed timestamps), so its digest names a version."""
    root = Path(__file__).resolve().parent
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root)
            if path.is_file() and path.suffix in _SUFFIXES and not _SKIP_DIRS & set(rel.parts):
                _add(archive, f"netlab/{rel.as_posix()}", path.read_bytes())
        _add(archive, "__main__.py", _MAIN)
    return buffer.getvalue()


def _add(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(info, data)


def digest() -> str:
    return hashlib.sha256(build()).hexdigest()


def install(target: Target) -> str:
    """Put the current zipapp on the node (unless the same one is there); its path."""
    host = target.host()
    seen = host.run(["sha256sum", APP], check=False).stdout.split()
    if not seen or seen[0] != digest():
        host.run(["mkdir", "-p", NODE_DIR])
        host.run(["dd", f"of={APP}.tmp", "status=none"], input=build(), timeout=120)
        host.run(["mv", "-f", f"{APP}.tmp", APP])
    return APP


def python(target: Target) -> str:
    """The node's own Python: the OS one where it exists (root's PATH may put a
    version manager's shim first, with another set of modules)."""
    return OS_PYTHON if target.host().exists(OS_PYTHON) else "python3"


def run(target: Target, argv: Sequence[str], *, timeout: float, check: bool = True) -> CommandResult:
    """``netlab ARGV`` on the node, from the shipped zipapp, with this run's prefix."""
    host = target.host()
    app = install(host)
    command = ["env", f"NETLAB_PREFIX={naming.PREFIX}", python(host), app, *argv]
    result = host.run(command, timeout=timeout, check=False)
    if check and not result.ok:
        # The node's netlab printed `netlab: ...` (a NetlabError there): say it as ours.
        message = result.brief_error().removeprefix("netlab: ")
        raise NetlabError(f"{host.url}: {message}", f"ran `{shlex.join(['netlab', *argv])}` there")
    return result


def remove(target: Target) -> list[str]:
    host = target.host()
    if host.exists(APP) and host.run(["rm", "-f", "--", APP], check=False).ok:
        return [APP]
    return []
