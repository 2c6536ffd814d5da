"""bpftool map dump / lookup parsers on published output and on edge cases."""

from __future__ import annotations

import pytest

from netlab.decoders import (
    bpftool_key_hex,
    bpftool_map_delete_argv,
    parse_map_dump,
    parse_map_dump_json,
    parse_map_dump_text,
)
from netlab.errors import DecodeError

from .conftest import sample_text


def h(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


def test_one_line_entries_with_found_trailer():
    entries = parse_map_dump(sample_text("bpftool_map_dump_cilium_egress_v4_01.txt"))
    assert [e.key for e in entries] == [
        h("30 00 00 00 0a 00 00 1f ac 12 00 00"),
        h("30 00 00 00 0a 00 01 d1 ac 12 00 00"),
        h("30 00 00 00 0a 00 02 0e ac 12 00 00"),
    ]
    assert {e.value for e in entries} == {h("ac 12 00 03 ac 12 00 03")}


def test_multi_line_entry_after_head():
    (entry,) = parse_map_dump(sample_text("bpftool_map_dump_cilium_ipcache_01.txt"))
    assert entry.key == h("40 00 00 00 00 00 00 01 0a 00 00 b9") + bytes(12)
    assert entry.value == h("fe 6f 00 00") + bytes(8)
    assert entry.line == 2


def test_author_comment_after_hex_is_noise():
    (entry,) = parse_map_dump(sample_text("bpftool_map_dump_cilium_policy_01.txt"))
    assert entry.key == h("c7 8f 04 00 00 50 06 00")
    assert entry.value == bytes(24)


def test_several_dumps_and_empty_maps():
    entries = parse_map_dump(sample_text("bpftool_map_dump_hash_u16key_01.txt"))
    assert [(e.key, e.value) for e in entries] == [
        (h("09 03"), h("00")),
        (h("07 00"), h("00")),
        (h("4d 00"), h("00")),
    ]
    assert int.from_bytes(entries[0].key, "little") == 777


def test_two_lookups_with_their_command_lines():
    ipcache, lxc = parse_map_dump(sample_text("bpftool_map_lookup_cilium_ipcache_lxc_02.txt"))
    assert ipcache.value == h("e3 d1 00 00 ac 12 00 05 00 00 00 00")
    assert lxc.key == h("0a 00 01 6e") + bytes(12) + h("01 00 00 00")
    assert len(lxc.value) == 48 and lxc.value[6:8] == h("d6 07")


def test_grep_fragments_of_the_sockmap_need_the_key_size():
    text = sample_text("bpftool_map_dump_cilium_sock_ops_01.txt")
    with pytest.raises(DecodeError, match=r"line 2: 44 bytes of hex without a 'key:'"):
        parse_map_dump(text)
    a, b = parse_map_dump(text, key_size=44)
    assert a.key[:4] == h("0a 0a 86 30") and a.key[16:20] == h("0a 0a 65 f9")
    assert b.key[:4] == h("0a 0a 65 f9") and b.value is None


def test_fragment_of_the_wrong_length_is_refused():
    text = "--\n0a 0a 86 30 00 00 00 00\n--\n"
    with pytest.raises(DecodeError, match="line 2: 8 bytes"):
        parse_map_dump_text(text, key_size=44)


def test_json_sockhash_errors_and_odd_spaces():
    one, two = parse_map_dump(sample_text("bpftool_map_dump_json_sockhash_03.txt"))
    assert one.value is None and one.error == "Operation not supported"
    assert one.key[16:18] == h("03 e8") and two.key[16:18] == h("a1 86")
    assert len(one.key) == 24


def test_json_per_cpu_formatted_and_stream():
    text = """$ bpftool -j map dump id 5
[{"key":["0x01","0x00"],"values":[{"cpu":0,"value":["0x02"]},{"cpu":1,"value":["0x03"]}]}]
$ bpftool -j map dump id 6
[{"key":["0x0a"],"value":["0xff"],"formatted":{"key":10,"value":255}}]
"""
    pc, plain = parse_map_dump(text)
    assert pc.value is None and pc.per_cpu == (b"\x02", b"\x03")
    assert plain.value == b"\xff" and plain.formatted == {"key": 10, "value": 255}


def test_json_btf_only_output_is_refused_with_a_hint():
    with pytest.raises(DecodeError, match="entry 0 key is not a hex byte array.*-j"):
        parse_map_dump_json('[{"key": 0, "value": {"a": 1}}]')


def test_json_bad_byte_names_entry_and_index():
    with pytest.raises(DecodeError, match=r"entry 1 value\[1\]"):
        parse_map_dump('[{"key":["0x01"],"value":["0x01"]},{"key":["0x02"],"value":["0x01","zz"]}]')


def test_text_per_cpu_and_error_values():
    text = """key:
01 00 00 00
value (CPU 00): 05 00 00 00
value (CPU 01): 06 00 00 00
key: 02 00 00 00  value: <no entry>
$ bpftool map dump pinned /sys/fs/bpf/cilium_sock_ops
key:
0a 0a 86 30 00 00 00 00  00 00 00 00 00 00 00 00
0a 0a 65 f9 00 00 00 00  00 00 00 00 00 00 00 00
01 00 00 00 1f 90 00 00  db 78 00 00
value:
Operation not supported
"""
    pc, missing, sock = parse_map_dump_text(text)
    assert pc.per_cpu == (h("05 00 00 00"), h("06 00 00 00"))
    assert missing.error == "<no entry>" and missing.value is None
    assert sock.error == "Operation not supported" and len(sock.key) == 44


def test_lookup_one_liner():
    (entry,) = parse_map_dump(sample_text("bpftool_map_lookup_lb4_backends_01.txt"))
    assert entry.key == h("0a 00") and entry.value == h("0a 00 00 1b 00 50 00 00")


def test_found_count_is_checked():
    text = "key: 01  value: 02\nFound 2 elements\n"
    with pytest.raises(DecodeError, match="line 2: bpftool says 2 elements but 1"):
        parse_map_dump(text)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("key: 01 02\nvalue: 03\nkey: 01\nvalue: 03\n", "line 3: key has 1 bytes"),
        ("key: 01  value: 02\nhello there\n", "line 2: not bpftool map output"),
        ("key: 0x01  value: 02\n", "line 1: key bytes are not hex"),
        ("value: 02\n", "line 1: 'value:' without a 'key:'"),
        ("key:\nkey: 01  value: 02\n", "line 1: 'key:' without key bytes"),
        ("Error: bpf map lookup elem failed: No such file or directory\n", "line 1: bpftool"),
        ("key: 01 02  value: 03\n", None),
        ("... 00 00 00 00\nkey: 01  value: 02\n", "line 1"),
    ],
)
def test_malformed_text_names_the_line(text, match):
    if match is None:
        assert parse_map_dump_text(text, key_size=2, value_size=1)[0].value == b"\x03"
        with pytest.raises(DecodeError, match="line 1: value has 1 bytes, expected 4"):
            parse_map_dump_text(text, value_size=4)
        return
    with pytest.raises(DecodeError, match=match):
        parse_map_dump(text)


def test_elision_marks_the_dump_partial_so_the_count_is_not_checked():
    text = "key: 01  value: 02\n...\nkey: 03  value: 04\nFound 9 elements\n"
    assert len(parse_map_dump(text)) == 2


def test_key_hex_and_delete_command():
    key = h("0a 0a 86 30")
    assert bpftool_key_hex(key) == "key hex 0a 0a 86 30"
    argv = bpftool_map_delete_argv(key, pinned="/sys/fs/bpf/cilium_sock_ops")
    assert " ".join(argv) == ("bpftool map delete pinned /sys/fs/bpf/cilium_sock_ops key hex 0a 0a 86 30")
    assert bpftool_map_delete_argv(key, map_id=122)[3:5] == ["id", "122"]
    with pytest.raises(DecodeError):
        bpftool_map_delete_argv(key, pinned="/tmp/x; rm -rf /")
    with pytest.raises(DecodeError):
        bpftool_map_delete_argv(key)
