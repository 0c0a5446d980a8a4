"""``BTF``: a set of types indexed by id (0 is void), with lookup by name and size resolution.

A ``BTF`` is immutable. It comes from ``parse`` (decoded eagerly, or lazily for the kernel's
large vmlinux BTF), from a ``Builder``, or from the kernel through a ``BtfHandle``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, overload

from ..errors import BTFError
from .strings import StringTable
from .types import (
    MODIFIERS,
    Array,
    Datasec,
    Enum,
    Enum64,
    Float,
    Int,
    Kind,
    Pointer,
    Struct,
    Type,
    Union,
    Var,
    Void,
    references,
)

if TYPE_CHECKING:
    from array import array

MAX_RESOLVE_DEPTH = 32
"""How many typedefs, modifiers and arrays a size or type resolution follows (libbpf's limit)."""

POINTER_SIZE = 8
"""BPF is a 64-bit target: every pointer is 8 bytes."""

_U32_MAX = 0xFFFFFFFF
_VOID = Void()
_SIZED = (Int, Struct, Union, Enum, Enum64, Float, Datasec)

KindFilter = type[Type] | Kind | None
"""A kind to filter by: a model class (``Struct``), a ``Kind``, or None for any."""


class _Lazy:
    """Decodes own types on first access (parse supplies ``decode`` and the name offsets)."""

    __slots__ = ("decode", "name_offsets", "name_bytes", "name_set")

    def __init__(self, decode: Callable[[int], Type], name_offsets: array[int]) -> None:
        self.decode = decode
        self.name_offsets = name_offsets
        self.name_bytes: bytes | None = None
        self.name_set: frozenset[int] = frozenset()


class _TypeList(Sequence[Type]):
    """The types of a ``BTF`` by id, decoded on access when the BTF is lazy."""

    __slots__ = ("_btf",)

    def __init__(self, btf: BTF) -> None:
        self._btf = btf

    def __len__(self) -> int:
        return len(self._btf)

    @overload
    def __getitem__(self, index: int) -> Type: ...
    @overload
    def __getitem__(self, index: slice) -> list[Type]: ...
    def __getitem__(self, index: int | slice) -> Type | list[Type]:
        if isinstance(index, slice):
            return [self._btf.type_by_id(i) for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"type id {index} out of range (0..{len(self) - 1})")
        return self._btf.type_by_id(index)

    def __iter__(self) -> Iterator[Type]:
        return (self._btf.type_by_id(i) for i in range(len(self)))


class BTF:
    """A set of BTF types: ``types[id]``, ``by_name``, ``sizeof`` and the ``strings`` table.

    ``BTF(types)`` checks that ids follow on from 1 (or from ``len(base)`` for split BTF, whose
    ids continue its base's) and that every reference is in range.
    """

    __slots__ = ("_base", "_first", "_own", "_lazy", "_strings", "_names", "__weakref__")

    def __init__(self, types: Iterable[Type] = (), *, base: BTF | None = None) -> None:
        """Types in id order, without ``Void`` (id 0 is always void)."""
        self._base = base
        self._first = len(base) if base is not None else 1
        self._own: list[Type | None] = list(types)
        self._lazy: _Lazy | None = None
        self._strings: StringTable | None = None
        self._names: dict[str, list[int]] | None = None
        for index, t in enumerate(self._own):
            assert t is not None
            if isinstance(t, Void):
                raise BTFError("Void is type id 0 only: leave it out of the types")
            if t.id != self._first + index:
                raise BTFError(f"{t.describe()} is at position {index}: expected id {self._first + index}")
            self._check_refs(t)

    @classmethod
    def _from_parse(cls, count: int, lazy: _Lazy, strings: StringTable, base: BTF | None) -> BTF:
        """A BTF of ``count`` own types decoded on demand (used by ``parse``)."""
        new = cls(base=base)
        new._own = [None] * count
        new._lazy = lazy
        new._strings = strings
        return new

    # ---- access -------------------------------------------------------------------------------

    def __len__(self) -> int:
        """The number of type ids, void and base types included."""
        return self._first + len(self._own)

    @property
    def types(self) -> Sequence[Type]:
        """Every type, indexed by id (``types[0]`` is ``Void``)."""
        return _TypeList(self)

    @property
    def base(self) -> BTF | None:
        """The base BTF of split BTF (a kernel module's is vmlinux), else None."""
        return self._base

    @property
    def first_id(self) -> int:
        """The id of this BTF's first own type (1, or ``len(base)`` for split BTF)."""
        return self._first

    @property
    def strings(self) -> StringTable:
        """The string section (as parsed, or as ``encode`` would lay it out)."""
        if self._strings is None:
            from .encode import string_table

            self._strings = StringTable(string_table(self).encode(), self._base.strings if self._base else None)
        return self._strings

    def type_by_id(self, type_id: int) -> Type:
        """The type with id ``type_id``; ``KeyError`` if there is none."""
        index = type_id - self._first
        if index >= 0:
            try:
                found = self._own[index]
            except IndexError:
                raise KeyError(f"no BTF type with id {type_id} (the last is {len(self) - 1})") from None
            if found is None:
                assert self._lazy is not None
                found = self._own[index] = self._lazy.decode(index)
            return found
        if type_id == 0:
            return _VOID
        if type_id < 0 or self._base is None:
            raise KeyError(f"no BTF type with id {type_id}")
        return self._base.type_by_id(type_id)

    def _as_type(self, t: Type | int) -> Type:
        return self.type_by_id(t) if isinstance(t, int) else t

    def find(self, name: str, kind: KindFilter = None) -> list[Type]:
        """Every type named ``name`` (of ``kind`` if given), base BTF first."""
        found = self._base.find(name, kind) if self._base is not None else []
        want = kind.kind if isinstance(kind, type) else kind
        ids = self._name_index().get(name, ()) if self._names is not None or self._lazy is None else self._ids_named(name)
        for type_id in ids:
            t = self.type_by_id(type_id)
            if want is None or t.kind == want:
                found.append(t)
        return found

    def _ids_named(self, name: str) -> list[int]:
        """Own type ids named ``name`` of lazily parsed BTF, found without indexing every name:
        the name's offsets in the string section, then the records with those name offsets."""
        assert self._lazy is not None and self._strings is not None
        offsets = self._strings.offsets_of(name)
        if not offsets:
            return []
        lazy = self._lazy
        if lazy.name_bytes is None:
            lazy.name_bytes = lazy.name_offsets.tobytes()
            lazy.name_set = frozenset(lazy.name_offsets)
        data = lazy.name_bytes
        ids = []
        for offset in offsets:
            if offset not in lazy.name_set:
                continue
            needle = offset.to_bytes(4, sys.byteorder)
            at = data.find(needle)
            while at >= 0:
                if at % 4 == 0:
                    ids.append(self._first + at // 4)
                at = data.find(needle, at + 1)
        return sorted(ids)

    def by_name(self, name: str, kind: KindFilter = None) -> Type:
        """The one type named ``name`` (of ``kind`` if given).

        Raises ``KeyError`` if there is none, ``LookupError`` if several match (give a kind).
        """
        found = self.find(name, kind)
        if len(found) == 1:
            return found[0]
        what = f"{kind.kind.name if isinstance(kind, type) else kind.name} " if kind is not None else ""
        if not found:
            raise KeyError(f"no BTF type {what}named {name!r}")
        listed = ", ".join(t.describe() for t in found[:5])
        raise LookupError(f"{len(found)} BTF types {what}named {name!r}: {listed}; pass kind= to choose")

    def _name_index(self) -> dict[str, list[int]]:
        if self._names is not None:
            return self._names
        names: dict[str, list[int]] = {}
        if self._lazy is not None:
            assert self._strings is not None
            known = self._strings.split()
            strings = self._strings
            for index, offset in enumerate(self._lazy.name_offsets):
                if offset:
                    name = known.get(offset)
                    if name is None:
                        name = strings[offset]
                    names.setdefault(name, []).append(self._first + index)
        else:
            for t in self._own:
                assert t is not None
                if t.name:
                    names.setdefault(t.name, []).append(t.id)
        self._names = names
        return names

    # ---- resolution ---------------------------------------------------------------------------

    def resolve(self, t: Type | int) -> Type:
        """``t`` with typedefs, qualifiers and type tags peeled off."""
        current = self._as_type(t)
        for _ in range(MAX_RESOLVE_DEPTH):
            if not isinstance(current, MODIFIERS):
                return current
            current = self.type_by_id(current.type)
        raise BTFError(f"{self._as_type(t).describe()}: more than {MAX_RESOLVE_DEPTH} typedefs/qualifiers (a cycle?)")

    def sizeof(self, t: Type | int) -> int:
        """The size in bytes of ``t``, through typedefs, qualifiers, variables and arrays."""
        start = current = self._as_type(t)
        count = 1
        for _ in range(MAX_RESOLVE_DEPTH):
            if isinstance(current, _SIZED):
                size = count * current.size
                break
            if isinstance(current, Pointer):
                size = count * POINTER_SIZE
                break
            if isinstance(current, Array):
                count *= current.nelems
                if count > _U32_MAX:
                    raise BTFError(f"{start.describe()}: size overflows 32 bits")
                current = self.type_by_id(current.type)
            elif isinstance(current, (*MODIFIERS, Var)):
                current = self.type_by_id(current.type)
            else:
                raise BTFError(f"{start.describe()}: {current.describe()} has no size")
        else:
            raise BTFError(f"{start.describe()}: more than {MAX_RESOLVE_DEPTH} levels to resolve its size (a cycle?)")
        if size > _U32_MAX:
            raise BTFError(f"{start.describe()}: size {size} overflows 32 bits")
        return size

    # ---- checks and dunder --------------------------------------------------------------------

    def _check_refs(self, t: Type) -> None:
        total = len(self)
        for where, ref in references(t):
            if not 0 <= ref < total:
                raise BTFError(f"{t.describe()}: {where} refers to type {ref}, past the last type {total - 1}")

    def __iter__(self) -> Iterator[Type]:
        """Every type by id, void first."""
        return iter(self.types)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BTF):
            return NotImplemented
        return self._first == other._first and len(self) == len(other) and list(self.own_types()) == list(other.own_types())

    __hash__ = None  # type: ignore[assignment]

    def own_types(self) -> Iterator[Type]:
        """This BTF's own types (not void, not the base's), by id."""
        return (self.type_by_id(i) for i in range(self._first, len(self)))

    def __repr__(self) -> str:
        split = f" on a base of {self._first}" if self._base is not None else ""
        return f"<BTF {len(self._own)} types{split}>"

    @staticmethod
    def vmlinux() -> BTF:
        """The running kernel's BTF (``/sys/kernel/btf/vmlinux``), parsed lazily once and cached."""
        from .parse import vmlinux

        return vmlinux()
