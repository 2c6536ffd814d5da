"""Every TCP socket of a network namespace with its receive handler, from the CO-RE BPF
TCP iterator ``bpf/tcp_sockets.bpf.c`` (no kprobes needed): which sockets a sockops
program accelerated (``tcp_bpf_recvmsg``) and which kept the plain ``tcp_recvmsg``."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from netlab.capability import Mechanism
from netlab.probes import bpf_iter
from netlab.targets import Target

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = ["netns", "local", "local_port", "peer", "peer_port", "state", "cookie", "handler"]


def parse(text: str, where: str, symbols: dict[int, str] | None = None) -> pd.DataFrame:
    """Lines of ``tcp_sockets.bpf.c``: family, local, lport, peer, pport, state, cookie,
    handler address (resolved with ``symbols``; an older build printed the name)."""
    import pandas as pd  # here: the lab runs these on nodes without pandas (netlab.ship)

    rows = []
    for line in text.splitlines():
        f = line.split()
        if len(f) != 8:
            continue
        rows.append({"netns": where, "local": plain_address(f[1]), "local_port": int(f[2]),
                     "peer": plain_address(f[3]), "peer_port": int(f[4]),
                     "state": int(f[5]), "cookie": int(f[6]), "handler": _handler(f[7], symbols)})  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS)


def plain_address(text: str) -> str:
    """An IPv4-mapped IPv6 address as the IPv4 address it carries, any other as given.

    A dual-stack listener (a Go server on ``:8080``) accepts IPv4 clients as AF_INET6
    sockets holding ``::ffff:a.b.c.d``; Cilium keys them as IPv4, so that is how they
    compare with keys and with the pod's address."""
    try:
        mapped = ipaddress.IPv6Address(text).ipv4_mapped
    except ValueError:
        return text
    return str(mapped) if mapped else text


def recvmsg_symbols(target: Target) -> dict[int, str]:
    """Addresses of the kernel's recvmsg functions (``tcp_recvmsg``, ``tcp_bpf_recvmsg``...)."""
    text = target.run(["grep", "recvmsg", "/proc/kallsyms"], check=False).stdout
    found = {}
    for line in text.splitlines():
        address, _, name = (line.split() + ["", "", ""])[:3]
        if name.endswith("recvmsg") and int(address, 16):
            found[int(address, 16)] = name
    return found


def _handler(text: str, symbols: dict[int, str] | None) -> str:
    try:
        address = int(text, 16)
    except ValueError:
        return text.split("+", 1)[0]  # a symbol already (%pS)
    return (symbols or {}).get(address, f"0x{address:x}")


def read(target: Target, where: str) -> pd.DataFrame:
    """Run the iterator once in ``target``'s namespace; ``where`` labels the rows."""
    return parse(bpf_iter.run("tcp_sockets.bpf.c", target), where, recvmsg_symbols(target.host()))


ITERATOR = Mechanism(
    "BPF TCP iterator (CO-RE): sk->sk_prot->recvmsg, resolved with /proc/kallsyms", (bpf_iter.BPF_ITER,)
)
