"""Feature probes: what the running kernel can do, asked once and cached; and the kernel releases
that introduced each feature (``MAP_TYPE_SINCE``, ``SOCKMAP_LINK_SINCE``, ``kernel_has``)."""

from __future__ import annotations

import ctypes
import functools

from ._sys.constants import MapFlags, MapType
from ._sys.kernel import MAP_TYPE_SINCE, SOCKMAP_LINK_SINCE, kernel_has, kernel_version
from .errors import BPFError
from .map.map import Map
from .map.spec import MapSpec

_PROBE_SPECS: dict[MapType, MapSpec] = {
    MapType.LPM_TRIE: MapSpec(MapType.LPM_TRIE, 8, 4, 1, flags=MapFlags.NO_PREALLOC),
    MapType.RINGBUF: MapSpec(MapType.RINGBUF, max_entries=4096),
    MapType.USER_RINGBUF: MapSpec(MapType.USER_RINGBUF, max_entries=4096),
    MapType.QUEUE: MapSpec(MapType.QUEUE, value_size=4, max_entries=1),
    MapType.STACK: MapSpec(MapType.STACK, value_size=4, max_entries=1),
    MapType.BLOOM_FILTER: MapSpec(MapType.BLOOM_FILTER, value_size=4, max_entries=1),
    MapType.ARRAY_OF_MAPS: MapSpec(MapType.ARRAY_OF_MAPS, 4, 4, 1, inner_map=MapSpec(MapType.ARRAY, 4, 4, 1)),
    MapType.HASH_OF_MAPS: MapSpec(MapType.HASH_OF_MAPS, 4, 4, 1, inner_map=MapSpec(MapType.ARRAY, 4, 4, 1)),
    MapType.SOCKHASH: MapSpec(MapType.SOCKHASH, 4, 8, 1),
    MapType.STACK_TRACE: MapSpec(MapType.STACK_TRACE, 4, 8, 1),
    MapType.CGROUP_STORAGE: MapSpec(MapType.CGROUP_STORAGE, 8, 4, 0),
    MapType.PERCPU_CGROUP_STORAGE: MapSpec(MapType.PERCPU_CGROUP_STORAGE, 8, 4, 0),
    MapType.ARENA: MapSpec(MapType.ARENA, max_entries=1, flags=MapFlags.MMAPABLE),
    **{
        t: MapSpec(t, key=ctypes.c_int32, value=ctypes.c_uint64, max_entries=0, flags=MapFlags.NO_PREALLOC)
        for t in (MapType.SK_STORAGE, MapType.INODE_STORAGE, MapType.TASK_STORAGE, MapType.CGRP_STORAGE)
    },
}

__all__ = [
    "MAP_TYPE_SINCE", "SOCKMAP_LINK_SINCE", "have_batch_ops", "have_map_flag", "have_map_type", "kernel_has",
    "kernel_version",
]


@functools.cache
def have_map_type(map_type: MapType) -> bool:
    """Whether this kernel can create maps of ``map_type`` (by creating a tiny one)."""
    spec = _PROBE_SPECS.get(MapType(map_type)) or MapSpec(map_type, 4, 4, 1)
    try:
        Map.create(spec).close()
    except (BPFError, ValueError):
        return False
    return True


@functools.cache
def have_map_flag(map_type: MapType, flag: MapFlags) -> bool:
    """Whether ``map_type`` accepts ``flag`` at creation (e.g. ARRAY with MMAPABLE)."""
    spec = (_PROBE_SPECS.get(MapType(map_type)) or MapSpec(map_type, 4, 4, 1)).copy()
    spec.flags = int(spec.flags) | flag
    try:
        Map.create(spec).close()
    except (BPFError, ValueError):
        return False
    return True


@functools.cache
def have_batch_ops() -> bool:
    """Whether ``BPF_MAP_*_BATCH`` works on hash maps (Linux 5.6+)."""
    with Map.create(MapSpec(MapType.HASH, 4, 4, 1)) as probe:
        try:
            probe.update_batch([0], [0])
        except BPFError:
            return False
    return True
