"""Python types from BTF, built once per type: what maps decode to, and what ``map dump`` prints.

``Layout`` is the one walk over a BTF type (sizes, offsets, bitfields, strings, enums checked
against the BTF); from it come both a ctypes type for a map's keys and values (``ctype``) and
bpftool's ``formatted`` JSON (``format``). A ctypes type is made only when ctypes reproduces the
BTF layout exactly (every ``sizeof`` and offset is verified); otherwise the map keeps bytes and a
``BTFTypeWarning`` says why: never a wrong value.

At the top of a key or value: integers and pointers give ``int``; a named enum gives its
``IntEnum`` (an int for values outside it); floats give ``float``; ``char[N]`` gives ``bytes``;
structs, unions, other arrays and data sections (``.data``/``.bss``/``.rodata``) give ctypes
instances with the BTF field names (inside them ctypes' own rules apply: enums read as ints,
``char`` arrays as bytes up to the first NUL).
"""

from __future__ import annotations

import ctypes
import enum
import keyword
import struct
import sys
import warnings
import weakref
from typing import Any

from ..errors import BTFError
from .spec import BTF
from .types import (
    MODIFIERS,
    Array,
    Datasec,
    Enum,
    Enum64,
    Float,
    Int,
    IntEncoding,
    Pointer,
    Struct,
    Typedef,
    Union,
    Var,
)

MAX_ITEMS = 1 << 20
"""The most elements (scalars, array items, members) one value may format to; past it, ``ValueError``."""

MAX_DEPTH = 32
"""The deepest nesting of structs and arrays followed (deeper BTF is refused as hostile)."""


class BTFTypeWarning(UserWarning):
    """A BTF type that ctypes cannot express exactly: the map keeps returning bytes for it."""


_SIGNED = {1: ctypes.c_int8, 2: ctypes.c_int16, 4: ctypes.c_int32, 8: ctypes.c_int64}
_UNSIGNED = {1: ctypes.c_uint8, 2: ctypes.c_uint16, 4: ctypes.c_uint32, 8: ctypes.c_uint64}
_FLOATS: dict[int, type[ctypes.c_float] | type[ctypes.c_double]] = {4: ctypes.c_float, 8: ctypes.c_double}
_RESERVED = {"_fields_", "_pack_", "_anonymous_", "_align_", "_layout_", "_swappedbytes_", "_b_base_", "_b_needsfree_", "_objects"}


class Layout:
    """One BTF type as laid out in memory: ``size``, the ctypes type (``ctype``, None with ``why``
    when ctypes cannot express it) and the bpftool-style formatter (``format``)."""

    __slots__ = ("size", "ctype", "why", "name")

    def __init__(self, size: int, ctype: Any, why: str = "", name: str = "") -> None:
        self.size = size
        self.ctype = ctype
        self.why = why
        self.name = name

    def format(self, data: bytes | bytearray | memoryview, offset: int = 0) -> Any:
        """The value at ``offset`` of ``data`` as bpftool's ``formatted`` JSON shows it; ``ValueError``
        past ``MAX_ITEMS`` elements or when ``data`` is too short."""
        raw = bytes(data)
        if offset < 0 or offset + self.size > len(raw):
            raise ValueError(f"{self.size} bytes of {self.name or 'value'} do not fit in {len(raw)} bytes at offset {offset}")
        return self._format(raw, offset, 0, [MAX_ITEMS])

    def _format(self, data: bytes, offset: int, bit: int, budget: list[int]) -> Any:
        _spend(budget, 1)
        return data[offset : offset + self.size].hex()

    def python(self) -> Any:
        """The type a map key or value decodes to (``ctype``, with top-level conversions), or None."""
        return self.ctype

    def decode(self, data: bytes | bytearray | memoryview) -> Any:
        """``size`` bytes as the Python value a map lookup gives (bytes where ctypes cannot say it)."""
        raw = bytes(data[: self.size])
        py = self.python()
        if py is None:
            return raw
        value = py.from_buffer_copy(raw)
        return value.value if isinstance(value, ctypes._SimpleCData) else value

    def encode(self, value: Any, what: str = "value") -> bytes:
        """``value`` as exactly ``size`` bytes, checked against the type (``TypeError``/``ValueError`` naming ``what``)."""
        if isinstance(value, ctypes.Structure | ctypes.Union | ctypes.Array | ctypes._SimpleCData):
            value = bytes(value)
        if isinstance(value, bytes | bytearray | memoryview):
            if len(value) != self.size:
                raise ValueError(f"{what} must be {self.size} bytes, got {len(value)}")
            return bytes(value)
        raise TypeError(f"{what} must be bytes-like or a ctypes instance of {self.size} bytes, not {type(value).__name__}")


def _spend(budget: list[int], count: int) -> None:
    if count > budget[0]:
        raise ValueError(f"value too large to format: more than {MAX_ITEMS} elements (hostile or huge BTF type)")
    budget[0] -= count


def _bits(data: bytes, offset: int, bit: int, width: int) -> int:
    """``width`` bits starting ``bit`` bits into ``data[offset:]`` (little-endian bit numbering on
    little-endian hosts, as the kernel lays bitfields out)."""
    nbytes = (bit + width + 7) // 8
    word = int.from_bytes(data[offset : offset + nbytes], sys.byteorder)
    if sys.byteorder == "little":
        return (word >> bit) & ((1 << width) - 1)
    return (word >> (nbytes * 8 - bit - width)) & ((1 << width) - 1)


class _IntLayout(Layout):
    __slots__ = ("signed", "encoding", "bits", "bit_offset")

    def __init__(self, t: Int) -> None:
        exact = t.bits == t.size * 8 and t.offset == 0 and t.size in _SIGNED
        ctype: Any = None
        why = ""
        if exact and t.encoding & IntEncoding.BOOL and t.size == 1:
            ctype = ctypes.c_bool
        elif exact:
            ctype = (_SIGNED if t.signed else _UNSIGNED)[t.size]
        else:
            why = f"{t.describe()} is a {t.bits}-bit integer at bit {t.offset} of {t.size} bytes"
        super().__init__(t.size, ctype, why, t.name)
        self.signed, self.encoding, self.bits, self.bit_offset = t.signed, t.encoding, t.bits, t.offset

    def encode(self, value: Any, what: str = "value") -> bytes:
        if isinstance(value, int) and self.ctype is not None:
            return _int_bytes(int(value), self.size, self.signed, what)
        return super().encode(value, what)

    def _format(self, data: bytes, offset: int, bit: int, budget: list[int]) -> Any:
        _spend(budget, 1)
        bits = self.bits
        if bit or self.bit_offset or bits % 8:
            return hex(_bits(data, offset, bit + self.bit_offset, bits))
        if bits == 128:
            return hex(int.from_bytes(data[offset : offset + 16], sys.byteorder))
        raw = data[offset : offset + bits // 8]
        if self.encoding & IntEncoding.BOOL:
            return any(raw)
        if self.encoding & IntEncoding.CHAR and len(raw) == 1:
            return chr(raw[0])  # bpftool writes "c" or "\\u00XX": the same character once parsed
        return int.from_bytes(raw, sys.byteorder, signed=bool(self.encoding & IntEncoding.SIGNED))


class _EnumLayout(Layout):
    __slots__ = ("signed", "names", "py")

    def __init__(self, t: Enum | Enum64) -> None:
        base = (_SIGNED if t.signed else _UNSIGNED).get(t.size)
        why = "" if base is not None else f"{t.describe()} is {t.size} bytes"
        super().__init__(t.size, base, why, t.name)
        self.signed = t.signed
        self.names: dict[int, str] = {}
        for v in t.values:
            self.names.setdefault(v.value, v.name)
        self.py: Any = base
        if base is not None and t.name and t.values and not t.signed and all(v.value >= 0 for v in t.values):
            self.py = _enum_ctype(t, base)

    def _format(self, data: bytes, offset: int, bit: int, budget: list[int]) -> Any:
        _spend(budget, 1)
        value = int.from_bytes(data[offset : offset + self.size], sys.byteorder, signed=True)  # as bpftool prints them
        name = self.names.get(value)
        if name is None and value < 0:
            name = self.names.get(value & ((1 << (8 * self.size)) - 1))
        return name if name is not None else value

    def python(self) -> Any:
        return self.py

    def encode(self, value: Any, what: str = "value") -> bytes:
        if isinstance(value, int) and self.ctype is not None:
            return _int_bytes(int(value), self.size, self.signed, what)
        return super().encode(value, what)


def _int_bytes(value: int, size: int, signed: bool, what: str) -> bytes:
    """``value`` in ``size`` native-order bytes; ``ValueError`` naming ``what`` and the range."""
    low, high = (-(1 << (8 * size - 1)), (1 << (8 * size - 1)) - 1) if signed else (0, (1 << (8 * size)) - 1)
    if not low <= value <= high:
        raise ValueError(f"{what} {value} is out of range for its {size}-byte {'signed' if signed else 'unsigned'} type ({low}..{high})")
    return value.to_bytes(size, sys.byteorder, signed=signed)


def _enum_ctype(t: Enum | Enum64, base: Any) -> Any:
    """A one-field Structure that reads as the ``IntEnum`` named like ``t`` (an int outside it)."""
    try:
        members: dict[str, int] = {}
        for v in t.values:
            members.setdefault(v.name, v.value)
        py_enum = enum.IntEnum(t.name, members)  # type: ignore[misc]
    except (ValueError, TypeError):
        return base  # names the enum module refuses (_sunder_, duplicates): plain ints
    unpack = struct.Struct("=" + {1: "B", 2: "H", 4: "I", 8: "Q"}[t.size]).unpack_from

    def from_buffer_copy(cls: type, source: Any, offset: int = 0) -> Any:
        value = unpack(source, offset)[0]
        try:
            return py_enum(value)
        except ValueError:
            return value

    return type(t.name, (ctypes.Structure,), {
        "_pack_": 1, "_fields_": [("value", base)], "enum": py_enum,
        "from_buffer_copy": classmethod(from_buffer_copy),
        "__doc__": f"enum {t.name} as stored in a map: reads as {t.name} (an IntEnum); {t.name}(value) to write",
    })


class _FloatLayout(Layout):
    __slots__ = ("py",)

    def __init__(self, t: Float) -> None:
        base = _FLOATS.get(t.size)
        super().__init__(t.size, base, "" if base else f"{t.describe()} is a {t.size * 8}-bit float", t.name)
        self.py: Any = None
        if base is not None:
            unpack = struct.Struct("=f" if t.size == 4 else "=d").unpack_from

            def from_buffer_copy(cls: type, source: Any, offset: int = 0) -> Any:
                return unpack(source, offset)[0]

            self.py = type(t.name.replace(" ", "_") or "float", (ctypes.Structure,), {
                "_pack_": 1, "_fields_": [("value", base)], "from_buffer_copy": classmethod(from_buffer_copy),
            })

    def _format(self, data: bytes, offset: int, bit: int, budget: list[int]) -> Any:
        _spend(budget, 1)
        if self.size == 4:
            return struct.unpack_from("=f", data, offset)[0]
        if self.size == 8:
            return struct.unpack_from("=d", data, offset)[0]
        return data[offset : offset + self.size].hex()

    def python(self) -> Any:
        return self.py

    def encode(self, value: Any, what: str = "value") -> bytes:
        if isinstance(value, float | int) and not isinstance(value, bool) and self.size in (4, 8):
            return struct.pack("=f" if self.size == 4 else "=d", value)
        return super().encode(value, what)


class _PointerLayout(Layout):
    __slots__ = ()

    def __init__(self, t: Pointer) -> None:
        super().__init__(8, ctypes.c_uint64, "", t.name)

    def _format(self, data: bytes, offset: int, bit: int, budget: list[int]) -> Any:
        _spend(budget, 1)
        return int.from_bytes(data[offset : offset + 8], sys.byteorder)

    def encode(self, value: Any, what: str = "value") -> bytes:
        if isinstance(value, int):
            return _int_bytes(value, 8, False, what)
        return super().encode(value, what)


class _ArrayLayout(Layout):
    __slots__ = ("element", "nelems", "is_char")

    def __init__(self, element: Layout, nelems: int, is_char: bool, name: str) -> None:
        ctype: Any = None
        why = ""
        if is_char:
            ctype = ctypes.c_char * nelems
        elif element.ctype is None:
            why = element.why
        elif element.size == 0 and nelems > MAX_ITEMS:
            why = f"an array of {nelems} zero-size elements"
        else:
            ctype = element.ctype * nelems
        super().__init__(element.size * nelems, ctype, why, name)
        self.element, self.nelems, self.is_char = element, nelems, is_char

    def _format(self, data: bytes, offset: int, bit: int, budget: list[int]) -> Any:
        if self.is_char:
            raw = data[offset : offset + self.nelems]
            end = raw.find(0)
            if end >= 0 and all(0x20 <= c < 0x7F for c in raw[:end]):
                _spend(budget, 1)
                return raw[:end].decode("ascii")
        _spend(budget, self.nelems)  # refused up front: no walk over a hostile count
        element, size = self.element, self.element.size
        budget[0] += self.nelems
        return [element._format(data, offset + i * size, 0, budget) for i in range(self.nelems)]

    def encode(self, value: Any, what: str = "value") -> bytes:
        if self.is_char and isinstance(value, str | bytes | bytearray):
            raw = value.encode() if isinstance(value, str) else bytes(value)
            if len(raw) > self.nelems:
                raise ValueError(f"{what} is {len(raw)} bytes, more than its char[{self.nelems}]")
            return raw + bytes(self.nelems - len(raw))
        return super().encode(value, what)

    def python(self) -> Any:
        if self.is_char and self.ctype is not None:
            def from_buffer_copy(cls: type, source: Any, offset: int = 0) -> Any:
                return bytes(memoryview(source)[offset : offset + self.nelems])

            return type(f"char{self.nelems}", (self.ctype,), {"from_buffer_copy": classmethod(from_buffer_copy)})
        return self.ctype


class _Member:
    __slots__ = ("name", "bit_offset", "bitfield", "layout")

    def __init__(self, name: str, bit_offset: int, bitfield: int, layout: Layout) -> None:
        self.name, self.bit_offset, self.bitfield, self.layout = name, bit_offset, bitfield, layout


class _CompositeLayout(Layout):
    __slots__ = ("members", "union", "section")

    def __init__(self, name: str, size: int, members: list[_Member], union: bool, section: str = "") -> None:
        super().__init__(size, None, "", name)
        self.members, self.union, self.section = members, union, section
        try:
            self.ctype = _composite_ctype(name, size, members, union)
        except _Unexpressible as err:
            self.why = str(err)

    def _format(self, data: bytes, offset: int, bit: int, budget: list[int]) -> Any:
        _spend(budget, 1 + len(self.members))
        budget[0] += len(self.members)
        if self.section:
            return {self.section: [{m.name: m.layout._format(data, offset + m.bit_offset // 8, 0, budget)} for m in self.members]}
        out: dict[str, Any] = {}
        for m in self.members:
            at = offset + m.bit_offset // 8
            if m.bitfield:
                _spend(budget, 1)
                out[m.name] = hex(_bits(data, at, m.bit_offset % 8, m.bitfield))
            else:
                out[m.name] = m.layout._format(data, at, m.bit_offset % 8, budget)
        return out


class _Unexpressible(Exception):
    """ctypes cannot reproduce this layout; the message says why."""


def _composite_ctype(name: str, size: int, members: list[_Member], union: bool) -> Any:
    """A packed ctypes Structure/Union with padding where BTF has gaps, verified against BTF."""
    fields: list[tuple[Any, ...]] = []
    anonymous: list[str] = []
    expect: list[tuple[str, int, int]] = []  # (ctypes name, bit offset, bitfield width)
    seen: set[str] = set()
    named: list[tuple[str, _Member]] = []
    for index, m in enumerate(members):
        if m.layout.ctype is None:
            raise _Unexpressible(f"member {m.name or '(anon)'!r}: {m.layout.why}")
        field_name = m.name or f"_anon{index}"
        if field_name in seen or field_name in _RESERVED or keyword.iskeyword(field_name) or not field_name.isidentifier():
            raise _Unexpressible(f"member name {field_name!r} cannot be a ctypes field")
        seen.add(field_name)
        if not m.name and isinstance(m.layout, _CompositeLayout):
            anonymous.append(field_name)
        named.append((field_name, m))
        expect.append((field_name, m.bit_offset, m.bitfield))
    if union:
        for field_name, m in named:
            if m.bit_offset:
                raise _Unexpressible(f"union member {field_name!r} is at bit {m.bit_offset}, not 0")
            fields.append((field_name, _bitfield_type(m, m.layout.size), m.bitfield) if m.bitfield else (field_name, m.layout.ctype))
    else:
        _struct_fields(sorted(named, key=lambda pair: pair[1].bit_offset), fields)
    base: type = ctypes.Union if union else ctypes.Structure
    attrs: dict[str, Any] = {"_pack_": 1, "_fields_": fields}
    if anonymous:
        attrs["_anonymous_"] = anonymous
    cls_name = name or ("anon_union" if union else "anon_struct")
    try:
        cls = type(cls_name, (base,), attrs)
        if ctypes.sizeof(cls) < size:
            if union:
                fields.append(("_pad_tail", ctypes.c_uint8 * size))
            else:
                _pad(fields, ctypes.sizeof(cls) * 8, size * 8, "_pad_tail")
            cls = type(cls_name, (base,), {**attrs, "_fields_": fields})
    except (TypeError, ValueError, AttributeError, OverflowError) as err:
        raise _Unexpressible(f"ctypes refused the layout: {err}") from None
    _verify(cls, size, expect)
    return cls


def _struct_fields(named: list[tuple[str, _Member]], fields: list[tuple[Any, ...]]) -> None:
    """Fields (with padding) placing each member at its BTF bit offset in a packed Structure.

    A run of bitfields shares storage units of the smallest integer size that covers it, so
    ctypes (which starts a unit at the next byte and continues it while the bits fit) places
    each bit where BTF says."""
    pos = 0  # bits laid out so far
    i = 0
    while i < len(named):
        field_name, m = named[i]
        if m.bit_offset < pos:
            raise _Unexpressible(f"member {field_name!r} at bit {m.bit_offset} overlaps the member before it")
        if not m.bitfield:
            if m.bit_offset % 8:
                raise _Unexpressible(f"member {field_name!r} starts at bit {m.bit_offset}, inside a byte")
            _pad(fields, pos, m.bit_offset, f"_pad{i}")
            fields.append((field_name, m.layout.ctype))
            pos = m.bit_offset + m.layout.size * 8
            i += 1
            continue
        start = max(pos, m.bit_offset - m.bit_offset % 8)
        if start % 8:
            raise _Unexpressible(f"bitfield {field_name!r} cannot start a storage unit at bit {start}")
        _pad(fields, pos, start, f"_pad{i}")
        run = [named[i]]
        j = i + 1
        while j < len(named) and named[j][1].bitfield and named[j][1].bit_offset + named[j][1].bitfield <= start + 64:
            run.append(named[j])
            j += 1
        end = max(r.bit_offset + r.bitfield for _, r in run)
        unit = next((u for u in (1, 2, 4, 8) if start + u * 8 >= end), 0)
        if not unit:
            raise _Unexpressible(f"bitfield {field_name!r} spans more than 64 bits from bit {start}")
        at = start
        for k, (run_name, r) in enumerate(run):
            unit_type = _bitfield_type(r, unit)
            if r.bit_offset > at:
                fields.append((f"_pad{i}_{k}", unit_type, r.bit_offset - at))
            fields.append((run_name, unit_type, r.bitfield))
            at = r.bit_offset + r.bitfield
        pos = start + unit * 8
        if j < len(named) and named[j][1].bit_offset < pos:
            pos = at  # the next member lives inside the unit's tail: ctypes cannot place it there
        i = j


def _pad(fields: list[tuple[Any, ...]], start: int, end: int, name: str) -> None:
    """Pad from bit ``start`` to bit ``end`` (both byte-aligned) with a byte array."""
    if end > start:
        if start % 8 or end % 8:
            raise _Unexpressible(f"a gap from bit {start} to bit {end} is not whole bytes")
        fields.append((name, ctypes.c_uint8 * ((end - start) // 8)))


def _bitfield_type(m: _Member, unit: int) -> Any:
    """The integer ctypes type of ``unit`` bytes for bitfield member ``m`` (its signedness kept)."""
    layout = m.layout
    if not isinstance(layout, _EnumLayout | _IntLayout) or layout.ctype is None:
        raise _Unexpressible(f"bitfield {m.name!r} is not of an integer type ctypes can hold bits of")
    return (_SIGNED if layout.signed else _UNSIGNED)[unit]


def _verify(cls: Any, size: int, expect: list[tuple[str, int, int]]) -> None:
    """Check ``sizeof`` and every member's bit offset and width against BTF."""
    if ctypes.sizeof(cls) != size:
        raise _Unexpressible(f"ctypes lays it out in {ctypes.sizeof(cls)} bytes, BTF says {size}")
    for field_name, bit_offset, width in expect:
        descriptor = getattr(cls, field_name)
        if width:
            if hasattr(descriptor, "bit_size"):  # Python >= 3.14
                bits, within = descriptor.bit_size, descriptor.bit_offset
            else:
                bits, within = descriptor.size >> 16, descriptor.size & 0xFFFF
            if sys.byteorder != "little":
                raise _Unexpressible("bitfields are expressed on little-endian hosts only")
            found = descriptor.offset * 8 + within
        else:
            bits, found = 0, descriptor.offset * 8
        if (found, bits) != (bit_offset, width):
            raise _Unexpressible(f"ctypes puts member {field_name!r} at bit {found} ({bits} bits), BTF at bit {bit_offset} ({width} bits)")


class _Opaque(Layout):
    __slots__ = ("label",)

    def __init__(self, size: int, why: str, label: str) -> None:
        super().__init__(size, None, why, "")
        self.label = label

    def _format(self, data: bytes, offset: int, bit: int, budget: list[int]) -> Any:
        _spend(budget, 1)
        return self.label if not self.size else data[offset : offset + self.size].hex()


class _Maker:
    """Builds and caches the ``Layout`` of each type id of one BTF."""

    def __init__(self, btf: BTF) -> None:
        self.btf = btf
        self.done: dict[int, Layout] = {}
        self.busy: set[int] = set()

    def layout(self, type_id: int, depth: int = 0) -> Layout:
        found = self.done.get(type_id)
        if found is not None:
            return found
        if depth > MAX_DEPTH or type_id in self.busy:
            raise BTFError(f"type [{type_id}] nests deeper than {MAX_DEPTH} levels or contains itself")
        self.busy.add(type_id)
        try:
            made = self._make(type_id, depth)
        finally:
            self.busy.discard(type_id)
        self.done[type_id] = made
        return made

    def _make(self, type_id: int, depth: int) -> Layout:
        btf = self.btf
        t = btf.type_by_id(type_id)
        name = ""
        for _ in range(MAX_DEPTH):
            if not isinstance(t, MODIFIERS):
                break
            if isinstance(t, Typedef) and not name:
                name = t.name
            t = btf.type_by_id(t.type)
        else:
            raise BTFError(f"type [{type_id}]: more than {MAX_DEPTH} typedefs and qualifiers")
        if isinstance(t, Int):
            return _IntLayout(t)
        if isinstance(t, Enum | Enum64):
            return _EnumLayout(t)
        if isinstance(t, Float):
            return _FloatLayout(t)
        if isinstance(t, Pointer):
            return _PointerLayout(t)
        if isinstance(t, Array):
            element = self.layout(t.type, depth + 1)
            return _ArrayLayout(element, t.nelems, self._is_char(t.type), name or t.name)
        if isinstance(t, Struct | Union):
            members = [_Member(m.name, m.offset, m.bitfield_size, self.layout(m.type, depth + 1)) for m in t.members]
            return _CompositeLayout(_class_name(t.name or name, t.id), t.size, members, isinstance(t, Union))
        if isinstance(t, Datasec):
            members = []
            for v in t.vars:
                var = btf.type_by_id(v.type)
                if isinstance(var, Var):
                    members.append(_Member(var.name, v.offset * 8, 0, self.layout(var.type, depth + 1)))
            return _CompositeLayout(_class_name(t.name, t.id), t.size, members, False, section=t.name)
        if isinstance(t, Var):
            inner = self.layout(t.type, depth + 1)
            return _CompositeLayout(_class_name(t.name, t.id), inner.size, [_Member(t.name, 0, 0, inner)], False)
        label = {"VOID": "(unknown)", "FWD": "(fwd-kind-invalid)"}.get(t.kind.name, "(unsupported-kind)")
        return _Opaque(0, f"{t.describe()} has no layout", label)

    def _is_char(self, type_id: int) -> bool:
        """bpftool's rule for a string array: a 1-byte int that is ``char`` (qualifiers, not typedefs, peeled)."""
        t = self.btf.type_by_id(type_id)
        for _ in range(MAX_DEPTH):
            if not isinstance(t, MODIFIERS) or isinstance(t, Typedef):
                break
            t = self.btf.type_by_id(t.type)
        return isinstance(t, Int) and t.size == 1 and (bool(t.encoding & IntEncoding.CHAR) or t.name == "char")


def _class_name(name: str, type_id: int) -> str:
    cleaned = name.lstrip(".").replace(".", "_")
    return cleaned if cleaned.isidentifier() else f"anon_{type_id}"


_MAKERS: dict[int, tuple[weakref.ref[BTF], _Maker]] = {}  # by id(btf): BTF objects are unhashable


def layout(btf: BTF, type_id: int) -> Layout:
    """The ``Layout`` of type ``type_id`` of ``btf``, built once per BTF object and type."""
    key = id(btf)
    entry = _MAKERS.get(key)
    if entry is None or entry[0]() is not btf:
        maker = _Maker(btf)
        _MAKERS[key] = (weakref.ref(btf, lambda _, key=key, makers=_MAKERS: makers.pop(key, None)), maker)  # type: ignore[misc]
        return maker.layout(type_id)
    return entry[1].layout(type_id)


def format_value(btf: BTF, type_id: int, data: bytes | bytearray | memoryview) -> Any:
    """``data`` as its BTF type says, shaped as bpftool's ``formatted`` JSON (bounded: ``ValueError``
    past ``MAX_ITEMS`` elements)."""
    return layout(btf, type_id).format(data)


def python_type(btf: BTF, type_id: int, what: str = "value") -> Any:
    """The type a map ``what`` of BTF type ``type_id`` decodes to, or None (with a
    ``BTFTypeWarning`` naming ``what`` and the reason) when ctypes cannot express it."""
    if not type_id:
        return None
    try:
        found = layout(btf, type_id)
    except (BTFError, KeyError) as err:
        warnings.warn(f"{what}: BTF type [{type_id}] cannot be used ({err}); it stays bytes", BTFTypeWarning, stacklevel=3)
        return None
    py = found.python()
    if py is None:
        warnings.warn(f"{what}: {found.why or 'no layout'}; it stays bytes", BTFTypeWarning, stacklevel=3)
    return py


def map_types(btf: BTF, key_id: int, value_id: int, name: str = "", key_size: int = 0, value_size: int = 0) -> tuple[Any, Any]:
    """``(key type, value type)`` of a map whose BTF is ``btf`` (None where bytes stay); a type
    whose size differs from the map's is dropped with a warning."""
    label = f"map {name!r}" if name else "map"
    out: list[Any] = []
    for what, type_id, size in (("key", key_id, key_size), ("value", value_id, value_size)):
        py = python_type(btf, type_id, f"{label} {what}")
        if py is not None and size and ctypes.sizeof(py) != size:
            warnings.warn(f"{label} {what}: BTF type is {ctypes.sizeof(py)} bytes, the map's {what}s are {size}; it stays bytes", BTFTypeWarning, stacklevel=2)
            py = None
        out.append(py)
    return out[0], out[1]


def kernel_map_types(btf_id: int, key_id: int, value_id: int, name: str, key_size: int, value_size: int) -> tuple[Any, Any]:
    """``map_types`` for a map in the kernel: its BTF fetched by id (``BPF_BTF_GET_FD_BY_ID``)."""
    from ..errors import BPFError
    from .load import BtfHandle

    try:
        with BtfHandle.from_id(btf_id) as handle:
            btf = handle.btf()
    except (BPFError, BTFError) as err:
        warnings.warn(f"map {name!r}: its BTF (id {btf_id}) cannot be read ({err}); keys and values stay bytes", BTFTypeWarning, stacklevel=3)
        return None, None
    return map_types(btf, key_id, value_id, name, key_size, value_size)

