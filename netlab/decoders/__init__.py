"""How bytes become rows: bpftool output parsers, struct layouts as data, bulk decoders.

- :mod:`~netlab.decoders.layout` loads ``layouts/cilium.json`` (Cilium LB and sockops
  structs across versions, each citing its source) and detects a map's layout from its
  (possibly truncated) name and key/value sizes.
- :mod:`~netlab.decoders.bpftool` parses ``bpftool map dump``/``lookup`` text and JSON.
- :mod:`~netlab.decoders.bulk` decodes/encodes many entries at once with numpy.
- :mod:`~netlab.decoders.cilium` gives the sockmap and service/backend views.
- :mod:`~netlab.decoders.paste` strips what people add around pasted output and cuts a
  paste into blocks; :mod:`~netlab.decoders.detect` tells each block's kind and decodes it
  (:func:`decode`, ``netlab decode``) with the kit's parsers, including
  :mod:`~netlab.decoders.stacks` (kernel stacks), :mod:`~netlab.decoders.ftrace` (trace
  events) and :mod:`~netlab.decoders.bpftool_show` (prog/map show, cgroup tree).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Each public name and the module that defines it, loaded on first use (PEP 562): the
# parsers are stdlib-only, the bulk decoders need numpy and pandas, and the lab imports
# the parsers on nodes that have neither (netlab.ship).
_HOME = {
    "ip_to_hex": "addresses",
    **dict.fromkeys(["MapEntry", "bpftool_key_hex", "bpftool_map_delete_argv", "parse_map_dump",
                     "parse_map_dump_json", "parse_map_dump_text"], "bpftool"),
    **dict.fromkeys(["decode_entries", "decode_struct", "encode"], "bulk"),
    **dict.fromkeys(["decode_lb_backends", "decode_lb_services", "decode_map", "decode_sockmap", "hex_to_port",
                     "hex_to_ports", "lb_service_table", "sockmap_entries_per_ip"], "cilium"),
    "DecodedPaste": "decoded",
    **dict.fromkeys(["Field", "MapLayout", "StructLayout", "detect_layout", "map_layout", "map_layouts",
                     "struct_layout"], "layout"),
}  # fmt: skip

if TYPE_CHECKING:
    from netlab.decoders.decoded import DecodedPaste


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def decode(text: str, kind: str | None = None, layout: str | None = None) -> DecodedPaste:
    """Decode pasted command output, decoration and all: see :func:`netlab.decoders.detect.decode`."""
    from netlab.decoders.detect import decode as _decode  # the collectors' parsers load on first use

    return _decode(text, kind=kind, layout=layout)


__all__ = [
    "Field",
    "MapEntry",
    "MapLayout",
    "StructLayout",
    "bpftool_key_hex",
    "bpftool_map_delete_argv",
    "DecodedPaste",
    "decode",
    "decode_entries",
    "decode_lb_backends",
    "decode_lb_services",
    "decode_map",
    "decode_sockmap",
    "decode_struct",
    "detect_layout",
    "encode",
    "hex_to_port",
    "hex_to_ports",
    "ip_to_hex",
    "lb_service_table",
    "map_layout",
    "map_layouts",
    "parse_map_dump",
    "parse_map_dump_json",
    "parse_map_dump_text",
    "sockmap_entries_per_ip",
    "struct_layout",
]
