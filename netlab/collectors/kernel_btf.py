"""What a node's kernel is, read from its BTF rather than guessed from its release.

A release number says little about a vendor kernel: stable series and distributions
backport fixes (Debian's 6.1 carries 6.3's removal of the IPv6 max_size check). BTF
describes the kernel that runs, so a change that altered a type can be recognised there.
The node's BTF is read once (fetched and cached for remote nodes, as for CO-RE builds)
and dumped with ``bpftool btf dump ... format raw`` on this machine.
"""

from __future__ import annotations

import re

from netlab.errors import NetlabError
from netlab.probes import bpf_build
from netlab.targets import LocalTarget, Target

_QUALIFIERS = ("TYPEDEF", "CONST", "VOLATILE", "RESTRICT", "TYPE_TAG")


def raw_dump(target: Target) -> str:
    """``bpftool btf dump format raw`` of the node's kernel BTF."""
    btf = bpf_build.btf_file(target)
    return LocalTarget().run(["bpftool", "btf", "dump", "file", btf, "format", "raw"], timeout=120).stdout


def _type(dump: str, type_id: int) -> tuple[str, str, str]:
    """(kind, name, the rest of its line) of BTF type ``type_id``."""
    found = re.search(rf"^\[{type_id}\] (\w+) '([^']*)'(.*)$", dump, re.M)
    if not found:
        raise NetlabError(f"BTF: no type {type_id}")
    return found.group(1), found.group(2), found.group(3)


def _refers(rest: str, field: str = "type_id") -> int:
    found = re.search(rf"\b{field}=(\d+)", rest)
    if not found:
        raise NetlabError(f"BTF: no {field} in {rest.strip()!r}")
    return int(found.group(1))


def _type_name(dump: str, type_id: int) -> str:
    """A type's name through typedefs and qualifiers: ``void``, ``int``, ``pointer``..."""
    for _ in range(16):
        if type_id == 0:
            return "void"
        kind, name, rest = _type(dump, type_id)
        if kind not in _QUALIFIERS:
            return "pointer" if kind == "PTR" else name
        type_id = _refers(rest)
    raise NetlabError(f"BTF: type {type_id} does not resolve")


def function_pointer_returns(dump: str, struct: str, member: str) -> str:
    """The return type's name (``void``, ``int``...) of the function pointer
    ``struct STRUCT``'s ``MEMBER`` in a raw BTF dump."""
    found = re.search(rf"^\[\d+\] STRUCT '{re.escape(struct)}' size=\d+ vlen=\d+\n((?:\t.*\n?)*)", dump, re.M)
    if not found:
        raise NetlabError(f"BTF: no struct {struct}")
    member_line = re.search(rf"^\t'{re.escape(member)}' type_id=(\d+)", found.group(1), re.M)
    if not member_line:
        raise NetlabError(f"BTF: struct {struct} has no member {member}")
    kind, _, rest = _type(dump, int(member_line.group(1)))
    if kind != "PTR":
        raise NetlabError(f"BTF: {struct}.{member} is a {kind}, not a function pointer")
    kind, _, rest = _type(dump, _refers(rest))
    if kind != "FUNC_PROTO":
        raise NetlabError(f"BTF: {struct}.{member} does not point to a function")
    return _type_name(dump, _refers(rest, "ret_type_id"))
