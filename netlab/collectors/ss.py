"""TCP sockets with their counters, from ``ss -tine`` (sock_diag over netlink).

One row per socket: state, queues, local and peer address and port, inode, the socket
cookie (``sk:<hex>``: the same number a sockmap lookup returns, which is how map entries
are joined with live sockets) and the ``-i`` counters (segs_in/out, bytes_acked,
bytes_received, ...). Unknown counters are kept as text.
"""

from __future__ import annotations

import re

import pandas as pd

from netlab import params
from netlab.errors import DecodeError
from netlab.targets import Target

STATES = {"ESTAB", "SYN-SENT", "SYN-RECV", "FIN-WAIT-1", "FIN-WAIT-2", "TIME-WAIT", "CLOSE", "CLOSE-WAIT",
          "LAST-ACK", "LISTEN", "CLOSING", "UNCONN"}  # fmt: skip
COUNTERS = ("segs_in", "segs_out", "bytes_acked", "bytes_received", "bytes_sent", "data_segs_in", "data_segs_out",
            "lastsnd", "lastrcv", "lastack", "retrans")  # fmt: skip
COLUMNS = [
    "state",
    "recv_q",
    "send_q",
    "local",
    "local_port",
    "peer",
    "peer_port",
    "inode",
    "cookie",
    *COUNTERS,
]


def _endpoint(text: str, line: int) -> tuple[str, int | None]:
    host, sep, port = text.rpartition(":")
    if not sep:
        raise DecodeError(f"ss line {line}: {text!r} is not ADDRESS:PORT")
    host = host.strip("[]").split("%")[0]
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return host, (int(port) if port.isdigit() else None)


def parse(text: str) -> pd.DataFrame:
    rows: list[dict[str, object]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith(("State", "Netid")):
            continue
        if line[0] in " \t":
            if not rows:
                raise DecodeError(f"ss line {number}: details before any socket line")
            for key, value in re.findall(r"\b([a-z_]+):(\S+)", line):
                if key in COUNTERS:
                    try:
                        rows[-1][key] = int(float(value.split("/")[0]))
                    except ValueError:
                        rows[-1][key] = value
            continue
        if re.match(r"^\(?[\w.-]*\)?\s*[$#] ", line) or line.strip() == "--":
            continue  # a shell prompt and command, or grep's separator, in pasted output
        fields = line.split()
        if fields[0] in ("tcp", "tcp6", "mptcp") and len(fields) > 1:
            fields = fields[1:]  # with a Netid column (ss without -t)
        if fields[0] not in STATES or len(fields) < 5:
            raise DecodeError(f"ss line {number}: {line.strip()[:60]!r} does not start with a TCP state")
        local, local_port = _endpoint(fields[3], number)
        peer, peer_port = _endpoint(fields[4], number)
        row: dict[str, object] = {"state": fields[0], "recv_q": int(fields[1]), "send_q": int(fields[2]),
                                  "local": local, "local_port": local_port, "peer": peer, "peer_port": peer_port}  # fmt: skip
        for token in fields[5:]:
            if token.startswith("ino:"):
                row["inode"] = int(token[4:])
            elif token.startswith("sk:"):
                row["cookie"] = int(token[3:], 16)
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def sockets(target: Target, *, peer: str | None = None, peer_port: int | None = None,
            local_ports: tuple[int, int] | None = None) -> pd.DataFrame:  # fmt: skip
    """TCP sockets of the target's namespace, optionally filtered (validated values)."""
    argv = ["ss", "-tine", "state", "all"]
    conditions = []
    if peer:
        conditions.append(f"dst {params.ip_address(peer, 'peer')}")
    if peer_port:
        conditions.append(f"dport = :{params.port(peer_port, 'peer_port')}")
    if local_ports:
        low, high = (params.port(p, "local_ports") for p in local_ports)
        conditions.append(f"sport >= :{low} and sport <= :{high}")
    if conditions:
        argv += " and ".join(conditions).split()
    return parse(target.run(argv).stdout)
