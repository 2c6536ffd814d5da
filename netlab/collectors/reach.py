"""Reachability probes from a vantage point: ping, TCP connect, HTTP request.

Each runs a standard tool (``ping``, ``curl``) through a target, so the vantage point can
be this node, a pod's network namespace or a remote node. One curl call gives both
answers the case needs: whether the TCP handshake completed (``time_connect``) and
whether the request got a response in time.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from netlab import params
from netlab.capability import Mechanism, command
from netlab.errors import NetlabError
from netlab.targets import Target

if TYPE_CHECKING:
    import pandas as pd

# curl exit codes: 28 = operation timed out, 7 = failed to connect.
CURL_TIMEOUT = 28
# curl exit codes that mean our probe could not run, not that the node failed: 2 (init),
# 45 (bind of --local-port failed: every port of the range busy, e.g. in TIME_WAIT).
CURL_COULD_NOT_RUN = {2: "curl could not start", 45: "local port busy (bind failed)"}


@dataclass
class ProbeResult:
    vantage: str
    kind: str  # ping | tcp | http
    destination: str
    ok: bool
    latency_ms: float | None
    detail: str
    # False when the probe itself could not run (our tool, not the node, failed): such
    # attempts are left out of success rates.
    ran: bool = True


def _host_for_url(address: str) -> str:
    return f"[{address}]" if ipaddress.ip_address(address).version == 6 else address


def ping(target: Target, address: str, *, timeout: float = 2.0, vantage: str | None = None) -> ProbeResult:
    addr = params.ip_address(address, "address")
    deadline = max(1, int(round(timeout)))
    result = target.run(
        ["ping", "-n", "-c", "1", "-W", str(deadline), addr], timeout=timeout + 3, check=False
    )
    match = re.search(r"time=([\d.]+) ms", result.stdout)
    return ProbeResult(
        vantage or target.url, "ping", addr, result.ok,
        float(match.group(1)) if match else None,
        "reply" if result.ok else (result.brief_error() if result.returncode != 1 else "no reply"),
    )  # fmt: skip


def http(
    target: Target,
    address: str,
    port: int,
    path: str = "/",
    *,
    timeout: float = 2.0,
    vantage: str | None = None,
    local_port: int | str | None = None,
    cgroup: str | None = None,
) -> tuple[ProbeResult, ProbeResult]:
    """One HTTP GET: returns (tcp connect result, http response result). With ``cgroup``
    curl runs inside that cgroup (its connect meets the cgroup's BPF programs)."""
    addr = params.ip_address(address, "address")
    port = params.port(port)
    if not re.fullmatch(r"/[A-Za-z0-9._~/-]*", path):
        raise NetlabError(f"parameter path: {path!r} is not a plain URL path")
    url = f"http://{_host_for_url(addr)}:{port}{path}"
    argv = [
        "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{time_connect} %{time_total}",
        "--connect-timeout", f"{timeout:g}", "--max-time", f"{timeout:g}", "--noproxy", "*",
    ]  # fmt: skip
    if local_port:
        argv += ["--local-port", port_range(local_port)]
    result = target.run([*argv, url], timeout=timeout + 5, check=False, cgroup=cgroup)
    who, dest = vantage or target.url, f"{addr}:{port}"
    if result.returncode in CURL_COULD_NOT_RUN or result.returncode == 127:
        why = f"could not run: {CURL_COULD_NOT_RUN.get(result.returncode, 'curl missing')}: {result.brief_error()}"
        return (ProbeResult(who, "tcp", dest, False, None, why, ran=False),
                ProbeResult(who, "http", url, False, None, why, ran=False))  # fmt: skip
    fields = result.stdout.split()
    code = fields[0] if fields else "000"
    t_connect = float(fields[1]) if len(fields) > 1 else 0.0
    t_total = float(fields[2]) if len(fields) > 2 else 0.0
    connected = t_connect > 0
    tcp = ProbeResult(who, "tcp", dest, connected, t_connect * 1000 if connected else None,
                      "established" if connected else result.brief_error())  # fmt: skip
    answered = result.ok and code.startswith(("2", "3"))
    if answered:
        detail = f"HTTP {code}"
    elif result.returncode == CURL_TIMEOUT and connected:
        detail = f"connected, no response within {timeout:g} s"
    else:
        detail = result.brief_error()
    web = ProbeResult(who, "http", f"{url}", answered, t_total * 1000 if answered else None, detail)
    return tcp, web


def port_range(value: int | str, param: str = "local_port") -> str:
    """A port or ``LOW-HIGH`` range (curl's ``--local-port`` takes either), validated."""
    text = str(value)
    low, _, high = text.partition("-")
    first = params.port(low, param)
    last = params.port(high, param) if high else first
    if last < first:
        raise NetlabError(f"parameter {param}: {text!r} is an empty range")
    return f"{first}-{last}" if last != first else str(first)


def frame(results: list[ProbeResult]) -> pd.DataFrame:
    import pandas as pd  # here: the lab runs these on nodes without pandas (netlab.ship)

    return pd.DataFrame([asdict(r) for r in results])


class HeldRequest:
    """An HTTP request left running in the background for ``seconds`` (curl with a
    timeout), so a stuck flow can be looked at while it is stuck. Use as a context
    manager; leaving it waits for curl to end (bounded by ``seconds``)."""

    def __init__(self, target: Target, address: str, port: int, path: str = "/", *, seconds: float = 4.0,
                 local_port: int | str | None = None, cgroup: str | None = None):  # fmt: skip
        import threading

        self.args = (target, address, port, path)
        self.kwargs = {"timeout": seconds, "local_port": local_port, "cgroup": cgroup}
        self.result: tuple[ProbeResult, ProbeResult] | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.result = http(*self.args, **self.kwargs)  # type: ignore[arg-type]

    def __enter__(self) -> HeldRequest:
        import time

        target, address, port, _ = self.args
        self._thread.start()
        # Until the flow is established (a remote node takes a while to start curl), then
        # a little longer for the request to be sent; bounded by the hold itself.
        deadline = time.monotonic() + min(5.0, float(self.kwargs["timeout"] or 5.0))
        peer = f"[{address}]" if ":" in str(address) else str(address)
        while time.monotonic() < deadline and self._thread.is_alive():
            listed = target.run(["ss", "-Htn", "state", "established", "dst", f"{peer}:{port}"], check=False)
            if listed.stdout.strip():
                break
            time.sleep(0.1)
        time.sleep(0.3)
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(timeout=float(self.kwargs["timeout"] or 0) + 10)


# --- capabilities and mechanism --------------------------------------------------------
CURL = command("curl", ["curl", "--version"], "curl is missing")
PING = command("ping", ["ping", "-V"], "ping (iputils) is missing")
PROBES = Mechanism("ping and curl (connect + HTTP) from each vantage point", (PING, CURL))
