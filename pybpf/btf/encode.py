"""``encode``: a ``BTF`` back to ``.BTF`` section bytes (``parse(encode(btf)) == btf``)."""

from __future__ import annotations

import sys
from array import array
from collections.abc import Callable

from ..errors import BTFError
from .layout import HEADER_SIZE as _HEADER_SIZE
from .layout import MAGIC as _MAGIC
from .spec import BTF
from .strings import StringTableBuilder
from .types import (
    Array,
    Datasec,
    DeclTag,
    Enum,
    Enum64,
    Float,
    Func,
    FuncProto,
    Fwd,
    Int,
    Struct,
    Type,
    TypeTag,
    Union,
    Var,
)

_U32 = 0xFFFFFFFF


def string_table(btf: BTF) -> StringTableBuilder:
    """The string section ``encode`` writes for ``btf``: its own types' names in id order."""
    table = StringTableBuilder(len(btf.base.strings) if btf.base is not None else 0)
    for t in btf.own_types():
        for name in _names(t):
            table.add(name)
    return table


def encode(btf: BTF, *, byteorder: str = sys.byteorder) -> bytes:
    """The ``.BTF`` bytes of ``btf``'s own types (split BTF leaves its base out); ``byteorder`` "little" or "big"."""
    if byteorder not in ("little", "big"):
        raise ValueError(f"byteorder must be 'little' or 'big', not {byteorder!r}")
    strings = string_table(btf)
    words = array("I")
    for t in btf.own_types():
        try:
            _encode_type(t, strings.add, words)
        except (OverflowError, ValueError) as err:
            raise BTFError(f"cannot encode {t.describe()}: {err}") from None
    if byteorder != sys.byteorder:
        words.byteswap()
    str_data = strings.encode()
    type_len = len(words) * 4
    header = array("I", [_HEADER_SIZE, 0, type_len, type_len, len(str_data)])
    if byteorder != sys.byteorder:
        header.byteswap()
    magic = _MAGIC.to_bytes(2, "little" if byteorder == "little" else "big") + bytes([1, 0])
    return magic + header.tobytes() + words.tobytes() + str_data


def _names(t: Type) -> list[str]:
    names = [t.name]
    if isinstance(t, (Struct, Union)):
        names += [m.name for m in t.members]
    elif isinstance(t, (Enum, Enum64)):
        names += [v.name for v in t.values]
    elif isinstance(t, FuncProto):
        names += [p.name for p in t.params]
    return names


def _u32(value: int, what: str) -> int:
    if not 0 <= value <= _U32:
        raise ValueError(f"{what} {value} does not fit in 32 bits")
    return value


def _head(words: array[int], name_off: int, t: Type, vlen: int, kflag: bool, size_or_type: int) -> None:
    if not 0 <= vlen <= 0xFFFF:
        raise ValueError(f"{vlen} items do not fit in vlen (16 bits)")
    words.extend((name_off, (int(kflag) << 31) | (t.kind << 24) | vlen, _u32(size_or_type, "size/type")))


def _encode_type(t: Type, add: Callable[[str], int], words: array[int]) -> None:
    name = add(t.name)
    if isinstance(t, Int):
        if not (0 <= t.bits <= 0xFF and 0 <= t.offset <= 0xFF and 0 <= t.encoding <= 0xF):
            raise ValueError(f"bits {t.bits}, offset {t.offset} or encoding {int(t.encoding)} out of range")
        _head(words, name, t, 0, False, t.size)
        words.append((int(t.encoding) << 24) | (t.offset << 16) | t.bits)
    elif isinstance(t, Array):
        _head(words, name, t, 0, False, 0)
        words.extend((_u32(t.type, "type"), _u32(t.index_type, "index type"), _u32(t.nelems, "nelems")))
    elif isinstance(t, (Struct, Union)):
        bitfields = any(m.bitfield_size for m in t.members)
        _head(words, name, t, len(t.members), bitfields, t.size)
        for m in t.members:
            if bitfields:
                if not (0 <= m.offset <= 0xFFFFFF and 0 <= m.bitfield_size <= 0xFF):
                    raise ValueError(f"member {m.name!r}: offset {m.offset} or bitfield size {m.bitfield_size} out of range")
                offset = (m.bitfield_size << 24) | m.offset
            else:
                offset = _u32(m.offset, f"member {m.name!r} offset")
            words.extend((add(m.name), _u32(m.type, "member type"), offset))
    elif isinstance(t, Enum):
        _head(words, name, t, len(t.values), t.signed, t.size)
        low, high = (-(1 << 31), (1 << 31) - 1) if t.signed else (0, _U32)
        for v in t.values:
            if not low <= v.value <= high:
                raise ValueError(f"enumerator {v.name!r} = {v.value} does not fit in 32 bits")
            words.extend((add(v.name), v.value & _U32))
    elif isinstance(t, Enum64):
        _head(words, name, t, len(t.values), t.signed, t.size)
        low, high = (-(1 << 63), (1 << 63) - 1) if t.signed else (0, (1 << 64) - 1)
        for v in t.values:
            if not low <= v.value <= high:
                raise ValueError(f"enumerator {v.name!r} = {v.value} does not fit in 64 bits")
            raw = v.value & ((1 << 64) - 1)
            words.extend((add(v.name), raw & _U32, raw >> 32))
    elif isinstance(t, Fwd):
        _head(words, name, t, 0, t.union, 0)
    elif isinstance(t, Func):
        _head(words, name, t, t.linkage, False, t.type)
    elif isinstance(t, FuncProto):
        _head(words, name, t, len(t.params), False, t.type)
        for p in t.params:
            words.extend((add(p.name), _u32(p.type, "parameter type")))
    elif isinstance(t, Var):
        _head(words, name, t, 0, False, t.type)
        words.append(_u32(t.linkage, "linkage"))
    elif isinstance(t, Datasec):
        _head(words, name, t, len(t.vars), False, t.size)
        for secinfo in t.vars:
            words.extend((_u32(secinfo.type, "variable type"), _u32(secinfo.offset, "offset"), _u32(secinfo.size, "size")))
    elif isinstance(t, Float):
        _head(words, name, t, 0, False, t.size)
    elif isinstance(t, DeclTag):
        if not -(1 << 31) <= t.component_idx < (1 << 31):
            raise ValueError(f"component_idx {t.component_idx} does not fit in 32 bits")
        _head(words, name, t, 0, t.attribute, t.type)
        words.append(t.component_idx & _U32)
    elif isinstance(t, TypeTag):
        _head(words, name, t, 0, t.attribute, t.type)
    else:  # Pointer, Typedef, Volatile, Const, Restrict
        _head(words, name, t, 0, False, t.type)  # type: ignore[attr-defined]
