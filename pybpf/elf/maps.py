"""Map definitions of an object: legacy ``maps``, BTF ``.maps`` with static ``values``, global data.

Each becomes a ``MapSpec`` keyed by its name in the object (the variable's name; ``.data``,
``.rodata``, ``.bss`` for global data), its kernel name cut to 15 characters. Static values of a
map-in-map or program array become ``contents`` pairs ``(slot, name)`` naming the inner map or
the program; loading resolves the names.
"""

from __future__ import annotations

import dataclasses
import struct

from .._sys.constants import MapFlags, MapType, Pinning
from ..btf import BTFError, Datasec, MapDef, Struct, Var, map_defs
from ..map import MapSpec
from .btf import KCONFIG, ObjectBTF
from .names import data_map_name, kernel_name
from .reader import ElfFile, Relocation, Section, Symbol

LEGACY_SECTION = "maps"
BTF_SECTION = ".maps"
DATA_SECTIONS = (".data", ".rodata", ".bss")
"""Global data sections (and ``<name>.<suffix>`` variants), each loaded as a one-entry ARRAY."""

_LEGACY_DEF = struct.Struct("=5I")  # struct bpf_map_def: type, key_size, value_size, max_entries, map_flags


@dataclasses.dataclass
class ObjectMaps:
    """The maps of an object and where they are, so relocations can name them."""

    specs: dict[str, MapSpec] = dataclasses.field(default_factory=dict)
    at: dict[tuple[int, int], str] = dataclasses.field(default_factory=dict)
    """Map name by (section index, offset) of its definition."""
    data: dict[int, str] = dataclasses.field(default_factory=dict)
    """Global data map name by section index."""

    def add(self, name: str, spec: MapSpec, elf: ElfFile) -> None:
        """Record a map, refusing a second one of the same name."""
        if name in self.specs:
            raise elf.fail(f"two maps are named {name!r}")
        self.specs[name] = spec


def read_maps(elf: ElfFile, btf: ObjectBTF | None, object_name: str) -> ObjectMaps:
    """Every map of the object: legacy, BTF-defined (static values included), global data."""
    found = ObjectMaps()
    legacy = elf.section(LEGACY_SECTION)
    if legacy is not None:
        _legacy_maps(elf, legacy, found)
    defined = elf.section(BTF_SECTION)
    if defined is not None:
        if btf is None:
            raise elf.fail(f"section {BTF_SECTION} needs the object's BTF (compile with -g)")
        _btf_maps(elf, defined, btf, found)
    for section in elf.sections:
        if _is_data(section.name) and section.size:
            _data_map(section, btf, object_name, found, elf)
    if btf is not None and btf.kconfig_size:
        spec = MapSpec(
            type=MapType.ARRAY, key_size=4, value_size=btf.kconfig_size, max_entries=1,
            flags=MapFlags.MMAPABLE | MapFlags.RDONLY_PROG, name=data_map_name(object_name, KCONFIG),
        )
        found.add(KCONFIG, spec, elf)
    return found


def _legacy_maps(elf: ElfFile, section: Section, found: ObjectMaps) -> None:
    """``struct bpf_map_def`` at each symbol of the ``maps`` section; extra trailing fields must be zero."""
    for symbol in _symbols_in(elf, section.index):
        size = symbol.size
        if size < _LEGACY_DEF.size or symbol.value + size > len(section.data):
            raise elf.fail(f"legacy map {symbol.name!r}: definition at {symbol.value} ({size} bytes) is not a struct bpf_map_def inside {section.name!r}")
        raw = section.data[symbol.value : symbol.value + size]
        if any(raw[_LEGACY_DEF.size :]):
            raise elf.fail(f"legacy map {symbol.name!r}: fields past struct bpf_map_def's five are not supported")
        map_type, key_size, value_size, max_entries, flags = _LEGACY_DEF.unpack_from(raw)
        spec = MapSpec(
            type=_map_type(map_type), key_size=key_size, value_size=value_size, max_entries=max_entries,
            flags=flags, name=kernel_name(symbol.name),
        )
        found.add(symbol.name, spec, elf)
        found.at[(section.index, symbol.value)] = symbol.name


def _btf_maps(elf: ElfFile, section: Section, btf: ObjectBTF, found: ObjectMaps) -> None:
    """The maps of the ``.maps`` DATASEC, decoded as libbpf does, then their static values."""
    try:
        defs = map_defs(btf.types, BTF_SECTION)
    except (BTFError, KeyError, LookupError) as err:
        raise elf.fail(f"section {BTF_SECTION}: {err}") from None
    symbols = {s.name: s for s in _symbols_in(elf, section.index)}
    values_at: dict[str, tuple[int, int]] = {}  # name -> (offset of values[0] in the section, symbol end)
    for name, definition in defs.items():
        symbol = symbols.get(name)
        if symbol is None:
            raise elf.fail(f"map {name!r} of {BTF_SECTION} has no symbol")
        found.add(name, _btf_spec(elf, name, definition, btf), elf)
        found.at[(section.index, symbol.value)] = name
        if definition.values is not None:
            values_at[name] = (symbol.value + _values_offset(elf, btf, name), symbol.value + symbol.size)
    _static_values(elf, section, values_at, found)


def _btf_spec(elf: ElfFile, name: str, definition: MapDef, btf: ObjectBTF) -> MapSpec:
    if definition.type is None:
        raise elf.fail(f"map {name!r}: no type given (__uint(type, ...))")
    inner = None
    if isinstance(definition.values, MapDef):
        inner = _btf_spec(elf, definition.values.name, definition.values, btf)
    key_size, value_size = definition.key_size, definition.value_size
    if definition.type == MapType.PERF_EVENT_ARRAY:  # libbpf's defaults: the kernel's only sizes
        key_size, value_size = key_size or 4, value_size or 4
    return MapSpec(
        type=_map_type(definition.type),
        key_size=key_size,
        value_size=value_size,
        max_entries=definition.max_entries or 0,
        flags=definition.map_flags or 0,
        name=kernel_name(name),
        numa_node=definition.numa_node,
        map_extra=definition.map_extra or 0,
        inner_map=inner,
        pinning=_pinning(definition.pinning or 0),
        btf_key_type_id=definition.key.id if definition.key is not None else 0,
        btf_value_type_id=definition.value.id if definition.value is not None else 0,
    )


def _values_offset(elf: ElfFile, btf: ObjectBTF, name: str) -> int:
    """Byte offset of the ``values`` member in map ``name``'s definition struct."""
    try:
        var = btf.types.by_name(name, Var)
        struct_type = btf.types.resolve(var.type)  # type: ignore[attr-defined]
    except (KeyError, LookupError, BTFError) as err:
        raise elf.fail(f"map {name!r}: {err}") from None
    if isinstance(struct_type, Struct):
        for member in struct_type.members:
            if member.name == "values" and member.offset % 8 == 0:
                return member.offset // 8
    raise elf.fail(f"map {name!r}: no byte-aligned 'values' member")


def _static_values(elf: ElfFile, section: Section, values_at: dict[str, tuple[int, int]], found: ObjectMaps) -> None:
    """Fill ``contents`` of maps with ``values`` from the relocations of ``.maps``."""
    slots: dict[str, list[tuple[int, str]]] = {name: [] for name in values_at}
    for relocation in elf.relocations(section.index):
        owner = _owner(values_at, relocation.offset)
        if owner is None:
            raise elf.fail(f"{BTF_SECTION}: relocation at {relocation.offset:#x} is not inside the 'values' of a map")
        start = values_at[owner][0]
        if (relocation.offset - start) % 8:
            raise elf.fail(f"map {owner!r}: relocation at {relocation.offset:#x} is not at a values slot")
        slot = (relocation.offset - start) // 8
        spec = found.specs[owner]
        if slot >= spec.max_entries:
            raise elf.fail(f"map {owner!r}: static value in slot {slot} is past max_entries {spec.max_entries}")
        slots[owner].append((slot, _slot_target(elf, owner, spec, relocation, found)))
    for name, pairs in slots.items():
        if pairs:
            found.specs[name].contents = tuple(sorted(pairs))


def _owner(values_at: dict[str, tuple[int, int]], offset: int) -> str | None:
    for name, (start, end) in values_at.items():
        if start <= offset < end:
            return name
    return None


def _slot_target(elf: ElfFile, owner: str, spec: MapSpec, relocation: Relocation, found: ObjectMaps) -> str:
    """The name a static value refers to: an inner map for a map-in-map, a program for a PROG_ARRAY."""
    symbol = relocation.symbol
    if spec.type in (MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS):
        target = found.at.get((symbol.section, symbol.value)) if symbol.section is not None else None
        if target is None:
            raise elf.fail(f"map {owner!r}: static value {symbol.name!r} is not a map of {BTF_SECTION}")
        return target
    if spec.type == MapType.PROG_ARRAY:
        if symbol.type != "STT_FUNC" or symbol.section is None or not elf.sections[symbol.section].executable:
            raise elf.fail(f"map {owner!r}: static value {symbol.name!r} is not a program")
        return symbol.name
    raise elf.fail(f"map {owner!r}: static values are only for map-in-map and PROG_ARRAY maps")


def _data_map(section: Section, btf: ObjectBTF | None, object_name: str, found: ObjectMaps, elf: ElfFile) -> None:
    """A one-entry ARRAY holding a global data section (``.rodata`` read-only for programs)."""
    flags = MapFlags.MMAPABLE | (MapFlags.RDONLY_PROG if section.name.startswith(".rodata") else 0)
    value_id = 0
    if btf is not None:
        datasecs = btf.types.find(section.name, Datasec)
        value_id = datasecs[0].id if datasecs else 0
    spec = MapSpec(
        type=MapType.ARRAY, key_size=4, value_size=section.size, max_entries=1, flags=flags,
        name=data_map_name(object_name, section.name), btf_value_type_id=value_id,
        contents=((0, section.data),) if section.data else (),
    )
    found.add(section.name, spec, elf)
    found.data[section.index] = section.name


def _is_data(name: str) -> bool:
    return any(name == base or name.startswith(base + ".") for base in DATA_SECTIONS)


def _symbols_in(elf: ElfFile, index: int) -> list[Symbol]:
    """The named object symbols of section ``index``, by offset."""
    found = [s for s in elf.symbols if s.section == index and s.name and s.type in ("STT_OBJECT", "STT_NOTYPE")]
    return sorted(found, key=lambda s: s.value)


def _map_type(value: int) -> MapType | int:
    try:
        return MapType(value)
    except ValueError:
        return value


def _pinning(value: int) -> Pinning | int:
    try:
        return Pinning(value)
    except ValueError:
        return value
