"""Values decoded by their BTF type: what ``bpftool map dump`` prints as ``formatted``."""

from __future__ import annotations

import struct
import sys
from typing import Any

from .spec import BTF
from .types import Array, Enum, Enum64, Float, Int, IntEncoding, Pointer, Struct, Type, Union

_MAX_DEPTH = 32


def format_value(btf: BTF, type_id: int | Type, data: bytes | memoryview) -> Any:
    """``data`` as its BTF type says: ints, floats, dicts for structs and unions, lists for
    arrays (``char`` arrays as text), enum values as numbers; what BTF cannot say stays hex."""
    return _value(btf, type_id, bytes(data), 0, 0)


def _int(data: bytes, offset: int, size: int, signed: bool) -> int:
    return int.from_bytes(data[offset : offset + size], sys.byteorder, signed=signed)


def _value(btf: BTF, type_id: int | Type, data: bytes, offset: int, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise ValueError("BTF type nesting too deep to format")
    t = btf.resolve(type_id)
    if isinstance(t, Int):
        if t.encoding & IntEncoding.BOOL:
            return bool(_int(data, offset, t.size, False))
        return _int(data, offset, t.size, bool(t.encoding & IntEncoding.SIGNED))
    if isinstance(t, Enum | Enum64):
        return _int(data, offset, t.size, t.signed)
    if isinstance(t, Pointer):
        return _int(data, offset, 8, False)
    if isinstance(t, Float) and t.size in (4, 8):
        return struct.unpack_from("=f" if t.size == 4 else "=d", data, offset)[0]
    if isinstance(t, Array):
        element = btf.resolve(t.type)
        size = btf.sizeof(element)
        if isinstance(element, Int) and size == 1 and (element.encoding & IntEncoding.CHAR or element.name == "char"):
            return data[offset : offset + t.nelems].split(b"\0", 1)[0].decode(errors="replace")
        return [_value(btf, element, data, offset + i * size, depth + 1) for i in range(t.nelems)]
    if isinstance(t, Struct | Union):
        out: dict[str, Any] = {}
        for member in t.members:
            if member.bitfield_size:
                word = int.from_bytes(data[offset : offset + t.size], sys.byteorder)
                out[member.name] = (word >> member.offset) & ((1 << member.bitfield_size) - 1)
            else:
                out[member.name or f"@{member.offset // 8}"] = _value(btf, member.type, data, offset + member.offset // 8, depth + 1)
        return out
    size = btf.sizeof(t) if not isinstance(t, Type) or t.kind.name != "VOID" else 0
    return data[offset : offset + size].hex()
