"""``MapSpec``: a map described as plain data, checked against the kernel's rules without the kernel."""

from __future__ import annotations

import ctypes
import dataclasses
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NoReturn

from .._sys.constants import ALL_MAP_FLAGS, OBJ_NAME_LEN, MapFlags, MapType, Pinning
from .._sys.traits import map_traits, map_type_name

if TYPE_CHECKING:
    from ..btf import BtfHandle

_PAGE = 4096
_NAME_RE = re.compile(r"^[A-Za-z0-9_.]*$")
_MAX_HASH_KEY = 512  # MAX_BPF_STACK: a hash key must fit on the BPF stack
_PERCPU_VALUE_MAX = 32768  # PCPU_MIN_UNIT_SIZE
_POINTER_CODES = frozenset("zZPO")  # c_char_p, c_wchar_p, c_void_p, py_object
_FUNCTION_POINTER: type = ctypes.CFUNCTYPE(None).__mro__[1]  # ctypes' function pointer base (_CFuncPtr)


def type_size(ctype: Any, field: str) -> int:
    """The size of a ctypes type given as ``key``/``value``; TypeError naming the field for anything
    else, and for pointer types (a pointer read back from a map would crash the interpreter)."""
    pointer = _pointer_in(ctype)
    if pointer:
        raise TypeError(f"MapSpec.{field}: {getattr(ctype, '__name__', ctype)} is or holds a pointer ({pointer}); "
                        "maps hold plain data")
    if isinstance(ctype, type) and issubclass(ctype, ctypes._SimpleCData | ctypes.Structure | ctypes.Union | ctypes.Array):
        return ctypes.sizeof(ctype)
    raise TypeError(f"MapSpec.{field} must be a ctypes type (c_uint32, a Structure, ...), not {ctype!r}")


def _pointer_in(ctype: Any, depth: int = 0) -> str:
    """The name of a pointer type inside ``ctype`` (itself, a field, an element), or ``""``."""
    if depth > 32:
        return ""
    if isinstance(ctype, type) and issubclass(ctype, ctypes._Pointer | _FUNCTION_POINTER):
        return ctype.__name__
    if isinstance(ctype, type) and issubclass(ctype, ctypes._SimpleCData) and getattr(ctype, "_type_", "") in _POINTER_CODES:
        return ctype.__name__
    if isinstance(ctype, type) and issubclass(ctype, ctypes.Array):
        return _pointer_in(ctype._type_, depth + 1)
    if isinstance(ctype, type) and issubclass(ctype, ctypes.Structure | ctypes.Union):
        for item in getattr(ctype, "_fields_", ()):
            found = _pointer_in(item[1], depth + 1)
            if found:
                return f"{item[0]}: {found}"
    return ""


@dataclasses.dataclass
class MapSpec:
    """Everything ``BPF_MAP_CREATE`` needs, as data. Sizes follow from ``key``/``value`` when given.

    ``inner_map`` is the template of an ARRAY_OF_MAPS/HASH_OF_MAPS (a ``MapSpec``, or an existing
    ``Map`` or map fd whose shape is copied); ``contents`` are
    ``(key, value)`` pairs written right after creation. ``btf`` (a loaded ``BtfHandle``, e.g. an
    object file's) with ``btf_key_type_id``/``btf_value_type_id`` describes key and value by type
    id instead of ``key``/``value``.
    """

    type: MapType | int
    key_size: int | None = None
    value_size: int | None = None
    max_entries: int = 0
    flags: MapFlags | int = 0
    name: str = ""
    key: Any = None
    value: Any = None
    numa_node: int | None = None
    map_extra: int = 0
    inner_map: MapSpec | Any = None
    pinning: Pinning | int = Pinning.NONE
    contents: Iterable[tuple[Any, Any]] = ()
    ifindex: int = 0
    btf: BtfHandle | None = None
    btf_key_type_id: int = 0
    btf_value_type_id: int = 0

    def __post_init__(self) -> None:
        if self.key is not None and self.key_size is None:
            self.key_size = type_size(self.key, "key")
        if self.value is not None and self.value_size is None:
            self.value_size = type_size(self.value, "value")
        traits = map_traits(self.type)
        if self.key_size is None and traits is not None and traits.keyless:
            self.key_size = 0
        if self.value_size is None and traits is not None and traits.no_value:
            self.value_size = 0

    @property
    def create_flags(self) -> int:
        """``map_flags`` as sent to the kernel (NUMA_NODE added when ``numa_node`` is set)."""
        return int(self.flags) | (MapFlags.NUMA_NODE if self.numa_node is not None else 0)

    def copy(self, **changes: Any) -> MapSpec:
        """A copy with some fields changed (``inner_map`` and ``contents`` are shared)."""
        return dataclasses.replace(self, **changes)

    def validate(self) -> MapSpec:
        """Raise ``ValueError``/``TypeError`` naming the field for anything the kernel would refuse
        that is knowable without it; return ``self``."""
        _validate(self)
        return self


def _fail(spec: MapSpec, field: str, why: str) -> NoReturn:
    raise ValueError(f"MapSpec.{field}: {why} (map type {map_type_name(spec.type)}{', ' + repr(spec.name) if spec.name else ''})")


def _validate(spec: MapSpec) -> None:  # noqa: C901 - the kernel's rules, read top to bottom
    if isinstance(spec.type, bool) or not isinstance(spec.type, int) or spec.type == MapType.UNSPEC:
        raise ValueError(f"MapSpec.type: unknown map type {spec.type!r}")
    traits = map_traits(spec.type)
    if traits is None:
        raise ValueError(f"MapSpec.type: unknown map type {spec.type!r}")
    kind = MapType(spec.type)
    if not isinstance(spec.name, str) or len(spec.name.encode()) >= OBJ_NAME_LEN or not _NAME_RE.match(spec.name):
        _fail(spec, "name", f"{spec.name!r} must be at most {OBJ_NAME_LEN - 1} characters of [A-Za-z0-9_.]")
    for field in ("key_size", "value_size", "max_entries", "map_extra", "ifindex", "btf_key_type_id", "btf_value_type_id"):
        val = getattr(spec, field)
        if val is None:
            _fail(spec, field, "is required (give it, or a ctypes type as key/value)")
        if isinstance(val, bool) or not isinstance(val, int) or val < 0 or val >= (1 << (64 if field == "map_extra" else 32)):
            _fail(spec, field, f"{val!r} is not a valid unsigned integer")
    for field in ("key", "value"):
        ctype = getattr(spec, field)
        if ctype is not None and type_size(ctype, field) != getattr(spec, f"{field}_size"):
            _fail(spec, f"{field}_size", f"{getattr(spec, f'{field}_size')} disagrees with {field} type "
                  f"{ctype.__name__} ({ctypes.sizeof(ctype)} bytes)")
    if isinstance(spec.flags, bool) or not isinstance(spec.flags, int) or not 0 <= spec.flags < 1 << 32:
        _fail(spec, "flags", f"{spec.flags!r} is not a 32-bit flag set")
    flags = spec.create_flags
    if flags & ~ALL_MAP_FLAGS:
        _fail(spec, "flags", f"unknown flag bits {flags & ~ALL_MAP_FLAGS:#x}")
    if spec.numa_node is not None and (isinstance(spec.numa_node, bool) or not isinstance(spec.numa_node, int)
                                       or not 0 <= spec.numa_node < 1 << 31):
        _fail(spec, "numa_node", f"{spec.numa_node!r} is not a node number")
    if (flags & MapFlags.RDONLY) and (flags & MapFlags.WRONLY):
        _fail(spec, "flags", "RDONLY and WRONLY exclude each other")
    if (flags & MapFlags.RDONLY_PROG) and (flags & MapFlags.WRONLY_PROG):
        _fail(spec, "flags", "RDONLY_PROG and WRONLY_PROG exclude each other")
    key_size, value_size = spec.key_size, spec.value_size
    assert key_size is not None and value_size is not None

    if traits.key_sizes and key_size not in traits.key_sizes:
        _fail(spec, "key_size", f"must be {' or '.join(map(str, traits.key_sizes))}, not {key_size}")
    if traits.value_sizes and value_size not in traits.value_sizes:
        _fail(spec, "value_size", f"must be {' or '.join(map(str, traits.value_sizes))}, not {value_size}")
    if traits.keyless and key_size != 0:
        _fail(spec, "key_size", f"must be 0, not {key_size}")
    if not traits.keyless and key_size == 0:
        _fail(spec, "key_size", "must be positive")
    if traits.no_value and value_size:
        _fail(spec, "value_size", "must be 0")
    if not traits.no_value and value_size == 0:
        _fail(spec, "value_size", "must be positive")
    if traits.storage and spec.max_entries != 0:
        _fail(spec, "max_entries", "must be 0 for storage maps")
    if not traits.storage and spec.max_entries == 0:
        _fail(spec, "max_entries", "must be positive")

    if traits.hash_key_limit and key_size > _MAX_HASH_KEY:
        _fail(spec, "key_size", f"{key_size} exceeds the BPF stack ({_MAX_HASH_KEY})")
    if traits.lru and flags & MapFlags.NO_PREALLOC:
        _fail(spec, "flags", "LRU maps are always preallocated: NO_PREALLOC is refused")
    if traits.preallocated and not traits.lru and flags & MapFlags.NO_PREALLOC:
        _fail(spec, "flags", "arrays are always preallocated: NO_PREALLOC is refused")
    if not traits.lru and flags & MapFlags.NO_COMMON_LRU:
        _fail(spec, "flags", "NO_COMMON_LRU is only for LRU maps")
    if traits.percpu and value_size > _PERCPU_VALUE_MAX:
        _fail(spec, "value_size", f"{value_size} exceeds the per-CPU limit {_PERCPU_VALUE_MAX}")
    if flags & MapFlags.MMAPABLE and not traits.mmapable:
        _fail(spec, "flags", "MMAPABLE is only for ARRAY (and ARENA) maps")
    if kind == MapType.ARENA and not flags & MapFlags.MMAPABLE:
        _fail(spec, "flags", "ARENA maps need MMAPABLE")
    if traits.needs_no_prealloc and not flags & MapFlags.NO_PREALLOC:
        _fail(spec, "flags", f"{kind.name} maps need NO_PREALLOC")
    if kind == MapType.LPM_TRIE and not 5 <= key_size <= 4 + 256:
        _fail(spec, "key_size", f"must be 4 (prefixlen) + 1..256 data bytes, not {key_size}")
    if kind == MapType.BLOOM_FILTER:
        if spec.map_extra & ~0xF:
            _fail(spec, "map_extra", f"only the low 4 bits (number of hashes) may be set, not {spec.map_extra:#x}")
    elif spec.map_extra and kind != MapType.ARENA:
        _fail(spec, "map_extra", "is only for BLOOM_FILTER (and ARENA) maps")
    if kind == MapType.STACK_TRACE and value_size % 8:
        _fail(spec, "value_size", "must be a multiple of 8 (stack frames are u64)")
    if traits.ring:
        n = spec.max_entries
        if n < _PAGE or n & (n - 1):
            _fail(spec, "max_entries", f"must be a power of 2 and a multiple of the page size ({_PAGE}), not {n}")
    _validate_inner(spec, kind)
    if spec.pinning not in (Pinning.NONE, Pinning.BY_NAME):
        _fail(spec, "pinning", f"{spec.pinning!r} is not NONE or BY_NAME")
    if spec.pinning == Pinning.BY_NAME and not spec.name:
        _fail(spec, "pinning", "BY_NAME needs a name")


def _validate_inner(spec: MapSpec, kind: MapType) -> None:
    """The template of a map of maps: a ``MapSpec``, or an existing map (or its fd) to copy."""
    of_maps = kind in (MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS)
    inner = spec.inner_map
    if not of_maps:
        if inner is not None:
            _fail(spec, "inner_map", "is only for ARRAY_OF_MAPS and HASH_OF_MAPS")
        return
    if inner is None:
        _fail(spec, "inner_map", "is required: the template of the maps it holds (a MapSpec or a Map)")
    if isinstance(inner, MapSpec):
        if inner.type in (MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS):
            _fail(spec, "inner_map", "a map-in-map cannot hold maps of maps")
        inner.validate()
    elif isinstance(inner, bool) or not (isinstance(inner, int) or hasattr(inner, "fd")):
        _fail(spec, "inner_map", f"must be a MapSpec, a Map or a map fd, not {type(inner).__name__}")
