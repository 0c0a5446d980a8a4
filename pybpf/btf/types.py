"""The typed model of BTF: one frozen dataclass per kind, referring to other types by id.

Every type has ``id`` (its index in the BTF, 0 is ``Void``) and ``name`` ("" when anonymous).
Fields named ``type`` hold the id of the type referred to, as in ``struct btf_type``.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import ClassVar


class Kind(enum.IntEnum):
    """``BTF_KIND_*``: the kind of a BTF type (bits 24-28 of ``btf_type.info``)."""

    VOID = 0
    INT = 1
    PTR = 2
    ARRAY = 3
    STRUCT = 4
    UNION = 5
    ENUM = 6
    FWD = 7
    TYPEDEF = 8
    VOLATILE = 9
    CONST = 10
    RESTRICT = 11
    FUNC = 12
    FUNC_PROTO = 13
    VAR = 14
    DATASEC = 15
    FLOAT = 16
    DECL_TAG = 17
    TYPE_TAG = 18
    ENUM64 = 19


class IntEncoding(enum.IntFlag):
    """``BTF_INT_*``: how an ``Int`` is interpreted (none means unsigned)."""

    NONE = 0
    SIGNED = 1
    CHAR = 2
    BOOL = 4


class FuncLinkage(enum.IntEnum):
    """``BTF_FUNC_*``: the linkage of a ``Func``."""

    STATIC = 0
    GLOBAL = 1
    EXTERN = 2


class VarLinkage(enum.IntEnum):
    """``BTF_VAR_*``: the linkage of a ``Var``."""

    STATIC = 0
    GLOBAL = 1
    EXTERN = 2


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Type:
    """Base of every BTF type: its ``id`` in the BTF and its ``name``."""

    kind: ClassVar[Kind]
    id: int = 0
    name: str = ""

    def describe(self) -> str:
        """A short human name for messages: kind, name and id."""
        return f"{self.kind.name} {self.name or '(anon)'!r} [{self.id}]"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Void(Type):
    """Type id 0: ``void``, and the absent type (a pointer to it is ``void *``)."""

    kind = Kind.VOID


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Int(Type):
    """An integer of ``size`` bytes, ``bits`` wide (default ``size * 8``), starting ``offset`` bits in."""

    kind = Kind.INT
    size: int
    encoding: IntEncoding = IntEncoding.NONE
    bits: int = -1
    offset: int = 0

    def __post_init__(self) -> None:
        if self.bits < 0:
            object.__setattr__(self, "bits", self.size * 8)

    @property
    def signed(self) -> bool:
        """Whether the integer is signed."""
        return bool(self.encoding & IntEncoding.SIGNED)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Pointer(Type):
    """A pointer to ``type``."""

    kind = Kind.PTR
    type: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Array(Type):
    """``nelems`` elements of ``type``, indexed by the integer type ``index_type``."""

    kind = Kind.ARRAY
    type: int
    index_type: int
    nelems: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Member:
    """A struct or union member: ``offset`` in bits, ``bitfield_size`` bits wide (0: not a bitfield)."""

    name: str
    type: int
    offset: int
    bitfield_size: int = 0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Struct(Type):
    """A struct of ``size`` bytes."""

    kind = Kind.STRUCT
    size: int
    members: tuple[Member, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Union(Type):
    """A union of ``size`` bytes."""

    kind = Kind.UNION
    size: int
    members: tuple[Member, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class EnumValue:
    """One enumerator."""

    name: str
    value: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Enum(Type):
    """An enum of ``size`` bytes (1, 2, 4 or 8) with 32-bit values."""

    kind = Kind.ENUM
    size: int = 4
    values: tuple[EnumValue, ...] = ()
    signed: bool = False


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Enum64(Type):
    """An enum with 64-bit values."""

    kind = Kind.ENUM64
    size: int = 8
    values: tuple[EnumValue, ...] = ()
    signed: bool = False


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Fwd(Type):
    """A forward declaration of a struct (or of a union when ``union``)."""

    kind = Kind.FWD
    union: bool = False


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Typedef(Type):
    """``typedef type name``."""

    kind = Kind.TYPEDEF
    type: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Volatile(Type):
    """``volatile type``."""

    kind = Kind.VOLATILE
    type: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Const(Type):
    """``const type``."""

    kind = Kind.CONST
    type: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Restrict(Type):
    """``restrict type``."""

    kind = Kind.RESTRICT
    type: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Func(Type):
    """A function: ``type`` is its ``FuncProto``."""

    kind = Kind.FUNC
    type: int
    linkage: FuncLinkage | int = FuncLinkage.STATIC


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Param:
    """A function parameter (a last one with ``type`` 0 marks a variadic function)."""

    name: str
    type: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class FuncProto(Type):
    """A function signature: ``type`` is the return type."""

    kind = Kind.FUNC_PROTO
    type: int
    params: tuple[Param, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Var(Type):
    """A variable of ``type``."""

    kind = Kind.VAR
    type: int
    linkage: VarLinkage | int = VarLinkage.STATIC


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class VarSecinfo:
    """A variable placed in a ``Datasec``: ``type`` is the ``Var`` (or ``Func``)."""

    type: int
    offset: int
    size: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Datasec(Type):
    """An ELF data section (``.data``, ``.maps``, ...) and the variables in it."""

    kind = Kind.DATASEC
    size: int = 0
    vars: tuple[VarSecinfo, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Float(Type):
    """A floating-point number of ``size`` bytes."""

    kind = Kind.FLOAT
    size: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DeclTag(Type):
    """A tag (``name`` is its text) on ``type``, or on its member/parameter ``component_idx`` (-1: none)."""

    kind = Kind.DECL_TAG
    type: int
    component_idx: int = -1
    attribute: bool = False


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TypeTag(Type):
    """A tag (``name`` is its text) on the type ``type``."""

    kind = Kind.TYPE_TAG
    type: int
    attribute: bool = False


BY_KIND: dict[Kind, type[Type]] = {
    cls.kind: cls
    for cls in (
        Void, Int, Pointer, Array, Struct, Union, Enum, Fwd, Typedef, Volatile, Const, Restrict,
        Func, FuncProto, Var, Datasec, Float, DeclTag, TypeTag, Enum64,
    )
}
"""The model class of each kind."""

MODIFIERS = (Typedef, Volatile, Const, Restrict, TypeTag)
"""Kinds that only qualify or rename the type they refer to."""

Composite = Struct | Union
"""A type with members."""


def references(t: Type) -> list[tuple[str, int]]:
    """The type ids ``t`` refers to, each with where it appears (for messages)."""
    out: list[tuple[str, int]] = []
    if isinstance(t, Array):
        out += [("element type", t.type), ("index type", t.index_type)]
    elif isinstance(t, (Struct, Union)):
        out += [(f"member {m.name or '(anon)'!r}", m.type) for m in t.members]
    elif isinstance(t, FuncProto):
        out.append(("return type", t.type))
        out += [(f"parameter {p.name or '(anon)'!r}", p.type) for p in t.params]
    elif isinstance(t, Datasec):
        out += [(f"variable #{i}", v.type) for i, v in enumerate(t.vars)]
    elif isinstance(t, (Pointer, Typedef, Volatile, Const, Restrict, Func, Var, DeclTag, TypeTag)):
        out.append(("type", t.type))
    return out
