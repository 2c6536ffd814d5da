"""TCP sockets with their counters, from ``ss -tine`` (sock_diag over netlink).

One row per socket: state, queues, local and peer address and port, inode, the socket
cookie (``sk:<hex>``: the same number a sockmap lookup returns, which is how map entries
are joined with live sockets), the owning process (``-p``) and the ``-i`` details. The
counters netlab reads (segs_in/out, bytes_acked, bytes_received, ...) are always columns;
every other ``key:value`` detail is kept too, as a number when it is one (``rto``,
``rtt``/``rttvar``, ``cwnd``, ``minrtt``...) and as text otherwise (``wscale``, ``busy``),
with rates (``send 1963.4Mbps``) as text and bare words as ``cc`` (the congestion
control) and ``flags`` (``app_limited``, ``ts``, ``sack``...).
"""

from __future__ import annotations

import re

import pandas as pd

from netlab import params
from netlab.capability import Mechanism, command
from netlab.collectors import netns
from netlab.decoders.damage import Damage, strict
from netlab.decoders.paste import command_of, is_elision
from netlab.errors import DecodeError
from netlab.targets import Target

STATES = {"ESTAB", "SYN-SENT", "SYN-RECV", "FIN-WAIT-1", "FIN-WAIT-2", "TIME-WAIT", "CLOSE", "CLOSE-WAIT",
          "LAST-ACK", "LISTEN", "CLOSING", "UNCONN"}  # fmt: skip
# ss's state names as the kernel (and a BPF iterator) names them.
KERNEL_STATES = {"ESTAB": "ESTABLISHED", "SYN-SENT": "SYN_SENT", "SYN-RECV": "SYN_RECV", "FIN-WAIT-1": "FIN_WAIT1",
                 "FIN-WAIT-2": "FIN_WAIT2", "TIME-WAIT": "TIME_WAIT", "CLOSE-WAIT": "CLOSE_WAIT", "LAST-ACK": "LAST_ACK"}  # fmt: skip
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
_CONGESTION = {"cubic", "reno", "bbr", "bbr2", "bbr3", "dctcp", "vegas", "westwood", "htcp", "bic", "illinois",
               "hybla", "scalable", "yeah", "veno", "lp", "nv", "cdg", "highspeed"}  # fmt: skip
_RATES = ("send", "pacing_rate", "delivery_rate")
_DETAIL = re.compile(r"([a-z_]+):(\(\(.*?\)\)|\(.*?\)|\S+)|(\S+)")
_USERS = re.compile(r'\(\("(?P<process>[^"]*)",pid=(?P<pid>\d+),fd=(?P<fd>\d+)\)')
_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?$")


def _endpoint(text: str, line: int) -> tuple[str, int | None, str | None]:
    host, sep, port = text.rpartition(":")
    if not sep:
        raise DecodeError(f"ss line {line}: {text!r} is not ADDRESS:PORT")
    host = host.strip("[]").split("%")[0]
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    if port.isdigit():
        return host, int(port), None
    return host, None, None if port == "*" else port  # ss without -n prints service names


def _number(text: str) -> object:
    if _NUMBER.match(text):
        return float(text) if "." in text else int(text)
    return text


def _details(line: str, row: dict[str, object]) -> None:
    words = list(_DETAIL.finditer(line))
    skip = False
    for i, m in enumerate(words):
        if skip:
            skip = False
            continue
        key, value, bare = m.group(1), m.group(2), m.group(3)
        if bare is not None:
            if bare in _RATES and i + 1 < len(words):
                nxt = words[i + 1]
                row[bare] = nxt.group(0)
                skip = True
            elif bare in _CONGESTION:
                row["cc"] = bare
            else:
                row["flags"] = f"{row['flags']} {bare}" if row.get("flags") else bare
            continue
        if key == "rtt" and "/" in value:
            rtt, _, var = value.partition("/")
            row["rtt"], row["rttvar"] = _number(rtt), _number(var)
        elif key in COUNTERS:
            # retrans:0/5 is (in flight)/(total): the first number, as netlab always read it.
            first = value.split("/")[0]
            row[key] = int(float(first)) if _NUMBER.match(first) else value
        else:
            row[key] = _number(value)


def _socket(fields: list[str], number: int) -> dict[str, object]:
    local, local_port, local_service = _endpoint(fields[3], number)
    peer, peer_port, peer_service = _endpoint(fields[4], number)
    row: dict[str, object] = {"state": fields[0], "recv_q": int(fields[1]), "send_q": int(fields[2]),
                              "local": local, "local_port": local_port, "peer": peer, "peer_port": peer_port}  # fmt: skip
    if local_service:
        row["local_service"] = local_service
    if peer_service:
        row["peer_service"] = peer_service
    for token in fields[5:]:
        if token.startswith("ino:"):
            row["inode"] = int(token[4:])
        elif token.startswith("sk:"):
            row["cookie"] = int(token[3:], 16)
        elif token.startswith("uid:") and token[4:].isdigit():
            row["uid"] = int(token[4:])
        elif token.startswith("users:"):
            users = _USERS.search(token)
            if users:
                row.update(process=users["process"], pid=int(users["pid"]), fd=int(users["fd"]))
            row["users"] = token[6:]
        elif token in ("<->", "-->", "<--", "---"):
            row["shutdown"] = token  # "<->": neither direction shut down
        elif ":" in token:
            key, _, value = token.partition(":")
            row[key] = value
    return row


def parse(text: str, *, damage: Damage | None = None) -> pd.DataFrame:
    """Parse ``ss -t[i][e][n][p]`` output (with or without the Netid column).

    A line that fits nothing raises, naming it, unless ``damage`` tolerates it (pasted
    output): then it is skipped with a warning, and so are its detail lines.
    """
    damage = strict(damage)
    rows: list[dict[str, object]] = []
    current: dict[str, object] | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith(("State", "Netid")):
            continue
        if line[0] in " \t":
            if current is None:
                damage.report(f"ss line {number}: details before any socket line")
                continue
            _details(line, current)
            continue
        stripped = line.strip()
        if stripped == "--" or is_elision(stripped) or command_of(stripped) is not None:
            continue  # grep's separator, an elision, a shell prompt and command
        fields = line.split()
        if fields[0] in ("tcp", "tcp6", "mptcp") and len(fields) > 1:
            fields = fields[1:]  # with a Netid column (ss without -t)
        if fields[0] not in STATES or len(fields) < 5 or not fields[1].isdigit() or not fields[2].isdigit():
            current = None
            damage.report(f"ss line {number}: {line.strip()[:60]!r} does not start with a TCP state")
            continue
        try:
            current = _socket(fields, number)
        except DecodeError as exc:
            current = None
            damage.report(str(exc))
            continue
        rows.append(current)
    frame = pd.DataFrame(rows)
    extra = [c for c in frame.columns if c not in COLUMNS]
    return frame.reindex(columns=COLUMNS + extra)


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


def sockets_in(target: Target, path: str, local_ports: list[int]) -> pd.DataFrame | None:
    """TCP sockets with one of ``local_ports`` in the namespace at ``path`` on the node
    (a /run/netns name or /proc/PID/ns/net), read there by sock_diag; None when that
    namespace is gone by the time it is read."""
    ports = sorted({params.port(p, "local_ports") for p in local_ports})
    condition = " or ".join(f"sport = :{p}" for p in ports)
    result = netns.enter(
        target, path, ["ss", "-tine", "state", "all", *(["(", *condition.split(), ")"] if ports else [])]
    )
    return None if result is None else parse(result.stdout)


# --- capability and mechanism ----------------------------------------------------------
SS = command("ss", ["ss", "-V"], "ss (iproute2) is missing")
SOCK_DIAG = Mechanism("ss -tine (sock_diag netlink)", (SS,))
