"""BTF map definitions (``.maps``): the members of a map's struct decoded the way libbpf does.

``bpf_helpers.h`` encodes each attribute in a member's type: ``__uint(name, val)`` is
``int (*name)[val]`` (the value is the array's ``nelems`` behind a pointer), ``__type(name, T)``
is ``T *name`` and ``__array(name, T)`` is ``T *name[]`` (an empty array of pointers to ``T``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import BTFError
from .spec import BTF
from .types import Array, Datasec, FuncProto, Member, Pointer, Struct, Type, Union, Var

UINT_FIELDS = ("type", "max_entries", "map_flags", "numa_node", "key_size", "value_size", "pinning", "map_extra")
"""The ``__uint`` attributes libbpf knows."""

TYPE_FIELDS = ("key", "value")
"""The ``__type`` attributes libbpf knows."""

MAPS_SECTION = ".maps"


@dataclasses.dataclass(frozen=True)
class MapDef:
    """One BTF-defined map: its ``__uint`` values, ``__type`` types and ``__array(values, ...)``.

    ``key_size``/``value_size`` follow from ``key``/``value`` when only the type is given;
    ``values`` (an inner map's ``MapDef`` or a ``FuncProto`` for a program array) sets
    ``value_size`` to 4. Absent attributes are None.
    """

    name: str
    type: int | None = None
    max_entries: int | None = None
    map_flags: int | None = None
    numa_node: int | None = None
    key_size: int | None = None
    value_size: int | None = None
    pinning: int | None = None
    map_extra: int | None = None
    key: Type | None = None
    value: Type | None = None
    values: MapDef | FuncProto | None = None


def map_uint(btf: BTF, member: Member) -> int:
    """The value of ``__uint(name, val)``: the ``nelems`` of the array behind the pointer."""
    pointer = _pointer(btf, member, "__uint")
    target = btf.resolve(pointer.type)
    if not isinstance(target, Array):
        raise BTFError(f"member {member.name!r}: __uint needs a pointer to an array, found a pointer to {target.describe()}")
    return target.nelems


def map_type(btf: BTF, member: Member) -> Type:
    """The type ``T`` of ``__type(name, T)``: the pointer's target, typedefs kept."""
    return btf.type_by_id(_pointer(btf, member, "__type").type)


def map_array(btf: BTF, member: Member) -> Type:
    """The element type ``T`` of ``__array(name, T)``, typedefs and qualifiers peeled off."""
    array = btf.resolve(member.type)
    if not isinstance(array, Array) or array.nelems:
        raise BTFError(f"member {member.name!r}: __array needs an empty array of pointers, found {array.describe()}")
    element = btf.resolve(array.type)
    if not isinstance(element, Pointer):
        raise BTFError(f"member {member.name!r}: __array needs an array of pointers, found an array of {element.describe()}")
    return btf.resolve(element.type)


def _pointer(btf: BTF, member: Member, macro: str) -> Pointer:
    found = btf.resolve(member.type)
    if not isinstance(found, Pointer):
        raise BTFError(f"member {member.name!r}: {macro} needs a pointer, found {found.describe()}")
    return found


def map_def(btf: BTF, struct: Type, name: str = "", *, inner: bool = False) -> MapDef:
    """Decode a map definition struct (a ``.maps`` variable's type); ``BTFError`` names what is wrong."""
    try:
        return MapDef(name=name, **_fields(btf, struct, name, inner))
    except BTFError as err:
        raise BTFError(f"map {name!r}: {err}") from None


def _fields(btf: BTF, struct: Type, name: str, inner: bool) -> dict[str, Any]:
    struct = btf.resolve(struct)
    if not isinstance(struct, Struct):
        raise BTFError(f"a map definition must be a struct, found {struct.describe()}")
    fields: dict[str, Any] = {}
    for member in struct.members:
        if member.name in UINT_FIELDS:
            fields[member.name] = map_uint(btf, member)
        elif member.name in TYPE_FIELDS:
            fields[member.name] = map_type(btf, member)
        elif member.name == "values":
            if inner:
                raise BTFError("an inner map cannot have values of its own (multi-level inner maps)")
            fields["values"] = _values(btf, member, name)
        else:
            raise BTFError(f"unknown attribute {member.name!r}")
    for what in ("key", "value"):
        if what in fields:
            size = btf.sizeof(fields[what])
            explicit = fields.get(f"{what}_size")
            if explicit is not None and explicit != size:
                raise BTFError(f"{what}_size {explicit} conflicts with the size {size} of its {what} type")
            fields[f"{what}_size"] = size
    if "values" in fields:
        if fields.get("value_size") not in (None, 4):
            raise BTFError(f"values hold 4-byte ids, but value_size is {fields['value_size']}")
        fields["value_size"] = 4
    return fields


def _values(btf: BTF, member: Member, name: str) -> MapDef | FuncProto:
    element = map_array(btf, member)
    if isinstance(element, FuncProto):
        return element
    if isinstance(element, (Struct, Union)):
        return map_def(btf, element, f"{name}.inner", inner=True)
    raise BTFError(f"member 'values': needs an inner map definition or a function prototype, found {element.describe()}")


def map_defs(btf: BTF, section: str = MAPS_SECTION) -> dict[str, MapDef]:
    """Every map defined in the ``.maps`` data section of an object's BTF, by variable name."""
    found: dict[str, MapDef] = {}
    for datasec in btf.find(section, Datasec):
        assert isinstance(datasec, Datasec)
        for secinfo in datasec.vars:
            var = btf.type_by_id(secinfo.type)
            if not isinstance(var, Var):
                raise BTFError(f"{section}: {var.describe()} is not a variable")
            found[var.name] = map_def(btf, btf.type_by_id(var.type), var.name)
    return found
