"""How bytes become rows: bpftool output parsers, struct layouts as data, bulk decoders.

- :mod:`~netlab.decoders.layout` loads ``layouts/cilium.json`` (Cilium LB and sockops
  structs across versions, each citing its source) and detects a map's layout from its
  (possibly truncated) name and key/value sizes.
- :mod:`~netlab.decoders.bpftool` parses ``bpftool map dump``/``lookup`` text and JSON.
- :mod:`~netlab.decoders.bulk` decodes/encodes many entries at once with numpy.
- :mod:`~netlab.decoders.cilium` gives the sockmap and service/backend views.
"""

from netlab.decoders.addresses import ip_to_hex
from netlab.decoders.bpftool import (
    MapEntry,
    bpftool_key_hex,
    bpftool_map_delete_argv,
    parse_map_dump,
    parse_map_dump_json,
    parse_map_dump_text,
)
from netlab.decoders.bulk import decode_entries, decode_struct, encode
from netlab.decoders.cilium import (
    decode_lb_backends,
    decode_lb_services,
    decode_map,
    decode_sockmap,
    hex_to_port,
    hex_to_ports,
    lb_service_table,
    sockmap_entries_per_ip,
)
from netlab.decoders.layout import (
    Field,
    MapLayout,
    StructLayout,
    detect_layout,
    map_layout,
    map_layouts,
    struct_layout,
)

__all__ = [
    "Field",
    "MapEntry",
    "MapLayout",
    "StructLayout",
    "bpftool_key_hex",
    "bpftool_map_delete_argv",
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
