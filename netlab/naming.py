"""How netlab names what it creates, so a cleanup can find it by name alone.

Every namespace, interface, BPF program, pin, cgroup, tracefs instance and firewall rule
netlab makes starts with :data:`PREFIX` (``nlab`` unless ``NETLAB_PREFIX`` is set, which
lets parallel test runs on one kernel stay out of each other's way). Short-lived probes
also carry the owning process id, so leftovers of a killed Jupyter kernel are
recognisable as orphans while a live session's probes are not touched.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from netlab.errors import NetlabError

PREFIX: str = os.environ.get("NETLAB_PREFIX", "nlab")
if not re.fullmatch(r"[a-z][a-z0-9]{1,5}", PREFIX):
    raise NetlabError(
        f"NETLAB_PREFIX={PREFIX!r} is not usable",
        "use 2-6 lowercase letters or digits, starting with a letter",
    )

# Kernel object names (BPF programs and maps) are truncated to 15 characters.
BPF_NAME_MAX = 15


def owned(name: str) -> bool:
    """True when ``name`` was made by netlab (with the current prefix)."""
    return name.startswith(PREFIX)


def probe_name(kind: str, pid: int | None = None) -> str:
    """Name of a short-lived probe object owned by this process: ``nlab_<kind>_<pid>``."""
    return f"{PREFIX}_{kind}_{os.getpid() if pid is None else pid}"


def probe_owner(name: str) -> int | None:
    """The pid encoded by :func:`probe_name`, or None for names not made that way."""
    match = re.fullmatch(rf"{re.escape(PREFIX)}_[a-z0-9]+_(\d+)", name)
    return int(match.group(1)) if match else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def runtime_base() -> Path:
    """Where runs keep private runtime files (``$NETLAB_RUNTIME``, else /run/netlab as
    root, else the temporary directory)."""
    default = "/run/netlab" if os.geteuid() == 0 else tempfile.gettempdir()
    return Path(os.environ.get("NETLAB_RUNTIME") or default)
