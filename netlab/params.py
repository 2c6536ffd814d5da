"""Validation of every parameter that reaches a command line, a filter or a path.

Each validator returns the normalised value or raises :class:`NetlabError` naming the
parameter and what was wrong with it. Commands are always run as argument vectors
(never through a shell), so validation is the second line of defence, not the first:
it also turns a typo into a clear message instead of a confusing tool error.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Callable

from netlab.errors import NetlabError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")
_HOST = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*$"
)
_USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.@:-]{1,15}$")
_PATH_BAD = re.compile(r"[\x00-\x1f\x7f]")


def ip_address(value: object, param: str = "address") -> str:
    """An IPv4 or IPv6 address, returned in canonical form."""
    try:
        return str(ipaddress.ip_address(str(value).strip()))
    except ValueError:
        raise NetlabError(f"parameter {param}: {value!r} is not an IP address") from None


def url_path(value: object, param: str = "path") -> str:
    """An HTTP path: starts with ``/``, no spaces or control characters (it reaches a
    probe's command line)."""
    text = str(value)
    if not text.startswith("/") or any(c.isspace() or ord(c) < 32 for c in text):
        raise NetlabError(
            f"parameter {param}: {value!r} is not a URL path (it starts with / and has no spaces)"
        )
    return text


def ip_network(value: object, param: str = "network") -> str:
    try:
        return str(ipaddress.ip_network(str(value).strip(), strict=False))
    except ValueError:
        raise NetlabError(f"parameter {param}: {value!r} is not an IP network") from None


def port(value: object, param: str = "port") -> int:
    """A TCP/UDP port, 1-65535."""
    try:
        number = int(str(value).strip())
    except ValueError:
        raise NetlabError(f"parameter {param}: {value!r} is not a port number") from None
    if not 1 <= number <= 65535:
        raise NetlabError(f"parameter {param}: {number} is outside 1-65535")
    return number


def positive_number(value: object, param: str, *, maximum: float | None = None) -> float:
    try:
        number = float(str(value).strip())
    except ValueError:
        raise NetlabError(f"parameter {param}: {value!r} is not a number") from None
    if not number > 0:
        raise NetlabError(f"parameter {param}: must be greater than 0, got {number:g}")
    if maximum is not None and number > maximum:
        raise NetlabError(f"parameter {param}: {number:g} exceeds the limit of {maximum:g}")
    return number


def count(value: object, param: str, *, maximum: int) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise NetlabError(f"parameter {param}: {value!r} is not a whole number") from None
    if not 1 <= number <= maximum:
        raise NetlabError(f"parameter {param}: {number} is outside 1-{maximum}")
    return number


def name(value: object, param: str = "name") -> str:
    """An object name (namespace, map, program, scenario): no spaces, no shell syntax."""
    text = str(value)
    if not _NAME.fullmatch(text):
        raise NetlabError(
            f"parameter {param}: {value!r} is not a valid name "
            "(letters, digits and _ . : @ - only, starting with a letter or digit)"
        )
    return text


def text(value: object, param: str, *, maximum: int = 1000) -> str:
    """Free text (a command line the user gives): printable, encodable, bounded."""
    if not isinstance(value, str):
        raise NetlabError(f"parameter {param}: {value!r} is not text")
    if len(value) > maximum:
        raise NetlabError(f"parameter {param}: longer than {maximum} characters")
    if _PATH_BAD.search(value):
        raise NetlabError(f"parameter {param}: {value!r} holds a control character")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise NetlabError(f"parameter {param}: {value!r} is not valid Unicode text") from None
    return value


def command_line(value: object, param: str = "command") -> str:
    """A command line the user gives (to reproduce a failure): split like a shell would
    split it, and run as that argument vector, never through a shell, so its
    metacharacters are plain characters of its arguments."""
    line = text(value, param, maximum=2000)
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise NetlabError(f"parameter {param}: {exc}") from None
    if not words:
        raise NetlabError(f"parameter {param}: empty command")
    return line


def interface(value: object, param: str = "interface") -> str:
    text = str(value)
    if not _IFNAME.fullmatch(text):
        raise NetlabError(f"parameter {param}: {value!r} is not a valid interface name")
    return text


def hostname(value: object, param: str = "host") -> str:
    text = str(value)
    if text.startswith("[") and text.endswith("]"):
        return ip_address(text[1:-1], param)
    try:
        return ip_address(text, param)
    except NetlabError:
        pass
    if not _HOST.fullmatch(text):
        raise NetlabError(f"parameter {param}: {value!r} is not a valid host name or address")
    return text


def user(value: object, param: str = "user") -> str:
    text = str(value)
    if not _USER.fullmatch(text):
        raise NetlabError(f"parameter {param}: {value!r} is not a valid user name")
    return text


def path(value: object, param: str = "path", *, absolute: bool = True) -> str:
    """A file-system path: no control characters, no option-like leading dash."""
    text = str(value)
    if not text or _PATH_BAD.search(text) or text.startswith("-"):
        raise NetlabError(f"parameter {param}: {value!r} is not a usable path")
    if absolute and not text.startswith("/"):
        raise NetlabError(f"parameter {param}: {value!r} must be an absolute path")
    return text


# Where a report must never be written, whatever the user typed.
_SYSTEM_DIRS = (
    "/etc",
    "/proc",
    "/sys",
    "/dev",
    "/boot",
    "/bin",
    "/sbin",
    "/lib",
    "/lib64",
    "/usr",
    "/var/lib",
    "/run",
)


def output_dir(value: object, param: str = "out") -> str:
    """A directory to write reports into: not empty, not a file, not a system directory."""
    import os

    text = str(value)
    if not text.strip() or _PATH_BAD.search(text) or text.startswith("-"):
        raise NetlabError(f"parameter {param}: {value!r} is not a usable directory")
    real = os.path.realpath(text)
    if real == "/" or any(real == d or real.startswith(d + "/") for d in _SYSTEM_DIRS):
        raise NetlabError(f"parameter {param}: {text!r} is a system directory; write reports elsewhere")
    if os.path.exists(real) and not os.path.isdir(real):
        raise NetlabError(f"parameter {param}: {text!r} exists and is not a directory")
    return text


def up_to(maximum: int) -> Callable[[object, str], int]:
    """A validator of a whole number in 1..``maximum`` (for declared parameters)."""
    return lambda value, param: count(value, param, maximum=maximum)


def seconds_up_to(maximum: float) -> Callable[[object, str], float]:
    """A validator of a duration above 0 and at most ``maximum`` seconds."""
    return lambda value, param: positive_number(value, param, maximum=maximum)
