"""The ``.BTF`` wire layout in one place: the header, the size of each kind's record, and in-place
patches of records (loaders fix up or rewrite types without moving the string section, which
``.BTF.ext`` line records point into).
"""

from __future__ import annotations

import struct
import sys
from array import array

from ..errors import BTFError
from .types import Kind

MAGIC = 0xEB9F
"""``BTF_MAGIC``, in the byte order of the data."""

HEADER_SIZE = 24
"""``sizeof(struct btf_header)``."""

HEADER = struct.Struct("=HBBIIIII")
"""``struct btf_header`` in native order: magic, version, flags, hdr_len, type_off, type_len, str_off, str_len."""

TYPE_SIZE = 12
"""``sizeof(struct btf_type)``: name_off, info, size/type."""

MAX_TYPES = 0xFFFFF
"""``BTF_MAX_TYPE``: type ids are 20 bits."""

# words after the 3-word ``struct btf_type`` head: fixed, and per ``vlen`` item (-1: not a kind)
FIXED_WORDS = [-1, 1, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0] + [-1] * 12
PER_ITEM_WORDS = [0, 0, 0, 0, 3, 3, 2, 0, 0, 0, 0, 0, 0, 2, 0, 3, 0, 0, 0, 3] + [0] * 12


def record_words(info: int) -> int:
    """Words in a type record whose ``info`` word is ``info`` (-1 for an unknown kind)."""
    kind = (info >> 24) & 0x1F
    fixed = FIXED_WORDS[kind]
    return -1 if fixed < 0 else 3 + fixed + PER_ITEM_WORDS[kind] * (info & 0xFFFF)


def index_records(words: array[int], first: int) -> tuple[array[int], array[int]]:
    """Where each type record of a type section starts (in words) and its name offset, checking
    every kind and length against the words left. ``first`` is the id of the first type (for messages).

    The hot loop of parsing vmlinux's 125k types: one bounds check per record (an ``IndexError``
    means a truncated head), the last record's length checked once after the loop."""
    fixed, per_item = FIXED_WORDS, PER_ITEM_WORDS
    starts: list[int] = []
    append = starts.append
    pos, total = 0, len(words)
    try:
        while pos < total:
            info = words[pos + 1]
            kind = (info >> 24) & 0x1F
            extra = fixed[kind]
            if extra < 0:
                raise BTFError(f"type [{first + len(starts)}]: unknown kind {kind}")
            append(pos)
            pos += 3 + extra + per_item[kind] * (info & 0xFFFF)
    except IndexError:
        raise BTFError(f"type [{first + len(starts)}]: truncated record ({(total - pos) * 4} bytes left of 12)") from None
    if pos > total:
        last = starts[-1]
        if last + 3 > total:
            raise BTFError(f"type [{first + len(starts) - 1}]: truncated record ({(total - last) * 4} bytes left of 12)")
        info = words[last + 1]
        raise BTFError(
            f"type [{first + len(starts) - 1}] ({Kind((info >> 24) & 0x1F).name}, vlen {info & 0xFFFF}): "
            f"needs {(pos - last) * 4} bytes, {(total - last) * 4} left in the type section"
        )
    if first + len(starts) > MAX_TYPES + 1:
        raise BTFError(f"more than {MAX_TYPES} BTF types")
    if pos != total or (starts and starts[-1] + 3 > total):
        raise BTFError(f"type [{first + len(starts)}]: truncated record")
    return array("I", starts), array("I", [words[at] for at in starts])


def type_section(data: bytes | bytearray) -> tuple[int, int]:
    """``(start, end)`` byte offsets of the type section of native-order BTF ``data``."""
    if len(data) < HEADER_SIZE:
        raise BTFError(f"BTF data too short for its header ({len(data)} of {HEADER_SIZE} bytes)")
    magic, _, _, hdr_len, type_off, type_len, _, _ = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise BTFError(f"BTF magic {magic:#x} is not {MAGIC:#x} in this machine's byte order ({sys.byteorder})")
    start = hdr_len + type_off
    if start + type_len > len(data) or start % 4 and type_len:
        raise BTFError(f"BTF type section ({start}+{type_len}) runs past the data ({len(data)} bytes)")
    return start, start + type_len


def record_offsets(data: bytes | bytearray) -> list[int]:
    """The byte offset in native-order BTF ``data`` of each of its type records, in id order."""
    start, end = type_section(data)
    words = array("I", bytes(data[start:end]))
    offsets, _ = index_records(words, 1)
    return [start + 4 * word for word in offsets]


def set_datasec(data: bytearray, at: int, size: int, secinfos: list[tuple[int, int, int]]) -> None:
    """Rewrite the DATASEC record at byte ``at``: its ``size`` and its ``(type, offset, size)``
    variables (as many as the record has)."""
    _, info, _ = struct.unpack_from("=III", data, at)
    if (info >> 24) & 0x1F != Kind.DATASEC or info & 0xFFFF != len(secinfos):
        raise BTFError(f"the record at byte {at} is not a DATASEC of {len(secinfos)} variables")
    struct.pack_into("=I", data, at + 8, size)
    for i, record in enumerate(secinfos):
        struct.pack_into("=III", data, at + TYPE_SIZE + 12 * i, *record)


def set_var(data: bytearray, at: int, type_id: int, linkage: int) -> None:
    """Rewrite the VAR record at byte ``at``: its type and linkage."""
    _, info, _ = struct.unpack_from("=III", data, at)
    if (info >> 24) & 0x1F != Kind.VAR:
        raise BTFError(f"the record at byte {at} is not a VAR")
    struct.pack_into("=I", data, at + 8, type_id)
    struct.pack_into("=I", data, at + TYPE_SIZE, linkage)


def set_func_linkage(data: bytearray, at: int, linkage: int) -> None:
    """Rewrite the linkage (``vlen``) of the FUNC record at byte ``at``."""
    _, info, _ = struct.unpack_from("=III", data, at)
    if (info >> 24) & 0x1F != Kind.FUNC:
        raise BTFError(f"the record at byte {at} is not a FUNC")
    struct.pack_into("=I", data, at + 4, (info & ~0xFFFF) | linkage)


def datasec_to_struct(data: bytearray, at: int, member_type: int, member_size: int) -> None:
    """Rewrite the DATASEC record at byte ``at`` into an anonymous STRUCT of as many unnamed
    ``member_type`` members, ``member_size`` bytes apart (the same record length: both kinds
    have 12-byte items). For kernels or sections where a DATASEC cannot stand."""
    _, info, _ = struct.unpack_from("=III", data, at)
    if (info >> 24) & 0x1F != Kind.DATASEC:
        raise BTFError(f"the record at byte {at} is not a DATASEC")
    vlen = info & 0xFFFF
    struct.pack_into("=III", data, at, 0, (Kind.STRUCT << 24) | vlen, vlen * member_size)
    for i in range(vlen):
        struct.pack_into("=III", data, at + TYPE_SIZE + 12 * i, 0, member_type, i * member_size * 8)
