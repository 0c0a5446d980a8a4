"""Building BTF: a ``Builder`` that numbers types, and ``btf_from_ctypes`` for ctypes types."""

from __future__ import annotations

import ctypes
import dataclasses
import re
import sys

from ..errors import BTFError
from .spec import BTF
from .types import Array, Float, Int, IntEncoding, Member, Pointer, Struct, Type, Union

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CTYPES = (ctypes._SimpleCData, ctypes.Array, ctypes.Structure, ctypes.Union, ctypes._Pointer)


class Builder:
    """Collects types, giving each the next id; ``build()`` makes the ``BTF``.

    ``reserve()`` hands out an id before its type is known, for self-referencing types.
    """

    def __init__(self, base: BTF | None = None) -> None:
        """An empty builder; types get ids after ``base``'s for split BTF."""
        self._base = base
        self._first = len(base) if base is not None else 1
        self._types: list[Type | None] = []

    def add(self, t: Type) -> int:
        """Add ``t`` (its ``id`` is replaced) and return its new id."""
        type_id = self.reserve()
        self.fill(type_id, t)
        return type_id

    def reserve(self) -> int:
        """An id for a type given later with ``fill``."""
        self._types.append(None)
        return self._first + len(self._types) - 1

    def fill(self, type_id: int, t: Type) -> None:
        """Give the type of an id from ``reserve``."""
        index = type_id - self._first
        if not 0 <= index < len(self._types):
            raise ValueError(f"type id {type_id} was not reserved by this builder")
        self._types[index] = dataclasses.replace(t, id=type_id)

    def build(self) -> BTF:
        """The ``BTF`` of every type added (references checked)."""
        missing = [self._first + i for i, t in enumerate(self._types) if t is None]
        if missing:
            raise BTFError(f"reserved type ids never filled: {missing[:10]}")
        return BTF(self._types, base=self._base)  # type: ignore[arg-type]


_INTS: dict[type, tuple[str, IntEncoding]] = {
    ctypes.c_longlong: ("long long", IntEncoding.SIGNED),  # aliases of c_long on LP64: overridden
    ctypes.c_ulonglong: ("unsigned long long", IntEncoding.NONE),
    ctypes.c_bool: ("_Bool", IntEncoding.BOOL),
    ctypes.c_char: ("char", IntEncoding.SIGNED),
    ctypes.c_byte: ("signed char", IntEncoding.SIGNED),
    ctypes.c_ubyte: ("unsigned char", IntEncoding.NONE),
    ctypes.c_short: ("short", IntEncoding.SIGNED),
    ctypes.c_ushort: ("unsigned short", IntEncoding.NONE),
    ctypes.c_int: ("int", IntEncoding.SIGNED),
    ctypes.c_uint: ("unsigned int", IntEncoding.NONE),
    ctypes.c_long: ("long", IntEncoding.SIGNED),
    ctypes.c_ulong: ("unsigned long", IntEncoding.NONE),
}
_FLOATS: dict[type, str] = {ctypes.c_float: "float", ctypes.c_double: "double", ctypes.c_longdouble: "long double"}


def btf_from_ctypes(*ctypes_types: type) -> tuple[BTF, dict[type, int]]:
    """BTF describing ``ctypes_types`` and the id of each (and of every type they contain).

    Handles the integer types, ``c_bool``, ``c_char``, floats, arrays, pointers and
    ``Structure``/``Union`` (nested, bitfields, ``_pack_``, ``_anonymous_``) in native byte order.
    Names that are not C identifiers are made so (``"my field"`` becomes ``my_field``).
    Raises ``TypeError`` for a type BTF cannot describe.
    """
    converter = _Converter()
    for ctype in ctypes_types:
        converter.add(ctype)
    return converter.builder.build(), dict(converter.ids)


class _Converter:
    """Adds ctypes types to a ``Builder``, each once."""

    def __init__(self) -> None:
        self.builder = Builder()
        self.ids: dict[type, int] = {}

    def add(self, ctype: type) -> int:
        found = self.ids.get(ctype)
        if found is not None:
            return found
        if not isinstance(ctype, type) or not issubclass(ctype, _CTYPES):
            raise TypeError(f"{ctype!r} is not a ctypes type BTF can describe")
        if issubclass(ctype, (ctypes.Structure, ctypes.Union)):
            return self._composite(ctype)
        type_id = self._scalar(ctype)
        self.ids[ctype] = type_id
        return type_id

    def _scalar(self, ctype: type) -> int:
        for base in ctype.__mro__:
            if base in _INTS:
                name, encoding = _INTS[base]
                return self._shared(base, Int(name=name, size=ctypes.sizeof(base), encoding=encoding))
            if base in _FLOATS:
                return self._shared(base, Float(name=_FLOATS[base], size=ctypes.sizeof(base)))
        if issubclass(ctype, ctypes.Array):
            element_type: type = getattr(ctype, "_type_")
            length: int = getattr(ctype, "_length_")
            element = self.add(element_type)
            index = self.add(ctypes.c_uint)
            return self.builder.add(Array(type=element, index_type=index, nelems=length))
        if issubclass(ctype, ctypes._Pointer):
            pointer = self.builder.reserve()  # the target may point back here
            self.ids[ctype] = pointer
            self.builder.fill(pointer, Pointer(type=self.add(ctype._type_)))
            return pointer
        if ctype in (ctypes.c_void_p, ctypes.c_char_p):
            target = 0 if ctype is ctypes.c_void_p else self.add(ctypes.c_char)
            return self.builder.add(Pointer(type=target))
        raise TypeError(f"{ctype.__name__}: no BTF for this ctypes type (non-native byte order or wide chars?)")

    def _shared(self, base: type, t: Type) -> int:
        """The id of a base scalar type (``c_uint`` for ``c_uint32`` and its subclasses)."""
        found = self.ids.get(base)
        if found is None:
            found = self.ids[base] = self.builder.add(t)
        return found

    def _composite(self, ctype: type) -> int:
        if hasattr(ctype, "_swappedbytes_"):  # Big/LittleEndianStructure of the other order
            raise TypeError(f"{ctype.__name__}: BTF describes native byte order only")
        type_id = self.builder.reserve()
        self.ids[ctype] = type_id
        anonymous = set(getattr(ctype, "_anonymous_", ()))
        members = []
        for field in getattr(ctype, "_fields_", ()):
            name, field_type = field[0], field[1]
            descriptor = getattr(ctype, name)
            offset, bits = descriptor.offset * 8, 0
            if len(field) > 2:
                bits, bit_offset = _bitfield(ctype, name, descriptor)
                offset += bit_offset
            member_name = "" if name in anonymous else _identifier(name)
            members.append(Member(name=member_name, type=self.add(field_type), offset=offset, bitfield_size=bits))
        cls = Union if issubclass(ctype, ctypes.Union) else Struct
        self.builder.fill(type_id, cls(name=_identifier(ctype.__name__), size=ctypes.sizeof(ctype), members=tuple(members)))
        return type_id


def _bitfield(ctype: type, name: str, descriptor: object) -> tuple[int, int]:
    """``(width, bit offset within the storage unit)`` of a ctypes bitfield."""
    if sys.byteorder != "little":
        raise TypeError(f"{ctype.__name__}.{name}: bitfields are supported on little-endian hosts only")
    if hasattr(descriptor, "bit_size"):  # Python >= 3.14
        return descriptor.bit_size, descriptor.bit_offset  # type: ignore[attr-defined]
    packed = descriptor.size  # type: ignore[attr-defined]
    return packed >> 16, packed & 0xFFFF


def _identifier(name: str) -> str:
    """``name`` as a C identifier, which the kernel requires of BTF names."""
    if _IDENT.fullmatch(name):
        return name
    fixed = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return fixed if fixed and not fixed[0].isdigit() else f"_{fixed}"
