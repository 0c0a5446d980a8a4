"""``parse``: the ``.BTF`` section layout (``struct btf_header``, types, strings) into a ``BTF``.

Parsing first walks the type section once, checking every record's kind and length against the
bytes left, and records where each type starts; types are then decoded (eagerly by default, on
access for ``lazy=True``). Every inconsistency raises ``BTFError`` naming the type and the field.
"""

from __future__ import annotations

import functools
import struct
import sys
from array import array
from collections.abc import Callable
from typing import TypeVar

from ..errors import BTFError
from .layout import HEADER_SIZE, index_records
from .spec import BTF, _Lazy
from .strings import StringTable
from .types import (
    Array,
    Const,
    Datasec,
    DeclTag,
    Enum,
    Enum64,
    EnumValue,
    Float,
    Func,
    FuncLinkage,
    FuncProto,
    Fwd,
    Int,
    IntEncoding,
    Kind,
    Member,
    Param,
    Pointer,
    Restrict,
    Struct,
    Type,
    Typedef,
    TypeTag,
    Union,
    Var,
    VarLinkage,
    VarSecinfo,
    Volatile,
    references,
)

VMLINUX_PATH = "/sys/kernel/btf/vmlinux"


def byte_order(data: bytes) -> str:
    """``"little"`` or ``"big"``: the byte order of BTF or BTF.ext data, told by its magic."""
    if len(data) < 2:
        raise BTFError(f"BTF data too short for its magic ({len(data)} bytes)")
    if data[:2] == b"\x9f\xeb":
        return "little"
    if data[:2] == b"\xeb\x9f":
        return "big"
    raise BTFError(f"bad BTF magic {data[:2].hex()} (expected 9feb or eb9f)")


def parse(data: bytes, *, base: BTF | None = None, lazy: bool = False) -> BTF:
    """Parse ``.BTF`` section data into a ``BTF``; ``base`` for split BTF (a kernel module's).

    ``lazy`` defers decoding each type to its first access (errors in a type show up then).
    """
    data = bytes(data)
    order = byte_order(data)
    end = "<" if order == "little" else ">"
    if len(data) < HEADER_SIZE:
        raise BTFError(f"BTF data too short for its header ({len(data)} of {HEADER_SIZE} bytes)")
    _, version, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(end + "HBBIIIII", data)
    if version != 1:
        raise BTFError(f"unsupported BTF version {version} (expected 1)")
    if not HEADER_SIZE <= hdr_len <= len(data):
        raise BTFError(f"BTF header length {hdr_len} is outside {HEADER_SIZE}..{len(data)}")
    body = len(data) - hdr_len
    for what, off, size in (("type", type_off, type_len), ("string", str_off, str_len)):
        if off + size > body:
            raise BTFError(f"BTF {what} section ({off}+{size}) runs past the end of the data ({body} bytes)")
    if type_off % 4 or type_len % 4:
        raise BTFError(f"BTF type section ({type_off}+{type_len}) is not 4-byte aligned")
    if type_len and str_len and type_off < str_off + str_len and str_off < type_off + type_len:
        raise BTFError("BTF type and string sections overlap")
    strings = StringTable(data[hdr_len + str_off : hdr_len + str_off + str_len], base.strings if base else None)
    words = array("I", data[hdr_len + type_off : hdr_len + type_off + type_len])
    if order != sys.byteorder:
        words.byteswap()
    first = len(base) if base is not None else 1
    offsets, name_offsets = index_records(words, first)
    decoder = _Decoder(words, offsets, strings, first, first + len(offsets))
    btf = BTF._from_parse(len(offsets), _Lazy(decoder.decode, name_offsets), strings, base)
    if not lazy:
        for type_id in range(first, len(btf)):
            btf.type_by_id(type_id)
    return btf


def _s32(value: int) -> int:
    return value - (1 << 32) if value & 0x80000000 else value


class _Decoder:
    """Decodes one type record at a time into the model."""

    __slots__ = ("words", "offsets", "strings", "first", "total", "_by_kind")

    def __init__(self, words: array[int], offsets: array[int], strings: StringTable, first: int, total: int) -> None:
        self.words = words
        self.offsets = offsets
        self.strings = strings
        self.first = first
        self.total = total
        self._by_kind: dict[int, Callable[[int, str, int, int, int, int], Type]] = {
            Kind.INT: self._int,
            Kind.PTR: lambda i, n, v, k, s, p: Pointer(id=i, name=n, type=s),
            Kind.ARRAY: self._array,
            Kind.STRUCT: lambda i, n, v, k, s, p: self._composite(Struct, i, n, v, k, s, p),
            Kind.UNION: lambda i, n, v, k, s, p: self._composite(Union, i, n, v, k, s, p),
            Kind.ENUM: self._enum,
            Kind.FWD: lambda i, n, v, k, s, p: Fwd(id=i, name=n, union=bool(k)),
            Kind.TYPEDEF: lambda i, n, v, k, s, p: Typedef(id=i, name=n, type=s),
            Kind.VOLATILE: lambda i, n, v, k, s, p: Volatile(id=i, name=n, type=s),
            Kind.CONST: lambda i, n, v, k, s, p: Const(id=i, name=n, type=s),
            Kind.RESTRICT: lambda i, n, v, k, s, p: Restrict(id=i, name=n, type=s),
            Kind.FUNC: self._func,
            Kind.FUNC_PROTO: self._func_proto,
            Kind.VAR: self._var,
            Kind.DATASEC: self._datasec,
            Kind.FLOAT: lambda i, n, v, k, s, p: Float(id=i, name=n, size=s),
            Kind.DECL_TAG: lambda i, n, v, k, s, p: DeclTag(
                id=i, name=n, type=s, component_idx=_s32(self.words[p]), attribute=bool(k)
            ),
            Kind.TYPE_TAG: lambda i, n, v, k, s, p: TypeTag(id=i, name=n, type=s, attribute=bool(k)),
            Kind.ENUM64: self._enum64,
        }

    def decode(self, index: int) -> Type:
        """The type at ``index`` (id ``first + index``), with its references checked."""
        pos = self.offsets[index]
        w = self.words
        info = w[pos + 1]
        kind = (info >> 24) & 0x1F
        type_id = self.first + index
        try:
            t = self._by_kind[kind](type_id, self.strings[w[pos]], info & 0xFFFF, info >> 31, w[pos + 2], pos + 3)
        except BTFError as err:
            raise BTFError(f"type [{type_id}] ({Kind(kind).name}): {err}") from None
        for where, ref in references(t):
            if ref >= self.total:
                raise BTFError(f"{t.describe()}: {where} refers to type {ref}, past the last type {self.total - 1}")
        return t

    def _int(self, i: int, name: str, vlen: int, kflag: int, size: int, pos: int) -> Type:
        raw = self.words[pos]
        return Int(id=i, name=name, size=size, encoding=IntEncoding((raw >> 24) & 0xF), offset=(raw >> 16) & 0xFF, bits=raw & 0xFF)

    def _array(self, i: int, name: str, vlen: int, kflag: int, size: int, pos: int) -> Type:
        w = self.words
        return Array(id=i, name=name, type=w[pos], index_type=w[pos + 1], nelems=w[pos + 2])

    def _composite(self, cls: type[Struct | Union], i: int, name: str, vlen: int, kflag: int, size: int, pos: int) -> Type:
        w, s = self.words, self.strings
        members = []
        for at in range(pos, pos + 3 * vlen, 3):
            offset = w[at + 2]
            if kflag:
                members.append(Member(name=s[w[at]], type=w[at + 1], offset=offset & 0xFFFFFF, bitfield_size=offset >> 24))
            else:
                members.append(Member(name=s[w[at]], type=w[at + 1], offset=offset))
        return cls(id=i, name=name, size=size, members=tuple(members))

    def _enum(self, i: int, name: str, vlen: int, kflag: int, size: int, pos: int) -> Type:
        w, s = self.words, self.strings
        conv = _s32 if kflag else int
        values = tuple(EnumValue(name=s[w[at]], value=conv(w[at + 1])) for at in range(pos, pos + 2 * vlen, 2))
        return Enum(id=i, name=name, size=size, values=values, signed=bool(kflag))

    def _enum64(self, i: int, name: str, vlen: int, kflag: int, size: int, pos: int) -> Type:
        w, s = self.words, self.strings
        values = []
        for at in range(pos, pos + 3 * vlen, 3):
            value = w[at + 1] | (w[at + 2] << 32)
            if kflag and value >> 63:
                value -= 1 << 64
            values.append(EnumValue(name=s[w[at]], value=value))
        return Enum64(id=i, name=name, size=size, values=tuple(values), signed=bool(kflag))

    def _func(self, i: int, name: str, vlen: int, kflag: int, size: int, pos: int) -> Type:
        return Func(id=i, name=name, type=size, linkage=_enum_or_int(FuncLinkage, vlen))

    def _func_proto(self, i: int, name: str, vlen: int, kflag: int, size: int, pos: int) -> Type:
        w, s = self.words, self.strings
        params = tuple(Param(name=s[w[at]], type=w[at + 1]) for at in range(pos, pos + 2 * vlen, 2))
        return FuncProto(id=i, name=name, type=size, params=params)

    def _var(self, i: int, name: str, vlen: int, kflag: int, size: int, pos: int) -> Type:
        return Var(id=i, name=name, type=size, linkage=_enum_or_int(VarLinkage, self.words[pos]))

    def _datasec(self, i: int, name: str, vlen: int, kflag: int, size: int, pos: int) -> Type:
        w = self.words
        secinfo = tuple(VarSecinfo(type=w[at], offset=w[at + 1], size=w[at + 2]) for at in range(pos, pos + 3 * vlen, 3))
        return Datasec(id=i, name=name, size=size, vars=secinfo)


_E = TypeVar("_E", FuncLinkage, VarLinkage)


def _enum_or_int(cls: type[_E], value: int) -> _E | int:
    """``cls(value)`` when ``value`` is a known member, else the plain int (kept for round trips)."""
    try:
        return cls(value)
    except ValueError:
        return value


@functools.cache
def vmlinux() -> BTF:
    """The running kernel's BTF, parsed lazily from ``/sys/kernel/btf/vmlinux`` (cached)."""
    try:
        with open(VMLINUX_PATH, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"{VMLINUX_PATH} is missing: this kernel was built without CONFIG_DEBUG_INFO_BTF") from None
    return parse(data, lazy=True)
