"""The guest node: a second kernel (Debian's 6.1) in a VM that netlab starts and stops.

``netlab lab guest up | status | down``, or from Python::

    from netlab.lab import guest
    node = guest.up()  # boots, or reuses a running guest that answers
    os.environ["NETLAB_SSH_CONFIG"] = node.ssh_config
    open_target(node.url).run(["uname", "-r"])

netlab reaches the guest the way it reaches a user's node: OpenSSH to
``ssh://root@127.0.0.1:PORT`` with host-key checking on. ``up`` generates a host key for
the guest's sshd and a client key, and writes an ssh_config whose known_hosts holds
exactly that host key. ``SshTarget`` reads the ssh_config from ``NETLAB_SSH_CONFIG``.

virtme-ng boots the kernel with this machine's root filesystem shared read-only (the
guest gets its own writable /etc, /var, /tmp and /run), so the guest has the same tools
and no image has to be built. QEMU emulates the CPU (TCG) because on this machine a KVM
guest never gets past the firmware.

Everything is named ``<prefix>_guest``: the state directory under
:func:`netlab.naming.runtime_base` (keys, ssh_config, console log, pid, QEMU's monitor
socket, the guest kernel's symbols) and the QEMU process (its ``comm``). So ``down``, and
with it ``netlab lab down --all`` and ``netlab cleanup --all``, find a guest by name even
when its state is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from netlab import naming, procfs
from netlab.errors import NetlabError
from netlab.lab import guest_cpus
from netlab.lab.ready import wait_for

NAME = f"{naming.PREFIX}_guest"
# In QEMU's command line (and so in virtme-ng's): how a process is recognised as this
# guest's, which protects against a recycled pid.
MARK = f"process={NAME}"
KERNEL_SERIES = "6.1."
MEMORY = "2G"
CPUS = 2
# QEMU's translation-block cache defaults to 1 GiB and stays resident as it fills (the
# guest reached 1.4 GiB RSS within minutes). 256 MiB kept it near 0.6 GiB through a BCC
# compile, which took 20 s instead of 16 s the first time (measured 2026-11-24).
TB_CACHE_MIB = 256
BOOT_TIMEOUT = 180.0
# Where the guest sees the node directory (host key, authorized key, sshd_config, init).
# Not named with the prefix: it is the guest's own plumbing, not something a run leaves.
GUEST_NODE_DIR = "/run/guest-node"
USER = "root"
# In the state directory: QEMU's human monitor, and the guest kernel's function addresses.
MONITOR, SYMBOLS = "monitor.sock", "kallsyms"
# virtme-ng builds a shell command from its arguments without quoting them.
_SAFE_PATH = re.compile(r"[A-Za-z0-9_+/.-]+")


@dataclass(frozen=True)
class Guest:
    """A running guest: its target URL and the ssh_config that reaches it."""

    url: str
    ssh_config: str
    kernel: str
    port: int
    pid: int  # virtme-ng's launcher, leader of the session QEMU runs in
    boot_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def state_dir() -> Path:
    return naming.runtime_base() / NAME


def kernel_release() -> str:
    """The newest installed 6.1 kernel whose headers are installed too: BCC programs
    compile in the guest against ``/lib/modules/RELEASE/build``."""
    found = [
        image.name.removeprefix("vmlinuz-")
        for image in Path("/boot").glob(f"vmlinuz-{KERNEL_SERIES}*")
        if Path("/lib/modules", image.name.removeprefix("vmlinuz-"), "build").exists()
    ]
    if not found:
        raise NetlabError(
            f"guest: no {KERNEL_SERIES}x kernel image with its headers in /boot", "run `make setup`"
        )
    return max(found, key=lambda release: [int(n) for n in re.findall(r"\d+", release)])


def _vng() -> str | None:
    beside = Path(sys.executable).parent / "vng"
    return str(beside) if beside.exists() else shutil.which("vng")


def missing() -> str:
    """What this machine lacks to boot the guest, in words ("" when nothing)."""
    if os.geteuid() != 0:
        return "needs root (the kernel images in /boot are readable by root only)"
    tools = {
        "qemu-system-x86_64": "qemu-system-x86",
        "busybox": "busybox-static",
        "ssh": "openssh-client",
        "ssh-keygen": "openssh-client",
        "/usr/sbin/sshd": "openssh-server",
    }
    for tool, package in tools.items():
        if not shutil.which(tool):
            return f"{tool} is not installed (Debian package {package})"
    if not _vng():
        return "virtme-ng (vng) is not installed (pip: the dev extras)"
    try:
        kernel_release()
    except NetlabError as exc:
        return exc.message
    return ""


def up(*, timeout: float = BOOT_TIMEOUT, patience: float = 60) -> Guest:
    """Boot the guest in the background and wait until ``ssh ... uname -r`` answers with
    its 6.1 kernel; reuse a running guest that answers within ``patience`` seconds. It
    outlives this process."""
    current = _load()
    if current and _ours(current.pid):
        problem = _answering(current, patience=patience)
        if not problem:
            return current
        # Replacing it ends whatever ran there (a lab, a trace): say so, with why.
        # Its console is removed with it: this is the last chance to say what it showed.
        print(f"netlab: guest {NAME} at {current.url} stopped answering ({problem}); booting a new one;"
              " its console ended:", *console_tail(20), "where its CPUs were:", *where_stuck(),
              sep="\n  ", file=sys.stderr)  # fmt: skip
    if current or _qemu_pids() or state_dir().exists():
        down()  # a guest that does not answer, or leftovers of one
    reason = missing()
    if reason:
        raise NetlabError(f"guest: cannot boot: {reason}", "run `make setup` as root")
    directory = state_dir()
    if not _SAFE_PATH.fullmatch(str(directory)):
        raise NetlabError(f"guest: state directory {directory} has characters virtme-ng cannot pass",
                          "set NETLAB_RUNTIME to a plain path")  # fmt: skip
    kernel = kernel_release()
    port = _free_port()
    _write_node(directory, port)
    started = time.monotonic()
    launcher = _launch(directory, kernel, port)
    guest = Guest(url=f"ssh://{USER}@127.0.0.1:{port}", ssh_config=str(directory / "ssh_config"),
                  kernel=kernel, port=port, pid=launcher.pid, boot_seconds=0.0)  # fmt: skip
    _save(guest)  # before waiting: a `down` from elsewhere must find it

    def booting() -> str:
        if launcher.poll() is not None:
            raise NetlabError(f"guest {NAME}: virtme-ng exited while booting (status {launcher.returncode})")
        return _problem(guest)

    try:
        wait_for(f"guest {NAME}: `ssh {guest.url} uname -r` answering {kernel}", booting,
                 timeout=timeout, interval=0.5)  # fmt: skip
    except BaseException as exc:
        # A half-booted guest is worse than none. Signal the launcher's session directly:
        # until vng has exec'd, /proc does not show it as the guest's.
        console = " | ".join(console_tail()) or "(empty)"
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                launcher.wait(timeout=15)
        down()
        if isinstance(exc, NetlabError):
            raise NetlabError(f"{exc.message}; console: {console}") from None
        raise
    guest = replace(guest, boot_seconds=round(time.monotonic() - started, 1))
    _save_symbols(guest)
    _save(guest)
    return guest


def down() -> list[str]:
    """Stop the guest (found by its state, else by its QEMU process name) and remove
    its files. Returns what was removed."""
    removed: list[str] = []
    current = _load()
    leader = current.pid if current and _ours(current.pid) else None
    qemu = _qemu_pids()
    for pid in qemu:
        # QEMU exiting ends virtme-ng's launcher chain too.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            os.kill(pid, signal.SIGCONT)  # a stopped QEMU acts on SIGTERM only once continued
    if leader and not qemu:
        # Still starting: no QEMU yet, stop the launcher's whole session.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(leader, signal.SIGTERM)
    waited = [*qemu, *([leader] if leader else [])]
    if not _gone(waited, timeout=15):
        for pid in qemu:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if leader:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(leader, signal.SIGKILL)
        _gone(waited, timeout=5)
    if waited:
        removed.append(f"guest {NAME} (pids {', '.join(map(str, waited))})")
    directory = state_dir()
    if directory.exists():
        shutil.rmtree(directory)
        removed.append(str(directory))
    return removed


def status() -> dict[str, Any]:
    """The guest's state (``up``, ``down``, or what is wrong) and, when it has one, its
    target URL, ssh_config and QEMU's resident memory."""
    current = _load()
    qemu = _qemu_pids()
    row: dict[str, Any] = {"guest": NAME}
    if current is None:
        row["state"] = "leftovers: run `netlab lab guest down`" if qemu else "down"
        return row
    row.update(current.to_dict())
    if not _ours(current.pid):
        row["state"] = "leftovers: its state outlived it; run `netlab lab guest down`"
        return row
    problem = _problem(current)
    row["state"] = f"not answering: {problem}" if problem else "up"
    row["qemu_rss_mib"] = sum(procfs.rss_mib(pid) for pid in qemu)
    return row


def _write_node(directory: Path, port: int) -> None:
    """Keys and configuration for both ends; ``node/`` is what the guest sees."""
    node = directory / "node"
    node.mkdir(parents=True, mode=0o700)
    (directory / "tmp").mkdir(mode=0o700)
    host_key, client_key = node / "ssh_host_ed25519_key", directory / "id_ed25519"
    for key in (host_key, client_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", NAME, "-f", str(key)],
                       check=True, capture_output=True)  # fmt: skip
    shutil.copyfile(client_key.with_suffix(".pub"), node / "authorized_keys")
    shutil.copyfile(Path(__file__).with_name("guest_init.sh"), node / "init.sh")
    # UsePAM no: sessions without PAM's modules (logind, motd), as on a minimal node.
    (node / "sshd_config").write_text(
        f"Port 22\nHostKey {GUEST_NODE_DIR}/ssh_host_ed25519_key\n"
        f"AuthorizedKeysFile {GUEST_NODE_DIR}/authorized_keys\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nUseDNS no\n"
        "PrintMotd no\nPidFile /run/sshd.pid\nSubsystem sftp internal-sftp\n"
    )
    (node / "hide").write_text("".join(f"{p}\n" for p in _netlab_here()))
    key_type, public = host_key.with_suffix(".pub").read_text().split()[:2]
    (directory / "known_hosts").write_text(f"[127.0.0.1]:{port} {key_type} {public}\n")
    # Only this guest's key is trusted: no global known_hosts, no learning new keys.
    # curve25519: the post-quantum default key exchange costs 0.3 s a connection emulated.
    (directory / "ssh_config").write_text(
        f"# netlab's guest node {NAME}; removed by `netlab lab guest down`.\n"
        f"Host 127.0.0.1\n  Port {port}\n  User {USER}\n  IdentityFile {client_key}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {directory}/known_hosts\n  GlobalKnownHostsFile /dev/null\n"
        "  StrictHostKeyChecking yes\n  UpdateHostKeys no\n  KexAlgorithms curve25519-sha256\n"
    )


def _netlab_here() -> list[str]:
    """This machine's netlab as the shared root filesystem would show it to the guest: its
    source tree, its virtualenv and the command on PATH. The guest hides them, so what
    works there works on a node where netlab was never installed."""
    import netlab

    found = {Path(netlab.__file__).resolve().parents[1], Path(sys.prefix).resolve()}
    # Every `netlab` command a login's PATH could find, not only this one (`make setup`
    # links /usr/local/bin/netlab to whichever checkout ran it last).
    for directory in {*os.get_exec_path(), "/usr/local/bin", "/usr/bin", "/bin"}:
        command = Path(directory) / "netlab"
        if os.path.lexists(command):
            found.add(command)
    return sorted(str(p) for p in found if str(p) not in ("/", "/usr", "/usr/local"))


def _launch(directory: Path, kernel: str, port: int) -> subprocess.Popen[bytes]:
    """Start virtme-ng detached: its own session, no terminal."""
    vng = _vng() or "vng"
    qemu_opts = [
        # debug-threads: each vCPU's host thread is named ("CPU 0/TCG"), for where_stuck.
        f"-name {NAME},process={NAME},debug-threads=on",
        f"-accel tcg,tb-size={TB_CACHE_MIB}",
        f"-netdev user,id={NAME},restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22",
        f"-device virtio-net-pci,netdev={NAME}",
        *guest_cpus.monitor_args(directory / MONITOR),
    ]
    argv = [
        vng, "--run", f"/boot/vmlinuz-{kernel}",
        "--disable-kvm",  # KVM guests hang in the firmware here; TCG works
        "--force-9p",  # virtiofs would need virtiofsd
        "--memory", MEMORY, "--cpus", str(CPUS), "--user", USER,
        "--verbose",  # the boot console goes to console.log: what a failed boot shows
        f"--rodir={GUEST_NODE_DIR}={directory / 'node'}",
        f"--qemu-opts={' '.join(qemu_opts)}",
        "--", f"sh {GUEST_NODE_DIR}/init.sh",
    ]  # fmt: skip
    # vng runs virtme-run from PATH; TMPDIR keeps virtme's temporary files in our directory.
    env = dict(os.environ, PATH=f"{Path(vng).parent}:{os.environ.get('PATH', '')}",
               TMPDIR=str(directory / "tmp"))  # fmt: skip
    with open(directory / "console.log", "ab") as log:
        proc = subprocess.Popen(  # the guest outlives this process by design; `down` stops it
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd="/",
            start_new_session=True,
        )  # fmt: skip
    return proc


def _answering(guest: Guest, *, patience: float = 60) -> str:
    """Empty when the running guest answers; else, after ``patience`` seconds of asking
    while its QEMU lives, what kept it from answering. Under emulation a busy guest's
    sshd can miss one ssh timeout; a single miss must not cost the guest."""
    deadline = time.monotonic() + patience
    while True:
        problem = _problem(guest)
        if not problem or not _qemu_pids() or time.monotonic() > deadline:
            return problem
        time.sleep(2)


def _ssh(guest: Guest, *command: str) -> list[str]:
    return ["ssh", "-F", guest.ssh_config, "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
            "-o", "LogLevel=ERROR", "-p", str(guest.port), f"{USER}@127.0.0.1", "--", *command]  # fmt: skip


def _save_symbols(guest: Guest) -> None:
    """The guest kernel's function addresses, as it runs them (KASLR moves them; Debian's
    /boot/System.map is a stub), read once at boot for where_stuck: 2 MB, a second."""
    argv = _ssh(guest, "awk", "'$2 ~ /^[tTwW]$/ {print $1, $3}'", "/proc/kallsyms")
    with contextlib.suppress(subprocess.TimeoutExpired):
        out = subprocess.run(
            argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
        ).stdout
        (state_dir() / SYMBOLS).write_text(out)


def where_stuck() -> list[str]:
    """For a guest that stopped answering: each vCPU's host CPU use and the kernel
    functions it is in, read from QEMU (see :mod:`netlab.lab.guest_cpus`)."""
    qemu = _qemu_pids()
    if not qemu:
        return ["no guest QEMU process"]
    return guest_cpus.report(qemu[0], state_dir() / MONITOR, state_dir() / SYMBOLS)


def _problem(guest: Guest) -> str:
    """What keeps the guest from answering over ssh ("" when it answers with its kernel)."""
    argv = _ssh(guest, "uname", "-r")
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return f"`ssh ... {shlex.join(argv[-2:])}` took longer than 20 s"
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else f"ssh exit status {result.returncode}"
    answer = result.stdout.strip()
    return "" if answer == guest.kernel else f"the node answered kernel {answer!r}"


def _save(guest: Guest) -> None:
    path = state_dir() / "guest.json"
    path.write_text(json.dumps(guest.to_dict(), indent=2))


def _load() -> Guest | None:
    try:
        return Guest(**json.loads((state_dir() / "guest.json").read_text()))
    except (OSError, ValueError, TypeError):
        return None


def console_tail(lines: int = 3) -> list[str]:
    """The last non-blank lines of the guest's boot console (kernel messages, init's
    output): what a guest that stopped answering showed last."""
    try:
        text = (state_dir() / "console.log").read_text(errors="replace")
    except OSError:
        return ["(no console log)"]
    return [line.strip() for line in text.splitlines() if line.strip()][-lines:]


def _ours(pid: int) -> bool:
    """``pid`` is one of this guest's processes and not a zombie (a zombie's cmdline is empty)."""
    return any(MARK in arg for arg in procfs.cmdline(pid) or [])


def _qemu_pids() -> list[int]:
    return [pid for pid in procfs.pids() if procfs.comm(pid) == NAME and _ours(pid)]


def _gone(pids: list[int], *, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        for pid in pids:
            # Reap our own child (the launcher, when this process started the guest).
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        if not any(map(_ours, pids)):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
