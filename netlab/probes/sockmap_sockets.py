"""Each key of a sockmap/sockhash with the socket that holds it, from the CO-RE map
iterator ``bpf/sockmap_sockets.bpf.c`` (``iter/sockmap``, Linux 5.10+).

This is how a 4-byte-value sockhash (Cilium's ``cilium_sock_ops``) is read: a user-space
lookup of such a map answers ENOSPC (only 8-byte values return the socket cookie), so
``bpftool map dump`` gives keys and no socket. The iterator gives the socket's own
tuple, TCP state, network namespace (inode), cookie, whether a file still refers to it
(``orphan``: closed by its process, still alive in the kernel) and its recvmsg handler.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import TYPE_CHECKING

from netlab import mounts, naming
from netlab.capability import Check, Mechanism, Node, capability
from netlab.errors import NetlabError
from netlab.probes import bpf_build, bpf_iter
from netlab.probes.tcp_sockets import plain_address, recvmsg_symbols
from netlab.targets import Target

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = ["key_hex", "family", "state", "local", "local_port", "peer", "peer_port", "orphan", "netns",
           "cookie", "handler", "sk"]  # fmt: skip
TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT",
              7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING", 12: "NEW_SYN_RECV"}  # fmt: skip
AF_INET, AF_INET6 = 2, 10
# Fields after the key's words: family state sport dport orphan netns cookie recvmsg sk
# saddr4 daddr4, then the two IPv6 addresses as four words each.
_SOCKET_FIELDS = 19


def _words(text: list[str]) -> bytes:
    # The iterator prints the key's u32 words as the node's CPU holds them (little-endian
    # on the x86-64 and arm64 nodes this runs on).
    return b"".join(struct.pack("<I", int(w, 16)) for w in text)


def _address(family: int, v4: str, v6: list[str]) -> str:
    if family == AF_INET:
        return str(ipaddress.IPv4Address(_words([v4])))
    return plain_address(str(ipaddress.IPv6Address(_words(v6))))


def parse(text: str, key_words: int, symbols: dict[int, str] | None = None) -> pd.DataFrame:
    """Lines of ``sockmap_sockets.bpf.c``; ``symbols`` resolves handler addresses."""
    import pandas as pd  # here: the lab runs on nodes without pandas (netlab.ship)

    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        f = line.split()
        if not f:
            continue
        try:
            key = _words(f[:key_words]).hex()
            if f[key_words:] == ["-"]:  # an empty sockmap slot
                continue
            s = f[key_words + 1 :]
            if f[key_words] != "|" or len(s) != _SOCKET_FIELDS:
                raise ValueError("unexpected fields")
            family, state, sport, dport, orphan, netns = (int(x) for x in s[:6])
            handler = int(s[7], 16)
            rows.append({
                "key_hex": key, "family": family, "state": TCP_STATES.get(state, str(state)),
                "local": _address(family, s[9], s[11:15]), "local_port": sport,
                "peer": _address(family, s[10], s[15:19]), "peer_port": dport,
                "orphan": bool(orphan), "netns": netns, "cookie": int(s[6]),
                "handler": (symbols or {}).get(handler, f"0x{handler:x}"), "sk": f"0x{s[8]}",
            })  # fmt: skip
        except (ValueError, IndexError):
            raise NetlabError(
                f"sockmap iterator line {number} is not what the iterator prints: {line!r}"
            ) from None
    # A long sockhash walk (several reads of the pin) printed some entries twice (about
    # 0.2% at 100k entries on 6.18, bench/sockmap_join.py): a hash map holds a key once.
    return pd.DataFrame(rows, columns=COLUMNS).drop_duplicates("key_hex", ignore_index=True)


def read(target: Target, map_id: int, key_size: int) -> pd.DataFrame:
    """Walk map ``map_id`` (key ``key_size`` bytes) on ``target``'s node once."""
    if key_size <= 0 or key_size % 4:
        raise NetlabError(f"sockmap id {map_id}: key size {key_size} is not whole 32-bit words")
    host = target.host()
    words = key_size // 4
    text = bpf_iter.run("sockmap_sockets.bpf.c", host, map_id=map_id, defines={"KEY_WORDS": str(words)})
    return parse(text, words, recvmsg_symbols(host))


@capability("sockmap_iter", requires=[bpf_iter.BPF_ITER])
def SOCKMAP_ITER(target: Target, node: Node) -> Check:
    """Load the sockmap iterator itself (and unload it): a kernel can run task and TCP
    iterators and still refuse map element iterators (this lab VM's 6.18 build answers
    EPERM), so the generic iterator probe does not answer for this one."""
    host = target.host()
    obj = bpf_build.build("sockmap_sockets.bpf.c", host, defines={"KEY_WORDS": "11"})
    pin = f"{mounts.bpffs(host)}/{naming.probe_name('sockiter')}"
    placed = bpf_build.place(obj, host)
    try:
        loaded = host.run(["bpftool", "prog", "load", placed, pin], check=False)
    finally:
        host.run(["rm", "-f", pin, *([placed] if placed != obj else [])], check=False)
    if not loaded.ok:
        # libbpf's own line says why (bpftool's last lines are a generic warning).
        why = [ln.split(": ", 2)[-1] for ln in loaded.stderr.splitlines() if "load failed" in ln]
        return Check("sockmap_iter", False, "the kernel refused the iter/sockmap program: "
                     + (why[0] if why else loaded.brief_error()))  # fmt: skip
    return Check("sockmap_iter", True, "the iter/sockmap program loads")


ITERATOR = Mechanism(
    "BPF sockmap iterator (CO-RE, iter/sockmap): each key with its socket's tuple, state, netns",
    (SOCKMAP_ITER,),
)
