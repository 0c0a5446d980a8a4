"""``MapSpec``: a map described as plain data, checked against the kernel's rules without the kernel."""

from __future__ import annotations

import ctypes
import dataclasses
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .._sys.constants import ALL_MAP_FLAGS, OBJ_NAME_LEN, MapFlags, MapType, Pinning

if TYPE_CHECKING:
    from ..btf import BtfHandle

_PAGE = 4096
_NAME_RE = re.compile(r"^[A-Za-z0-9_.]*$")

_HASHES = {MapType.HASH, MapType.PERCPU_HASH, MapType.LRU_HASH, MapType.LRU_PERCPU_HASH}
_LRU = {MapType.LRU_HASH, MapType.LRU_PERCPU_HASH}
_PERCPU = {MapType.PERCPU_HASH, MapType.PERCPU_ARRAY, MapType.LRU_PERCPU_HASH, MapType.PERCPU_CGROUP_STORAGE}
_ARRAYS = {MapType.ARRAY, MapType.PERCPU_ARRAY}
_NO_KEY = {MapType.QUEUE, MapType.STACK, MapType.BLOOM_FILTER, MapType.RINGBUF, MapType.USER_RINGBUF, MapType.ARENA}
_LOCAL_STORAGE = {MapType.SK_STORAGE, MapType.INODE_STORAGE, MapType.TASK_STORAGE, MapType.CGRP_STORAGE}
_OF_MAPS = {MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS}

# (key_size rule, value_size rule) where the kernel fixes them: None = any positive size.
_FIXED_SIZES: dict[MapType, tuple[tuple[int, ...] | None, tuple[int, ...] | None]] = {
    MapType.ARRAY: ((4,), None),
    MapType.PERCPU_ARRAY: ((4,), None),
    MapType.PROG_ARRAY: ((4,), (4,)),
    MapType.PERF_EVENT_ARRAY: ((4,), (4,)),
    MapType.CGROUP_ARRAY: ((4,), (4,)),
    MapType.ARRAY_OF_MAPS: ((4,), (4,)),
    MapType.HASH_OF_MAPS: (None, (4,)),
    MapType.DEVMAP: ((4,), (4, 8)),
    MapType.DEVMAP_HASH: ((4,), (4, 8)),
    MapType.CPUMAP: ((4,), (4, 8)),
    MapType.SOCKMAP: ((4,), (4, 8)),
    MapType.SOCKHASH: (None, (4, 8)),
    MapType.XSKMAP: ((4,), (4,)),
    MapType.REUSEPORT_SOCKARRAY: ((4,), (4, 8)),
    MapType.STACK_TRACE: ((4,), None),
    MapType.CGROUP_STORAGE: ((8, 12), None),
    MapType.PERCPU_CGROUP_STORAGE: ((8, 12), None),
    MapType.SK_STORAGE: ((4,), None),
    MapType.INODE_STORAGE: ((4,), None),
    MapType.TASK_STORAGE: ((4,), None),
    MapType.CGRP_STORAGE: ((4,), None),
}

_MAX_HASH_KEY = 512  # MAX_BPF_STACK: a hash key must fit on the BPF stack
_PERCPU_VALUE_MAX = 32768  # PCPU_MIN_UNIT_SIZE


def is_percpu(map_type: int) -> bool:
    """Whether values of this map type are one per possible CPU."""
    return map_type in _PERCPU


def type_size(ctype: Any, field: str) -> int:
    """The size of a ctypes type given as ``key``/``value``; TypeError naming the field otherwise."""
    if isinstance(ctype, type) and issubclass(ctype, ctypes._SimpleCData | ctypes.Structure | ctypes.Union | ctypes.Array):
        return ctypes.sizeof(ctype)
    raise TypeError(f"MapSpec.{field} must be a ctypes type (c_uint32, a Structure, ...), not {ctype!r}")


@dataclasses.dataclass
class MapSpec:
    """Everything ``BPF_MAP_CREATE`` needs, as data. Sizes follow from ``key``/``value`` when given.

    ``inner_map`` is the template ``MapSpec`` of an ARRAY_OF_MAPS/HASH_OF_MAPS; ``contents`` are
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
    inner_map: MapSpec | None = None
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
        if self.key_size is None:
            self.key_size = 0 if _known(self.type) in _NO_KEY else None  # type: ignore[assignment]
        if self.value_size is None and _known(self.type) in (MapType.RINGBUF, MapType.USER_RINGBUF, MapType.ARENA):
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


def _known(map_type: int) -> MapType | None:
    try:
        return MapType(map_type)
    except ValueError:
        return None


def _fail(spec: MapSpec, field: str, why: str) -> None:
    kind = _known(spec.type)
    label = kind.name if kind is not None else str(spec.type)
    raise ValueError(f"MapSpec.{field}: {why} (map type {label}{', ' + repr(spec.name) if spec.name else ''})")


def _validate(spec: MapSpec) -> None:  # noqa: C901 - one table of kernel rules, read top to bottom
    kind = _known(spec.type)
    if kind is None or kind == MapType.UNSPEC:
        raise ValueError(f"MapSpec.type: unknown map type {spec.type!r}")
    if not isinstance(spec.name, str) or len(spec.name.encode()) >= OBJ_NAME_LEN or not _NAME_RE.match(spec.name):
        _fail(spec, "name", f"{spec.name!r} must be at most {OBJ_NAME_LEN - 1} characters of [A-Za-z0-9_.]")
    for field in ("key_size", "value_size", "max_entries", "map_extra", "ifindex", "btf_key_type_id", "btf_value_type_id"):
        val = getattr(spec, field)
        if val is None:
            _fail(spec, field, "is required (give it, or a ctypes type as key/value)")
        if not isinstance(val, int) or val < 0 or val >= (1 << (64 if field == "map_extra" else 32)):
            _fail(spec, field, f"{val!r} is not a valid unsigned integer")
    flags = spec.create_flags
    if flags & ~ALL_MAP_FLAGS:
        _fail(spec, "flags", f"unknown flag bits {flags & ~ALL_MAP_FLAGS:#x}")
    if spec.numa_node is not None and (not isinstance(spec.numa_node, int) or spec.numa_node < 0):
        _fail(spec, "numa_node", f"{spec.numa_node!r} is not a node number")
    if (flags & MapFlags.RDONLY) and (flags & MapFlags.WRONLY):
        _fail(spec, "flags", "RDONLY and WRONLY exclude each other")
    if (flags & MapFlags.RDONLY_PROG) and (flags & MapFlags.WRONLY_PROG):
        _fail(spec, "flags", "RDONLY_PROG and WRONLY_PROG exclude each other")
    key_size, value_size = spec.key_size, spec.value_size
    assert key_size is not None and value_size is not None

    fixed = _FIXED_SIZES.get(kind)
    if fixed:
        keys, values = fixed
        if keys and key_size not in keys:
            _fail(spec, "key_size", f"must be {' or '.join(map(str, keys))}, not {key_size}")
        if values and value_size not in values:
            _fail(spec, "value_size", f"must be {' or '.join(map(str, values))}, not {value_size}")
    if kind in _NO_KEY and key_size != 0:
        _fail(spec, "key_size", f"must be 0, not {key_size}")
    needs_key = kind not in _NO_KEY
    if needs_key and key_size == 0:
        _fail(spec, "key_size", "must be positive")
    if kind not in (MapType.RINGBUF, MapType.USER_RINGBUF, MapType.ARENA) and value_size == 0:
        _fail(spec, "value_size", "must be positive")
    if kind in _LOCAL_STORAGE or kind in (MapType.CGROUP_STORAGE, MapType.PERCPU_CGROUP_STORAGE):
        if spec.max_entries != 0:
            _fail(spec, "max_entries", "must be 0 for storage maps")
    elif spec.max_entries == 0:
        _fail(spec, "max_entries", "must be positive")

    if kind in _HASHES:
        if key_size > _MAX_HASH_KEY:
            _fail(spec, "key_size", f"{key_size} exceeds the BPF stack ({_MAX_HASH_KEY})")
        if kind in _LRU and flags & MapFlags.NO_PREALLOC:
            _fail(spec, "flags", "LRU maps are always preallocated: NO_PREALLOC is refused")
        if kind not in _LRU and flags & MapFlags.NO_COMMON_LRU:
            _fail(spec, "flags", "NO_COMMON_LRU is only for LRU maps")
    if kind in _PERCPU and value_size > _PERCPU_VALUE_MAX:
        _fail(spec, "value_size", f"{value_size} exceeds the per-CPU limit {_PERCPU_VALUE_MAX}")
    if kind in _ARRAYS and flags & MapFlags.NO_PREALLOC:
        _fail(spec, "flags", "arrays are always preallocated: NO_PREALLOC is refused")
    if flags & MapFlags.MMAPABLE and kind not in (MapType.ARRAY, MapType.ARENA):
        _fail(spec, "flags", "MMAPABLE is only for ARRAY (and ARENA) maps")
    if kind == MapType.ARENA and not flags & MapFlags.MMAPABLE:
        _fail(spec, "flags", "ARENA maps need MMAPABLE")
    if kind == MapType.LPM_TRIE:
        if not flags & MapFlags.NO_PREALLOC:
            _fail(spec, "flags", "LPM_TRIE maps need NO_PREALLOC")
        if not 5 <= key_size <= 4 + 256:
            _fail(spec, "key_size", f"must be 4 (prefixlen) + 1..256 data bytes, not {key_size}")
    if kind in _LOCAL_STORAGE and not flags & MapFlags.NO_PREALLOC:
        _fail(spec, "flags", "local storage maps need NO_PREALLOC")
    if kind == MapType.BLOOM_FILTER:
        if spec.map_extra & ~0xF:
            _fail(spec, "map_extra", f"only the low 4 bits (number of hashes) may be set, not {spec.map_extra:#x}")
    elif spec.map_extra and kind != MapType.ARENA:
        _fail(spec, "map_extra", "is only for BLOOM_FILTER (and ARENA) maps")
    if kind == MapType.STACK_TRACE and value_size % 8:
        _fail(spec, "value_size", "must be a multiple of 8 (stack frames are u64)")
    if kind in (MapType.RINGBUF, MapType.USER_RINGBUF):
        if value_size:
            _fail(spec, "value_size", "must be 0")
        n = spec.max_entries
        if n < _PAGE or n & (n - 1):
            _fail(spec, "max_entries", f"must be a power of 2 and a multiple of the page size ({_PAGE}), not {n}")
    if kind in _OF_MAPS:
        if spec.inner_map is None:
            _fail(spec, "inner_map", "is required: the template of the maps it holds")
        assert spec.inner_map is not None
        if _known(spec.inner_map.type) in _OF_MAPS:
            _fail(spec, "inner_map", "a map-in-map cannot hold maps of maps")
        spec.inner_map.validate()
    elif spec.inner_map is not None:
        _fail(spec, "inner_map", "is only for ARRAY_OF_MAPS and HASH_OF_MAPS")
    if spec.pinning not in (Pinning.NONE, Pinning.BY_NAME):
        _fail(spec, "pinning", f"{spec.pinning!r} is not NONE or BY_NAME")
    if spec.pinning == Pinning.BY_NAME and not spec.name:
        _fail(spec, "pinning", "BY_NAME needs a name")


def map_type_name(value: int) -> str:
    """``MapType`` name of ``value``, or ``type N`` for a type this library does not know."""
    known = _known(value)
    return known.name if known is not None else f"type {value}"
