"""The running kernel's release, and the releases that introduced features (kernel history)."""

from __future__ import annotations

import functools
import os
import re

from .constants import MapType

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
