"""Feature probes: what the running kernel can do, asked once and cached."""

from __future__ import annotations

import ctypes
import functools
import os
import re

from ._sys.constants import MapFlags, MapType
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

MAP_TYPE_SINCE: dict[MapType, tuple[int, int]] = {
    MapType.HASH: (3, 19), MapType.ARRAY: (3, 19), MapType.PROG_ARRAY: (4, 2), MapType.PERF_EVENT_ARRAY: (4, 3),
    MapType.PERCPU_HASH: (4, 6), MapType.PERCPU_ARRAY: (4, 6), MapType.STACK_TRACE: (4, 6),
    MapType.CGROUP_ARRAY: (4, 8), MapType.LRU_HASH: (4, 10), MapType.LRU_PERCPU_HASH: (4, 10),
    MapType.LPM_TRIE: (4, 11), MapType.ARRAY_OF_MAPS: (4, 12), MapType.HASH_OF_MAPS: (4, 12),
    MapType.DEVMAP: (4, 14), MapType.SOCKMAP: (4, 14), MapType.CPUMAP: (4, 15), MapType.XSKMAP: (4, 18),
    MapType.SOCKHASH: (4, 18), MapType.CGROUP_STORAGE: (4, 19), MapType.REUSEPORT_SOCKARRAY: (4, 19),
    MapType.PERCPU_CGROUP_STORAGE: (4, 20), MapType.QUEUE: (4, 20), MapType.STACK: (4, 20),
    MapType.SK_STORAGE: (5, 2), MapType.DEVMAP_HASH: (5, 4), MapType.STRUCT_OPS: (5, 6), MapType.RINGBUF: (5, 8),
    MapType.INODE_STORAGE: (5, 10), MapType.TASK_STORAGE: (5, 11), MapType.BLOOM_FILTER: (5, 16),
    MapType.USER_RINGBUF: (6, 1), MapType.CGRP_STORAGE: (6, 2), MapType.ARENA: (6, 9),
}
"""The kernel release that introduced each map type (from the kernel's history)."""


SOCKMAP_LINK_SINCE = (6, 10)
"""``BPF_LINK_CREATE`` for sockmap/sockhash programs arrived in Linux 6.10."""


@functools.cache
def kernel_version() -> tuple[int, int]:
    """``(major, minor)`` of the running kernel."""
    match = re.match(r"(\d+)\.(\d+)", os.uname().release)
    if match is None:  # pragma: no cover - every Linux release string starts so
        raise RuntimeError(f"cannot read the kernel version from {os.uname().release!r}")
    return int(match[1]), int(match[2])


def kernel_has(since: tuple[int, int]) -> bool:
    """Whether the running kernel is at least ``since``."""
    return kernel_version() >= since


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
