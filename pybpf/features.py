"""Feature probes: what the running kernel can do, asked once and cached."""

from __future__ import annotations

import functools

from ._sys.constants import MapFlags, MapType
from .errors import BPFError
from .maps.map import Map
from .maps.spec import MapSpec

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
}


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
