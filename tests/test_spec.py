"""MapSpec.validate knows the kernel's rules: each refusal names the field, before any syscall."""

from __future__ import annotations

import ctypes

import pytest

from pybpf import MapFlags, MapSpec, MapType, Pinning

pytestmark = pytest.mark.nokernel


class Key(ctypes.Structure):
    _fields_ = [("addr", ctypes.c_uint32), ("port", ctypes.c_uint16)]


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        (MapSpec(MapType.SOCKMAP, 8, 8, 4), "key_size", "must be 4"),
        (MapSpec(MapType.SOCKMAP, 4, 2, 4), "value_size", "4 or 8"),
        (MapSpec(MapType.SOCKHASH, 16, 16, 4), "value_size", "4 or 8"),
        (MapSpec(MapType.XSKMAP, 4, 8, 4), "value_size", "must be 4"),
        (MapSpec(MapType.REUSEPORT_SOCKARRAY, 8, 8, 4), "key_size", "must be 4"),
        (MapSpec(MapType.ARRAY, 8, 4, 4), "key_size", "must be 4"),
        (MapSpec(MapType.HASH, 4, 4, 0), "max_entries", "positive"),
        (MapSpec(MapType.HASH, 0, 4, 4), "key_size", "positive"),
        (MapSpec(MapType.HASH, 4, 0, 4), "value_size", "positive"),
        (MapSpec(MapType.HASH, 1024, 4, 4), "key_size", "BPF stack"),
        (MapSpec(MapType.HASH, 4, 4, 4, name="a-b"), "name", "A-Za-z0-9_."),
        (MapSpec(MapType.HASH, 4, 4, 4, name="x" * 16), "name", "at most 15"),
        (MapSpec(MapType.HASH, 4, 4, 4, flags=MapFlags.RDONLY | MapFlags.WRONLY), "flags", "exclude"),
        (MapSpec(MapType.HASH, 4, 4, 4, flags=1 << 30), "flags", "unknown flag"),
        (MapSpec(MapType.LRU_HASH, 4, 4, 4, flags=MapFlags.NO_PREALLOC), "flags", "preallocated"),
        (MapSpec(MapType.HASH, 4, 4, 4, flags=MapFlags.NO_COMMON_LRU), "flags", "only for LRU"),
        (MapSpec(MapType.ARRAY, 4, 4, 4, flags=MapFlags.NO_PREALLOC), "flags", "preallocated"),
        (MapSpec(MapType.HASH, 4, 4, 4, flags=MapFlags.MMAPABLE), "flags", "MMAPABLE"),
        (MapSpec(MapType.LPM_TRIE, 8, 4, 4), "flags", "NO_PREALLOC"),
        (MapSpec(MapType.LPM_TRIE, 4, 4, 4, flags=MapFlags.NO_PREALLOC), "key_size", "prefixlen"),
        (MapSpec(MapType.QUEUE, 4, 4, 4), "key_size", "must be 0"),
        (MapSpec(MapType.BLOOM_FILTER, value_size=4, max_entries=4, map_extra=16), "map_extra", "low 4 bits"),
        (MapSpec(MapType.HASH, 4, 4, 4, map_extra=1), "map_extra", "BLOOM_FILTER"),
        (MapSpec(MapType.RINGBUF, max_entries=5000), "max_entries", "power of 2"),
        (MapSpec(MapType.ARRAY_OF_MAPS, 4, 4, 4), "inner_map", "required"),
        (MapSpec(MapType.HASH, 4, 4, 4, inner_map=MapSpec(MapType.ARRAY, 4, 4, 1)), "inner_map", "only for"),
        (MapSpec(MapType.ARRAY_OF_MAPS, 4, 4, 4, inner_map=MapSpec(MapType.ARRAY, 8, 4, 1)), "key_size", "must be 4"),
        (MapSpec(MapType.STACK_TRACE, 4, 12, 4), "value_size", "multiple of 8"),
        (MapSpec(MapType.SK_STORAGE, 4, 4, 0), "flags", "NO_PREALLOC"),
        (MapSpec(MapType.SK_STORAGE, 4, 4, 4, flags=MapFlags.NO_PREALLOC), "max_entries", "must be 0"),
        (MapSpec(MapType.HASH, 4, 4, 4, pinning=Pinning.BY_NAME), "pinning", "needs a name"),
        (MapSpec(MapType.HASH, 4, 4, 4, numa_node=-1), "numa_node", "node"),
        (MapSpec(MapType.HASH, None, 4, 4), "key_size", "required"),
        (MapSpec(MapType.HASH, 4, 4, -1), "max_entries", "unsigned"),
    ],
)
def test_refusals_name_the_field(spec: MapSpec, field: str, words: str) -> None:
    with pytest.raises(ValueError, match=f"MapSpec.{field}:.*{words}"):
        spec.validate()


def test_unknown_type() -> None:
    with pytest.raises(ValueError, match="MapSpec.type: unknown map type 999"):
        MapSpec(999, 4, 4, 4).validate()


def test_sizes_follow_ctypes_types() -> None:
    spec = MapSpec(MapType.HASH, key=Key, value=ctypes.c_uint64, max_entries=8).validate()
    assert (spec.key_size, spec.value_size) == (ctypes.sizeof(Key), 8)
    with pytest.raises(TypeError, match="MapSpec.key must be a ctypes type"):
        MapSpec(MapType.HASH, key=int, value_size=4, max_entries=1)


def test_valid_specs_pass_and_numa_sets_the_flag() -> None:
    for spec in [
        MapSpec(MapType.SOCKHASH, 16, 8, 4),
        MapSpec(MapType.SOCKMAP, 4, 4, 4),
        MapSpec(MapType.QUEUE, value_size=4, max_entries=4),
        MapSpec(MapType.RINGBUF, max_entries=8192),
        MapSpec(MapType.BLOOM_FILTER, value_size=4, max_entries=4, map_extra=15),
    ]:
        assert spec.validate() is spec
    assert MapSpec(MapType.HASH, 4, 4, 4, numa_node=0).create_flags & MapFlags.NUMA_NODE
