"""A real OpenSSH server on 127.0.0.1 for tests, with its own keys and known_hosts.

The client side is an ssh_config passed to netlab through NETLAB_SSH_CONFIG, which maps
``127.0.0.1`` to the server's port, so target URLs read as users write them
(``ssh://root@127.0.0.1``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def sshd(directory: Path) -> Iterator[Path]:
    """Start sshd; yield the client ssh_config path; stop sshd."""
    port = free_port()
    host_key, user_key = directory / "host_key", directory / "id_ed25519"
    for key in (host_key, user_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    (directory / "authorized_keys").write_text((directory / "id_ed25519.pub").read_text())
    host_pub = (directory / "host_key.pub").read_text().split()
    (directory / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    config = directory / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
        f"AuthorizedKeysFile {directory}/authorized_keys\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nStrictModes no\n"
        f"PidFile {directory}/sshd.pid\nUsePAM no\n"
    )
    client = directory / "ssh_config"
    client.write_text(
        f"Host 127.0.0.1\n  Port {port}\n  IdentityFile {user_key}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {directory}/known_hosts\n"
    )
    os.makedirs("/run/sshd", exist_ok=True)
    server = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if server.poll() is not None:
                    raise RuntimeError(
                        f"sshd exited: {server.stderr.read().decode() if server.stderr else ''}"
                    ) from None
                time.sleep(0.1)
        yield client
    finally:
        server.terminate()
        server.wait(timeout=10)
