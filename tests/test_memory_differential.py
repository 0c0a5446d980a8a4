"""The memory kernel against the real one: random sequences of map operations (create with random
specs, updates with every flag, deletes, lookups, walks, batches, freeze, pins, ids, mmap) are
applied to both, and every result and every error (type, errno, batch count) must be identical.

Where the kernel leaves a choice, the comparison is what the kernel guarantees: a hash map walk
gives each key once (the set is compared, not the order), ``get_next_key`` of a key that is gone
gives some key of the map; LRU maps may evict different entries, so after each operation both
drop what the other evicted and must agree from there (never more than ``max_entries``, nothing
appears but what was written); an update of a key already there may fail or succeed by the
kernel evicting that very key first (it takes a free node before it looks). Bloom filters: values added are found by both; the kernel may also
find some never added (false positives), the memory kernel never.

``PYBPF_DIFFERENTIAL_EXAMPLES`` sets the number of sequences (CI: 10,000 on this kernel).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pybpf
from pybpf import BPFError, Map, MapFlags, MapSpec, MapType, UpdateFlags
from pybpf._sys import commands
from pybpf._sys.attrs import MapCreateAttr
from pybpf._sys.syscall import use_door
from pybpf.testing import MemoryKernel

EXAMPLES = int(os.environ.get("PYBPF_DIFFERENTIAL_EXAMPLES", "10000"))
CREATE_EXAMPLES = int(os.environ.get("PYBPF_DIFFERENTIAL_CREATE_EXAMPLES", str(max(200, EXAMPLES // 10))))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
BPFFS = Path("/sys/fs/bpf")
ORDER = sys.byteorder

HASHES = (MapType.HASH, MapType.PERCPU_HASH, MapType.LRU_HASH, MapType.LRU_PERCPU_HASH)
LRU = (MapType.LRU_HASH, MapType.LRU_PERCPU_HASH)
ORDERED = (MapType.ARRAY, MapType.PERCPU_ARRAY, MapType.ARRAY_OF_MAPS, MapType.LPM_TRIE)
"""Types whose walk order the kernel defines (index order, the trie's post-order)."""
INNER = MapSpec(MapType.ARRAY, 4, 4, 2)


# ---- specs and operations ------------------------------------------------------------------------

@st.composite
def map_specs(draw: st.DrawFn) -> MapSpec:
    """A valid spec of a type the memory kernel has (pybpf refuses invalid ones before any call)."""
    kind = draw(st.sampled_from([*HASHES, MapType.ARRAY, MapType.PERCPU_ARRAY, MapType.LPM_TRIE, MapType.QUEUE,
                                 MapType.STACK, MapType.BLOOM_FILTER, MapType.HASH_OF_MAPS, MapType.ARRAY_OF_MAPS]))
    access = draw(st.sampled_from([0, 0, 0, MapFlags.RDONLY, MapFlags.WRONLY, MapFlags.RDONLY_PROG]))
    entries = draw(st.integers(1, 6))
    if kind in HASHES:
        flags = access | draw(st.sampled_from([0, MapFlags.NO_PREALLOC] if kind not in LRU else [0, MapFlags.NO_COMMON_LRU]))
        return MapSpec(kind, draw(st.sampled_from([1, 2, 4, 8, 12])), draw(st.sampled_from([1, 4, 8, 12])), entries,
                       flags=flags)
    if kind in (MapType.ARRAY, MapType.PERCPU_ARRAY):
        flags = access | (draw(st.sampled_from([0, MapFlags.MMAPABLE])) if kind == MapType.ARRAY else 0)
        return MapSpec(kind, 4, draw(st.sampled_from([1, 4, 8, 13])), entries, flags=flags)
    if kind == MapType.LPM_TRIE:
        return MapSpec(kind, draw(st.integers(5, 7)), draw(st.sampled_from([1, 4, 8])), entries,
                       flags=MapFlags.NO_PREALLOC | access)
    if kind in (MapType.QUEUE, MapType.STACK):
        return MapSpec(kind, value_size=draw(st.sampled_from([1, 4, 8])), max_entries=entries, flags=access)
    if kind == MapType.BLOOM_FILTER:
        return MapSpec(kind, value_size=draw(st.sampled_from([1, 4, 8])), max_entries=entries,
                       map_extra=draw(st.integers(0, 15)), flags=access)
    key = 4 if kind == MapType.ARRAY_OF_MAPS else draw(st.sampled_from([1, 4, 8]))
    return MapSpec(kind, key, 4, entries, inner_map=INNER, flags=access & ~MapFlags.RDONLY_PROG)


def _key(spec: MapSpec, draw: st.DrawFn) -> bytes:
    size = spec.key_size or 0
    if spec.type == MapType.LPM_TRIE:
        data_bits = (size - 4) * 8
        prefix = draw(st.integers(0, data_bits + 1))
        data = draw(st.sampled_from([0, 0xFF, 0x80, 0x0A, 0x0A01, 0x0A0102, 0xC0A8]))
        return prefix.to_bytes(4, ORDER) + (data % (1 << ((size - 4) * 8))).to_bytes(size - 4, "big")
    limit = (spec.max_entries + 2) if spec.type in (MapType.ARRAY, MapType.PERCPU_ARRAY, MapType.ARRAY_OF_MAPS) \
        else 2 * spec.max_entries + 2
    return (draw(st.integers(0, limit)) % (1 << (8 * size))).to_bytes(size, ORDER)


def _value(spec: MapSpec, draw: st.DrawFn) -> bytes:
    size = spec.value_size or 0
    return (draw(st.integers(0, 300)) % (1 << (8 * size))).to_bytes(size, ORDER)


FLAGS = st.sampled_from([UpdateFlags.ANY, UpdateFlags.ANY, UpdateFlags.NOEXIST, UpdateFlags.EXIST, 3, UpdateFlags.LOCK])


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[MapSpec, list[tuple[Any, ...]]]:
    """A spec and a sequence of operations that fit its type."""
    spec = draw(map_specs())
    kind = spec.type
    ops: list[tuple[Any, ...]] = []
    keyed = kind not in (MapType.QUEUE, MapType.STACK, MapType.BLOOM_FILTER)
    of_maps = kind in (MapType.HASH_OF_MAPS, MapType.ARRAY_OF_MAPS)
    for _ in range(draw(st.integers(1, 14))):
        choice = draw(st.integers(0, 99))
        if keyed:
            key = _key(spec, draw)
            if choice < 35:
                value: Any = draw(st.sampled_from(["inner0", "inner1", "wrong"])) if of_maps else _value(spec, draw)
                ops.append(("update", key, value, draw(FLAGS)))
            elif choice < 48:
                ops.append(("lookup", key))
            elif choice < 56:
                ops.append(("delete", key))
            elif choice < 60:
                ops.append(("lookup_and_delete", key))
            elif choice < 65:
                ops.append(("next_key", draw(st.none() | st.just(key))))
            elif choice < 69:
                ops.append(("walk",))
            elif choice < 72:
                ops.append(("items",))
            elif choice < 78:
                keys = [_key(spec, draw) for _ in range(draw(st.integers(0, 4)))]
                values = [draw(st.sampled_from(["inner0", "inner1"])) if of_maps else _value(spec, draw) for _ in keys]
                ops.append(("update_batch", keys, values))
            elif choice < 82:
                ops.append(("delete_batch", [_key(spec, draw) for _ in range(draw(st.integers(0, 3)))]))
            elif choice < 86:
                ops.append(("lookup_batch", draw(st.integers(1, 4)), draw(st.booleans())))
            elif choice < 88:
                ops.append(("clear",))
            elif choice < 90:
                ops.append(("len",))
            elif choice < 92:
                ops.append(("freeze",))
            elif choice < 95:
                ops.append(("pin", key, _value(spec, draw) if not of_maps else "inner0"))
            elif choice < 97:
                ops.append(("by_id", key))
            elif choice < 98:
                ops.append(("info",))
            elif not spec.flags & MapFlags.RDONLY:  # see arrays.py: a read-only fd maps only in memory
                ops.append(("mmap", draw(st.integers(0, 255))))
        elif kind == MapType.BLOOM_FILTER:
            value = _value(spec, draw)
            ops.append(("add" if choice < 50 else "contains" if choice < 95 else "freeze", value))
        else:
            if choice < 45:
                ops.append(("push", _value(spec, draw), draw(st.sampled_from([0, 0, UpdateFlags.EXIST, UpdateFlags.NOEXIST]))))
            elif choice < 70:
                ops.append(("pop",))
            elif choice < 90:
                ops.append(("peek",))
            elif choice < 95:
                ops.append(("bool",))
            else:
                ops.append(("freeze",))
    return spec, ops


# ---- running both --------------------------------------------------------------------------------

class Side:
    """One kernel of the comparison: the real one (``memory`` None) or a memory kernel."""

    def __init__(self, memory: MemoryKernel | None, pin_dir: Path) -> None:
        self.memory = memory
        self.pin_dir = pin_dir
        self.maps: dict[str, Map] = {}
        self.names: dict[int, str] = {}

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        if self.memory is None:
            yield
        else:
            with use_door(self.memory.door):
                yield

    def run(self, fn: Callable[[], Any]) -> tuple[Any, ...]:
        """``fn``'s result, normalized, or its error as (type, errno, count)."""
        with self.active():
            try:
                return ("ok", self.normal(fn()))
            except BPFError as err:
                return ("error", type(err).__name__, err.errno, err.done)
            except (ValueError, TypeError) as err:
                return ("error", type(err).__name__, str(err))
            except OSError as err:
                return ("error", type(err).__name__, err.errno)

    def normal(self, result: Any) -> Any:
        if isinstance(result, Iterator):
            result = list(result)
        if isinstance(result, Map):
            return ("map", result.type, result.key_size, result.value_size, result.max_entries)
        return result

    def make(self, name: str, spec: MapSpec) -> tuple[Any, ...]:
        holder: list[Map] = []

        def create() -> tuple[Any, ...]:
            made = Map.create(spec)
            holder.append(made)
            return ("map", made.type, made.key_size, made.value_size, made.max_entries, made.flags)

        outcome = self.run(create)
        if holder:
            self.maps[name] = holder[0]
            self.names[holder[0].id] = name
        return outcome

    def close(self) -> None:
        for m in self.maps.values():
            m.close()
        self.maps.clear()


def _map_value(side: Side, spec: MapSpec, value: Any) -> Any:
    """Values for maps of maps are maps by name ("wrong": a map of another shape)."""
    if spec.type in (MapType.HASH_OF_MAPS, MapType.ARRAY_OF_MAPS):
        return side.maps[value]
    return value


def _ids_to_names(side: Side, spec: MapSpec, result: Any) -> Any:
    if spec.type not in (MapType.HASH_OF_MAPS, MapType.ARRAY_OF_MAPS) or result[0] != "ok":
        return result
    value = result[1]
    if isinstance(value, int):
        return ("ok", side.names.get(value, "?"))
    if isinstance(value, dict):
        return ("ok", {k: side.names.get(v, "?") for k, v in value.items()})
    if isinstance(value, list) and value and isinstance(value[0], tuple):
        return ("ok", sorted((k, side.names.get(v, "?")) for k, v in value))
    return result


def apply(side: Side, spec: MapSpec, op: tuple[Any, ...], serial: int) -> tuple[Any, ...]:
    """Run one operation on one side; the outcome, normalized for comparison."""
    m = side.maps["main"]
    name = op[0]
    if name == "update":
        return side.run(lambda: m.update(op[1], _map_value(side, spec, op[2]), op[3]))
    if name == "lookup":
        return _ids_to_names(side, spec, side.run(lambda: m.lookup(op[1])))
    if name == "delete":
        return side.run(lambda: m.delete(op[1]))
    if name == "lookup_and_delete":
        return side.run(lambda: m.lookup_and_delete(op[1]))
    if name == "next_key":
        return side.run(lambda: m._next_key_bytes(op[1]))
    if name == "walk":
        return side.run(lambda: list(m._iter_key_bytes()))
    if name == "items":
        return _ids_to_names(side, spec, side.run(lambda: dict(m.items())))
    if name == "update_batch":
        return side.run(lambda: m.update_batch(op[1], [_map_value(side, spec, v) for v in op[2]]))
    if name == "delete_batch":
        return side.run(lambda: m.delete_batch(op[1]))
    if name == "lookup_batch":
        return _ids_to_names(side, spec, side.run(lambda: sorted(m.lookup_batch(op[1], delete=op[2]))))
    if name == "clear":
        return side.run(m.clear)
    if name == "len":
        return side.run(lambda: len(m))
    if name == "freeze":
        return side.run(m.freeze)
    if name == "pin":
        return side.run(lambda: _pin_and_reopen(side, m, op[1], _map_value(side, spec, op[2]), serial))
    if name == "by_id":
        return _ids_to_names(side, spec, side.run(lambda: _by_id(m, op[1])))
    if name == "info":
        return side.run(lambda: _info(m))
    if name == "mmap":
        return side.run(lambda: _through_mmap(m, op[1]))
    if name == "add":
        return side.run(lambda: m.add(op[1]))
    if name == "contains":
        return side.run(lambda: op[1] in m)
    if name == "push":
        return side.run(lambda: m.push(op[1], op[2]))
    if name == "pop":
        return side.run(m.pop)
    if name == "peek":
        return side.run(m.peek)
    if name == "bool":
        return side.run(lambda: bool(m))
    raise AssertionError(name)


def _pin_and_reopen(side: Side, m: Map, key: bytes, value: Any, serial: int) -> tuple[Any, ...]:
    """Pin, open the pin read-only (a write is EPERM) and read-write, then remove the pin."""
    path = side.pin_dir / f"m{serial}"
    m.pin(path)
    try:
        with Map.from_pin(path, readonly=True) as ro:
            refused = _error_of(lambda: ro.update(key, value))
            seen = _error_of(lambda: ro.lookup(key))
        with Map.from_pin(path) as rw:
            wrote = _error_of(lambda: rw.update(key, value))
        return (refused, seen if isinstance(seen, tuple) else "value", wrote if isinstance(wrote, tuple) else "ok")
    finally:
        if side.memory is not None:
            side.memory.fs.unlink(path)
        else:
            os.unlink(path)


def _error_of(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except BPFError as err:
        return (type(err).__name__, err.errno)


def _by_id(m: Map, key: bytes) -> Any:
    with Map.from_id(m.id) as again:
        return again.lookup(key)


def _info(m: Map) -> tuple[Any, ...]:
    info = m.info()
    return (info.type, info.name, info.key_size, info.value_size, info.max_entries, info.flags, info.map_extra)


def _through_mmap(m: Map, byte: int) -> tuple[Any, ...]:
    view = m.mmap()
    try:
        before = bytes(view)
        if not view.readonly:
            view[0] = byte
        return before, m.lookup(0), view.readonly
    finally:
        view.release()


def _keys(side: Side) -> set[bytes]:
    """The main map's keys, through a read-write fd of it (the test's own may be write-only)."""
    with side.active():
        return set(side.maps.get("rw", side.maps["main"])._iter_key_bytes())


def reconcile_lru(kernel: Side, memory: Side, op: tuple[Any, ...], before: set[bytes]) -> None:
    """After an operation on an LRU map: an update may have evicted entries, differently on each
    side; check what both must keep, then drop from each side what the other lost."""
    k_keys, m_keys = _keys(kernel), _keys(memory)
    inserting = op[0] in ("update", "update_batch", "pin")
    written = {op[1]} if op[0] in ("update", "pin") else set(op[1]) if op[0] == "update_batch" else set()
    with kernel.active():
        limit = kernel.maps["main"].info().max_entries  # NO_COMMON_LRU rounds it to the CPUs
    for keys in (k_keys, m_keys):
        assert len(keys) <= limit, (op, keys)
        assert keys - before <= written, (op, before, keys)  # nothing appears but what was written
    if not inserting:
        assert k_keys == m_keys, f"{op}: kernel {sorted(k_keys)} != memory {sorted(m_keys)} (no insert, no eviction)"
    for side, extra in ((kernel, k_keys - m_keys), (memory, m_keys - k_keys)):
        with side.active():
            for key in extra:
                side.maps["rw"].delete(key)


def compare(spec: MapSpec, op: tuple[Any, ...], k: tuple[Any, ...], m: tuple[Any, ...], kernel: Side,
            before: set[bytes]) -> bool:
    """Identical outcomes, or the differences the kernel allows (see the module docstring); True
    when an LRU update succeeded on the kernel only (the memory side then catches up)."""
    name = op[0]
    if spec.type in HASHES + (MapType.HASH_OF_MAPS,):
        if name == "walk" and k[0] == m[0] == "ok":
            assert len(k[1]) == len(set(k[1])) and len(m[1]) == len(set(m[1])), (k, m)
            k, m = ("ok", sorted(k[1])), ("ok", sorted(m[1]))
        if name == "next_key" and k[0] == m[0] == "ok":
            keys = _keys(kernel)
            assert all(r[1] is None or r[1] in keys for r in (k, m)), (k, m, keys)
            if op[1] is None or op[1] not in keys:  # from the start (again): a key iff there is one
                assert (k[1] is None) == (m[1] is None) == (not keys), (k, m, keys)
            return False  # after a key that is there: the next in each kernel's own order, or the end
    if spec.type in LRU and name == "update" and k != m:
        # The kernel's LRU takes a free node (evicting if it must) before it looks for the key, so
        # the key itself may go: then NOEXIST succeeds and EXIST fails (ENOENT) where the memory
        # kernel, which replaces in place, says EEXIST or succeeds.
        if op[3] == UpdateFlags.NOEXIST and k == ("ok", None) and m[:3] == ("error", "KeyExistsError", errno.EEXIST):
            return True
        if op[3] == UpdateFlags.EXIST and m == ("ok", None) and k[:3] == ("error", "KeyNotFoundError", errno.ENOENT):
            return False
    if spec.type == MapType.BLOOM_FILTER and name == "contains" and m == ("ok", False):
        return False  # the kernel's filter may have a false positive here
    assert k == m, f"{op}: kernel {k} != memory {m}"
    return False


class Sides:
    """The two kernels of the comparison, with the maps that maps of maps take as values (made
    once: closing BPF maps costs the kernel an RCU grace period each)."""

    def __init__(self, pin_dir: Path) -> None:
        self.memory = MemoryKernel()
        self.memory.fs.mkdir(str(pin_dir), 0o700)
        self.kernel, self.mem = Side(None, pin_dir), Side(self.memory, pin_dir)
        for side in self.both:
            side.make("inner0", INNER)
            side.make("inner1", INNER)
            side.make("wrong", MapSpec(MapType.HASH, 4, 4, 2))

    @property
    def both(self) -> tuple[Side, Side]:
        return self.kernel, self.mem

    def close(self) -> None:
        for side in self.both:
            side.close()
        self.memory.close()


def run_scenario(spec: MapSpec, ops: list[tuple[Any, ...]], sides: Sides) -> None:
    kernel_side, memory_side = sides.both
    try:
        made = kernel_side.make("main", spec), memory_side.make("main", spec)
        assert made[0] == made[1], f"create {spec}: kernel {made[0]} != memory {made[1]}"
        if made[0][0] != "ok":
            return
        lru = spec.type in LRU
        if lru:
            for side in sides.both:
                with side.active():
                    side.maps["rw"] = Map.from_id(side.maps["main"].id)
        for serial, op in enumerate(ops):
            before = _keys(kernel_side) if lru else set()
            k = apply(kernel_side, spec, op, serial)
            m = apply(memory_side, spec, op, serial)
            if compare(spec, op, k, m, kernel_side, before):
                with memory_side.active():
                    memory_side.maps["rw"].update(op[1], op[2])
            if lru:
                reconcile_lru(kernel_side, memory_side, op, before)
        final = [apply(side, spec, ("walk",), len(ops)) for side in sides.both]
        compare(spec, ("walk",), final[0], final[1], kernel_side, set())
    finally:
        for side in sides.both:
            for name in ("main", "rw"):
                made_map = side.maps.pop(name, None)
                if made_map is not None:
                    made_map.close()


@pytest.fixture(scope="module")
def sides() -> Iterator[Sides]:
    path = BPFFS / f"pybpf-test-{uuid.uuid4().hex[:12]}"
    path.mkdir()
    both = Sides(path)
    try:
        yield both
    finally:
        both.close()
        shutil.rmtree(path, ignore_errors=True)


@SETTINGS
@given(scenarios())
def test_random_sequences_agree(sides: Sides, scenario: tuple[MapSpec, list[tuple[Any, ...]]]) -> None:
    spec, ops = scenario
    run_scenario(spec, ops, sides)


# ---- raw creates: the kernel's attribute checks, bypassing MapSpec.validate ---------------------

_CREATE_TYPES = [MapType.HASH, MapType.ARRAY, MapType.PERCPU_HASH, MapType.PERCPU_ARRAY, MapType.LRU_HASH,
                 MapType.LRU_PERCPU_HASH, MapType.LPM_TRIE, MapType.QUEUE, MapType.STACK, MapType.BLOOM_FILTER,
                 MapType.SOCKMAP, MapType.SOCKHASH, MapType.REUSEPORT_SOCKARRAY, MapType.RINGBUF, MapType.ARRAY_OF_MAPS, 0, 200]
_FLAG_BITS = [0, MapFlags.NO_PREALLOC, MapFlags.NO_COMMON_LRU, MapFlags.RDONLY, MapFlags.WRONLY, MapFlags.RDONLY_PROG,
              MapFlags.WRONLY_PROG, MapFlags.MMAPABLE, MapFlags.INNER_MAP, MapFlags.PRESERVE_ELEMS, MapFlags.ZERO_SEED,
              MapFlags.NUMA_NODE, 1 << 25]


@st.composite
def create_attrs(draw: st.DrawFn) -> dict[str, Any]:
    flags = 0
    for _ in range(draw(st.integers(0, 3))):
        flags |= int(draw(st.sampled_from(_FLAG_BITS)))
    return dict(
        map_type=draw(st.sampled_from(_CREATE_TYPES)),
        key_size=draw(st.sampled_from([0, 1, 4, 5, 8, 261, 600])),
        value_size=draw(st.sampled_from([0, 1, 4, 8, 32768, 40000])),
        max_entries=draw(st.sampled_from([0, 1, 4, 64, 4096, 0xFFFFFFFF])),
        map_flags=flags,
        numa_node=draw(st.sampled_from([0, 1, 4000])),
        map_extra=draw(st.sampled_from([0, 3, 16])),
        map_name=draw(st.sampled_from([b"", b"ok_name", b"bad-name", b"x" * 16])),
    )


def _raw_create(fields: dict[str, Any]) -> int | tuple[str, int]:
    attr = MapCreateAttr(**fields)
    try:
        fd = commands.map_create(attr)
    except BPFError as err:
        return ("error", err.errno)
    os.close(fd)
    return 0


@settings(max_examples=CREATE_EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(create_attrs())
def test_raw_create_checks_agree(fields: dict[str, Any]) -> None:
    huge_array = fields["max_entries"] == 0xFFFFFFFF and fields["map_type"] not in HASHES
    if huge_array:
        fields["max_entries"] = 64  # a 4-billion-entry array would really be allocated by the kernel
    kernel = _raw_create(fields)
    memory = MemoryKernel()
    try:
        with use_door(memory.door):
            mine = _raw_create(fields)
    finally:
        memory.close()
    assert kernel == mine, f"{fields}: kernel {kernel} != memory {mine}"


def test_errno_of_a_closed_fd_and_of_a_foreign_fd() -> None:
    """Operations on an fd that is not a map: EBADF when closed, EINVAL for another file."""
    memory = MemoryKernel()
    r, w = os.pipe()
    try:
        for fd in (r, 1000):
            outcomes = []
            for door in (None, memory.door):
                with use_door(door) if door is not None else contextlib.nullcontext():
                    try:
                        commands.map_freeze(fd)
                    except BPFError as err:
                        outcomes.append(err.errno)
            assert outcomes[0] == outcomes[1] == (errno.EINVAL if fd == r else errno.EBADF)
    finally:
        os.close(r)
        os.close(w)
        memory.close()



# ---- socket maps: real sockets of every kind, on both kernels --------------------------------------

SOCKET_EXAMPLES = int(os.environ.get("PYBPF_DIFFERENTIAL_SOCKET_EXAMPLES", str(max(50, EXAMPLES // 50))))


def _sockets() -> list[socket.socket]:
    """One socket of each kind the kernel treats differently (see memory/sockets.py)."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    udp.bind(("127.0.0.1", 0))
    unix_a, _unix_b = socket.socketpair()
    return [listener, client, server, udp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(),
            unix_a, _unix_b]


@st.composite
def socket_scenarios(draw: st.DrawFn) -> tuple[MapType, int, list[tuple[Any, ...]]]:
    kind = draw(st.sampled_from([MapType.SOCKMAP, MapType.SOCKHASH, MapType.REUSEPORT_SOCKARRAY]))
    entries = draw(st.integers(1, 4))
    ops: list[tuple[Any, ...]] = []
    for _ in range(draw(st.integers(1, 12))):
        slot = draw(st.integers(0, entries + 1)).to_bytes(4, ORDER)
        ops.append(draw(st.sampled_from([
            ("update", slot, draw(st.integers(0, 7)), draw(st.sampled_from([0, 0, 1, 2, 4]))),
            ("lookup", slot), ("delete", slot), ("walk",), ("close", draw(st.integers(0, 7))),
        ])))
    return kind, entries, ops


@settings(max_examples=SOCKET_EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(socket_scenarios())
def test_socket_map_sequences_agree(scenario: tuple[MapType, int, list[tuple[Any, ...]]]) -> None:
    kind, entries, ops = scenario
    socks = _sockets()
    cookies = {pybpf.socket_cookie(s): i for i, s in enumerate(socks)}
    memory = MemoryKernel()
    maps: list[Map] = []
    try:
        for door in (None, memory.door):
            with use_door(door) if door is not None else contextlib.nullcontext():
                maps.append(Map.create(type=kind, key_size=4, value_size=8, max_entries=entries))
        for op in ops:
            if op[0] == "close":
                socks[op[1]].close()
                continue
            outcomes = []
            for bpf_map, door in zip(maps, (None, memory.door)):
                with use_door(door) if door is not None else contextlib.nullcontext():
                    try:
                        if op[0] == "update":
                            sock = socks[op[2]]
                            result: Any = bpf_map.update(op[1], sock if sock.fileno() >= 0 else 10**6, op[3])
                        elif op[0] == "lookup":
                            result = cookies.get(bpf_map.lookup(op[1]), "?")
                        elif op[0] == "delete":
                            result = bpf_map.delete(op[1])
                        else:
                            result = sorted(bpf_map._iter_key_bytes())
                        outcomes.append(("ok", result))
                    except BPFError as err:
                        outcomes.append(("error", type(err).__name__, err.errno))
                    except (ValueError, TypeError) as err:
                        outcomes.append(("error", type(err).__name__, str(err)))
            assert outcomes[0] == outcomes[1], f"{kind.name} {op}: kernel {outcomes[0]} != memory {outcomes[1]}"
    finally:
        for bpf_map in maps:
            bpf_map.close()
        for s in socks:
            s.close()
        memory.close()
