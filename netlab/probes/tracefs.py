"""Private tracefs instances: tracepoints with filters and stack triggers.

An instance (``instances/nlab_trace_<pid>``) has its own ring buffer and its own event
switches, so netlab never touches the top-level trace settings someone else may be
using, and removing the instance removes everything it enabled.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType

from netlab import mounts, naming
from netlab.capability import Check, Node, capability
from netlab.errors import NetlabError
from netlab.probes import control
from netlab.targets import Target


class Instance:
    """A tracefs instance that is removed on exit, whatever happened inside."""

    def __init__(self, target: Target, kind: str = "trace", *, buffer_kb: int = 4096):
        self.target = target.host()
        self.base = mounts.tracefs(self.target)
        self.name = naming.probe_name(kind)
        self.path = f"{self.base}/instances/{self.name}"
        self.buffer_kb = buffer_kb
        self._enabled: list[str] = []
        self._triggers: list[tuple[str, str]] = []

    def __enter__(self) -> Instance:
        remove_instance(self.target, self.path)  # a leftover of an earlier run of this pid
        self.target.run(["mkdir", self.path])
        try:
            self.write("buffer_size_kb", str(self.buffer_kb))
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def write(self, relpath: str, data: str, *, append: bool = False) -> None:
        self.target.write_text(f"{self.path}/{relpath}", data, append=append)

    def read(self, relpath: str) -> str:
        return self.target.read_text(f"{self.path}/{relpath}")

    def enable(self, system: str, event: str, *, filter: str | None = None, stacktrace: bool = False) -> None:
        """Enable ``system:event`` here, with an optional filter and a stack trigger."""
        rel = f"events/{system}/{event}"
        if not self.target.exists(f"{self.path}/{rel}"):
            raise NetlabError(f"{self.target.url}: tracepoint {system}:{event} does not exist on this kernel")
        if filter:
            self.write(f"{rel}/filter", filter)
        if stacktrace:
            trigger = f"stacktrace if {filter}" if filter else "stacktrace"
            self.write(f"{rel}/trigger", trigger)
            self._triggers.append((rel, trigger))
        self.write(f"{rel}/enable", "1")
        self._enabled.append(rel)

    def trace(self) -> str:
        return self.read("trace")

    def entries(self) -> int:
        """Events in the ring buffer now (stack traces count as events), from the cheap
        per-CPU ``stats`` files rather than by reading the buffer."""
        total = 0
        for cpu in self.target.run(["ls", f"{self.path}/per_cpu"]).stdout.split():
            for line in self.read(f"per_cpu/{cpu}/stats").splitlines():
                if line.startswith("entries:"):
                    total += int(line.split()[1])
        return total

    def stop(self) -> None:
        """Stop recording (the buffer stays readable)."""
        self.write("tracing_on", "0")

    def wait(
        self,
        seconds: float,
        *,
        step: str = "trace",
        count_events: Callable[[], int] | None = None,
        max_events: int | None = None,
        until: Callable[[], bool] | None = None,
    ) -> None:
        """Wait out the trace window, reporting progress; stop early at ``max_events``.

        Ctrl-C or a cancel (:mod:`netlab.probes.control`) raises here, and the caller's
        ``with`` block removes the instance.
        """
        start = time.monotonic()
        while True:
            elapsed = time.monotonic() - start
            events = count_events() if count_events else None
            control.tick(control.Progress(step, elapsed, seconds, events, max_events))
            if elapsed >= seconds or (max_events and events is not None and events >= max_events):
                return
            if until is not None and until():
                return
            time.sleep(min(0.25, max(0.0, seconds - elapsed)))

    def close(self) -> None:
        if not self.target.exists(self.path):
            return
        # Stop tracing before removing triggers; then the instance can be removed.
        for rel in self._enabled:
            self.target.write_text(f"{self.path}/{rel}/enable", "0")
        for rel, trigger in self._triggers:
            self.target.write_text(f"{self.path}/{rel}/trigger", f"!{trigger.split(' if ')[0]}", append=True)
        remove_instance(self.target, self.path)


def remove_instance(target: Target, path: str) -> None:
    """Disable everything in an instance and remove it (used by the orphan sweep too)."""
    if not target.exists(path):
        return
    target.write_text(f"{path}/tracing_on", "0")
    target.write_text(f"{path}/events/enable", "0")
    # Triggers survive disabling; rmdir fails with EBUSY while any is set.
    result = target.run(
        ["sh", "-c", 'grep -l -v "^#" "$1"/events/*/*/trigger 2>/dev/null', "sh", path], check=False
    )
    for trigger_file in result.stdout.split():
        for line in target.read_text(trigger_file).splitlines():
            if line and not line.startswith("#"):
                command = line.split(":")[0].split(" ")[0]
                target.write_text(trigger_file, f"!{command}", append=True)
    target.run(["rmdir", path])


def orphan_instances(target: Target) -> list[str]:
    """Instances named by netlab whose owning process is gone."""
    base = mounts.tracefs(target, mount=False) if _has_tracefs(target) else None
    if base is None or not target.exists(f"{base}/instances"):
        return []
    listing = target.run(["ls", "-1", f"{base}/instances"], check=False).stdout.split()
    orphans = []
    for name in listing:
        owner = naming.probe_owner(name)
        if naming.owned(name) and (owner is None or not naming.pid_alive(owner)):
            orphans.append(f"{base}/instances/{name}")
    return orphans


def _has_tracefs(target: Target) -> bool:
    try:
        mounts.tracefs(target, mount=False)
        return True
    except NetlabError:
        return False


# --- capabilities --------------------------------------------------------------------
@capability("tracepoints", requires=[mounts.TRACEFS])
def TRACEPOINTS(target: Target, node: Node) -> Check:
    """Enable skb:kfree_skb in a private instance, read the switch back, remove it."""
    try:
        with Instance(target.host(), "doctor") as inst:
            inst.enable("skb", "kfree_skb")
            state = inst.read("events/skb/kfree_skb/enable").strip()
    except NetlabError as exc:
        return Check("tracepoints", False, exc.message)
    if state != "1":
        return Check("tracepoints", False, "skb:kfree_skb did not stay enabled")
    return Check("tracepoints", True, "enabled skb:kfree_skb in a private tracefs instance, removed it")
