"""HASH, PERCPU_HASH, LRU_HASH, LRU_PERCPU_HASH and HASH_OF_MAPS (the kernel's ``hashtab.c``).

Order. The kernel walks its buckets, an order set by a random hash seed; the memory kernel walks
keys in the order they were inserted (an update of an existing key keeps its place). What the
kernel guarantees holds: every key once per walk, and ``get_next_key`` after a key that is gone
restarts from the first key. Batch tokens are 4-byte positions in that order (the kernel's are
bucket numbers), so a batch walk sees every key that lives through it exactly once; the memory
kernel never answers ENOSPC (it has no buckets that could outgrow a batch).

LRU. The memory kernel evicts exactly when a new key meets a full map, and evicts the entry least
recently updated (user-space lookups do not count as use, as in the kernel, where only programs'
lookups set the reference bit). The kernel's LRU is approximate: free nodes sit in per-CPU lists
and are refilled in batches, so it can evict before the map is full, evict several entries at
once, or evict the very key an update replaces (it takes a free node before it looks: EXIST can
then fail with ENOENT, NOEXIST succeed). With NO_COMMON_LRU each
CPU has its own list of ``max_entries / CPUs`` nodes. Code that needs an entry to survive must
not rely on either kernel's choice.
"""

from __future__ import annotations

import bisect
import collections
import errno
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from ..._sys.constants import Cmd, MapFlags, MapType
from ..._sys.cpus import possible_cpus
from .maps import (
    ACCESS_MASK,
    BATCH_ALL,
    EXIST,
    LOCK,
    NOEXIST,
    CreateRequest,
    MemMap,
    access_ok,
    register,
    round8,
)
from .objects import Errno, MemObject
from .releases import HASH_LOOKUP_AND_DELETE
from .sizes import kernel_mem_check

if TYPE_CHECKING:
    from .kernel import MemoryKernel

_FLAGS = int(MapFlags.NO_PREALLOC | MapFlags.NO_COMMON_LRU | MapFlags.NUMA_NODE | MapFlags.ZERO_SEED) | ACCESS_MASK
"""``HTAB_CREATE_FLAG_MASK``."""
_KMALLOC_MAX = 1 << 22  # KMALLOC_MAX_SIZE (order-10 pages): key + value must stay below it
_PCPU_MIN_UNIT_SIZE = 32768
_SEQ_LIMIT = 0xFFFFFFFF
ENOENT, EEXIST, E2BIG, EINVAL, EPERM = errno.ENOENT, errno.EEXIST, errno.E2BIG, errno.EINVAL, errno.EPERM


def _pow2(n: int) -> int:
    return 1 << (n - 1).bit_length() if n > 1 else 1


class _Snapshot:
    """The keys in insertion order at one moment, with their sequence numbers: positions for
    ``get_next_key`` and batch tokens that stay valid while keys are deleted. Entries from
    ``clean_from`` on are known to be all still there (a batch that drains the map keeps that so)."""

    __slots__ = ("keys", "seqs", "_pos", "next_seq", "deleted", "clean_from")

    def __init__(self, seq: dict[bytes, int], next_seq: int) -> None:
        self.keys = list(seq)
        self.seqs = list(seq.values())
        self._pos: dict[bytes, int] | None = None
        self.next_seq = next_seq
        self.deleted = 0
        self.clean_from = 0

    @property
    def pos(self) -> dict[bytes, int]:
        """Index of each key (made on first use: only ``get_next_key`` needs it)."""
        if self._pos is None:
            self._pos = {k: i for i, k in enumerate(self.keys)}
        return self._pos


@register
class HashMap(MemMap):
    """A hash map: ``data`` maps key bytes to value bytes; ``seq`` numbers keys by insertion."""

    types: ClassVar[tuple[MapType, ...]] = (MapType.HASH, MapType.PERCPU_HASH, MapType.LRU_HASH,
                                            MapType.LRU_PERCPU_HASH)
    batch_commands = BATCH_ALL

    def __init__(self, req: CreateRequest, kernel: MemoryKernel) -> None:
        super().__init__(req, kernel)
        self.lru = req.type in (MapType.LRU_HASH, MapType.LRU_PERCPU_HASH)
        if self.lru and req.flags & MapFlags.NO_COMMON_LRU:
            cpus = possible_cpus()  # each CPU's list gets the same number of nodes
            rounded = -(-req.max_entries // cpus) * cpus
            self.max_entries = rounded if rounded <= 0xFFFFFFFF else req.max_entries // cpus * cpus
        self.data: dict[bytes, Any] = {}
        self.seq: dict[bytes, int] = {}
        self.next_seq = 0
        self.recent: OrderedDict[bytes, None] = OrderedDict()
        """LRU maps: keys from least to most recently updated."""
        self._snap: _Snapshot | None = None

    @classmethod
    def check(cls, req: CreateRequest) -> None:
        percpu = req.type in (MapType.PERCPU_HASH, MapType.LRU_PERCPU_HASH)
        lru = req.type in (MapType.LRU_HASH, MapType.LRU_PERCPU_HASH)
        if req.flags & ~_FLAGS or not access_ok(req.flags):
            raise Errno(EINVAL)
        if not lru and req.flags & MapFlags.NO_COMMON_LRU:
            raise Errno(EINVAL)
        if lru and req.flags & MapFlags.NO_PREALLOC:
            raise Errno(524)
        if req.numa_node != -1 and (percpu or req.flags & MapFlags.NO_COMMON_LRU):
            raise Errno(EINVAL)
        if req.max_entries == 0 or req.key_size == 0 or req.value_size == 0:
            raise Errno(EINVAL)
        if req.key_size + req.value_size >= _KMALLOC_MAX - 48:
            raise Errno(E2BIG)
        if percpu and round8(req.value_size) > _PCPU_MIN_UNIT_SIZE:
            raise Errno(E2BIG)
        if req.max_entries > 1 << 31 or _pow2(req.max_entries) > 0xFFFFFFFF // 16:
            raise Errno(E2BIG)  # the bucket array's size must fit 32 bits
        if not req.flags & MapFlags.NO_PREALLOC:
            elem = 48 + round8(req.key_size) + (8 + round8(req.value_size) * possible_cpus() if percpu else round8(req.value_size))
            kernel_mem_check((req.max_entries + possible_cpus()) * elem)

    # ---- insertion order ------------------------------------------------------------------------
    # ``data`` keeps keys in insertion order. ``seq`` numbers them, lazily: a key inserted since the
    # last walk has no number yet, and such keys are all at the end of ``data`` (an insertion always
    # goes to the end), so numbering them is a walk back from the end. Inserts stay one dict store.

    def _insert(self, key: bytes, value: Any) -> None:
        """Add a new key (the caller checked room and flags)."""
        self.data[key] = value
        if self.lru:
            self.recent[key] = None

    def _remove(self, key: bytes) -> Any:
        value = self.data.pop(key)
        self.seq.pop(key, None)
        if self.lru:
            del self.recent[key]
        snap = self._snap
        if snap is not None:
            snap.deleted += 1
            snap.clean_from = len(snap.keys)  # which entry went is not known here
        return value

    def take(self, snap: _Snapshot, start: int, end: int) -> list[Any]:
        """Remove the keys ``snap.keys[start:end]`` (all there: the clean part of the snapshot) and
        return their stored values; what follows them stays clean."""
        keys = snap.keys[start:end]
        data, seq = self.data, self.seq
        values = [data.pop(k) for k in keys]
        collections.deque(map(seq.__delitem__, keys), maxlen=0)  # numbered: they are in the snapshot
        if self.lru:
            collections.deque(map(self.recent.__delitem__, keys), maxlen=0)
        snap.deleted += len(keys)
        return values

    def put_many(self, keys: list[bytes], values: list[bytes]) -> None:
        """Update many keys with flags 0 (a batch update): at C speed when they all fit; else one
        by one, stopping at the first refusal (the kernel's count: ``Errno.done``)."""
        data = self.data
        fresh = [k for k in dict.fromkeys(keys) if k not in data]
        if type(self) is HashMap and not self.lru and len(data) + len(fresh) <= self.max_entries:
            data.update(zip(keys, values))
            return
        for done, (key, value) in enumerate(zip(keys, values)):
            try:
                self.update(key, value, 0)
            except Errno as refused:
                refused.done = done  # type: ignore[attr-defined]
                raise

    def _number(self) -> None:
        """Give the keys inserted since the last walk their sequence numbers."""
        seq, data = self.seq, self.data
        if len(seq) == len(data):
            return
        tail: list[bytes] = []
        for key in reversed(data):
            if key in seq:
                break
            tail.append(key)
        tail.reverse()
        if self.next_seq + len(tail) >= _SEQ_LIMIT:  # u32 tokens: number everything again from 0
            seq.clear()
            self.next_seq = 0
            tail = list(data)
            self._snap = None
        seq.update(zip(tail, range(self.next_seq, self.next_seq + len(tail))))
        self.next_seq += len(tail)

    def _snapshot(self) -> _Snapshot:
        """The current order; a snapshot taken before only deletions stays usable."""
        self._number()
        snap = self._snap
        if snap is None or snap.next_seq != self.next_seq or snap.deleted * 2 > len(snap.keys) + 16:
            snap = self._snap = _Snapshot(self.seq, self.next_seq)
        return snap

    def ordered_from(self, first_seq: int) -> Iterator[tuple[bytes, int]]:
        """Keys (with their sequence numbers) from sequence ``first_seq`` on, in order: the walk
        behind batch tokens, lazily."""
        snap = self._snapshot()
        seq = self.seq
        keys, seqs = snap.keys, snap.seqs
        for j in range(bisect.bisect_left(seqs, first_seq), len(keys)):
            if seq.get(keys[j]) == seqs[j]:
                yield keys[j], seqs[j]

    # ---- elements -------------------------------------------------------------------------------

    def _show(self, stored: Any) -> bytes:
        """What user space reads for a stored value (maps of maps store the map, show its id)."""
        return stored  # type: ignore[no-any-return]

    def _keep(self, stored: Any) -> None:
        """A stored value enters the map (maps of maps hold the inner map)."""

    def _drop(self, stored: Any) -> None:
        """A stored value leaves the map (maps of maps release the inner map)."""

    def lookup(self, key: bytes | None, flags: int = 0) -> bytes:
        assert key is not None
        stored = self.data.get(key)
        if stored is None:
            raise Errno(ENOENT)
        return self._show(stored)

    def update(self, key: bytes | None, value: bytes, flags: int) -> None:
        assert key is not None
        self._put(key, value, flags)

    def _put(self, key: bytes, stored: Any, flags: int) -> None:
        """``htab_map_update_elem`` and its LRU and per-CPU variants, in the kernel's order."""
        if self.lru or self.percpu:
            if flags > EXIST:
                raise Errno(EINVAL)
        elif flags & ~LOCK > EXIST:
            raise Errno(EINVAL)
        if flags & LOCK:
            raise Errno(EINVAL)  # no bpf_spin_lock in the value: the memory kernel has no BTF records
        old = self.data.get(key)
        if old is not None and flags == NOEXIST:
            raise Errno(EEXIST)
        if old is None and flags == EXIST:
            raise Errno(ENOENT)
        if old is not None:
            self._keep(stored)
            self.data[key] = stored
            self._drop(old)
            if self.lru:
                self.recent.move_to_end(key)
            return
        if len(self.data) >= self.max_entries:
            if not self.lru:
                raise Errno(E2BIG)
            self._evict()
        self._keep(stored)
        self._insert(key, stored)

    def _evict(self) -> None:
        """Make room in a full LRU map: the least recently updated entry goes."""
        victim = next(iter(self.recent))
        self._drop(self._remove(victim))

    def delete(self, key: bytes | None) -> None:
        assert key is not None
        if key not in self.data:
            raise Errno(ENOENT)
        self._drop(self._remove(key))

    def lookup_and_delete(self, key: bytes | None, flags: int) -> bytes:
        assert key is not None
        if flags & LOCK:
            raise Errno(EINVAL)
        if key not in self.data:
            raise Errno(ENOENT)
        stored = self._remove(key)
        shown = self._show(stored)
        self._drop(stored)
        return shown

    def next_key(self, key: bytes | None) -> bytes:
        data = self.data
        if key is None or key not in data:
            for first in data:
                return first
            raise Errno(ENOENT)
        snap = self._snapshot()
        i = snap.pos.get(key)
        if i is None or snap.seqs[i] != self.seq[key]:
            snap = self._snap = _Snapshot(self.seq, self.next_seq)
            i = snap.pos[key]
        seq = self.seq
        keys, seqs = snap.keys, snap.seqs
        for j in range(i + 1, len(keys)):
            if seq.get(keys[j]) == seqs[j]:
                return keys[j]
        raise Errno(ENOENT)

    def released(self) -> list[MemObject]:
        held = super().released()
        for stored in self.data.values():
            held.extend(self._held(stored))
        self.data.clear()
        return held

    def _held(self, stored: Any) -> list[MemObject]:
        return []

    # ---- the fast path --------------------------------------------------------------------------

    def fast_ops(self, key_view: Any, value_view: Any, lock: Any) -> dict[int, Callable[[], int]] | None:
        if type(self) is not HashMap:
            return None
        mp, data, seq, lru, recent = self, self.data, self.seq, self.lru, self.recent
        max_entries, remove = self.max_entries, self._remove
        acquire, release = lock.acquire, lock.release  # cheaper than ``with lock``

        def lookup() -> int:  # a read of one dict entry: atomic, no lock (as the kernel's RCU read)
            stored = data.get(key_view.raw)
            if stored is None:
                return ENOENT
            value_view.raw = stored
            return 0

        def update() -> int:
            if mp.frozen:
                return EPERM
            key = key_view.raw
            acquire()
            try:
                if key in data:
                    data[key] = value_view.raw
                    if lru:
                        recent.move_to_end(key)
                    return 0
                if len(data) >= max_entries:
                    if not lru:
                        return E2BIG
                    mp._evict()
                data[key] = value_view.raw
                if lru:
                    recent[key] = None
                return 0
            finally:
                release()

        def delete() -> int:
            if mp.frozen:
                return EPERM
            key = key_view.raw
            acquire()
            try:
                if data.pop(key, None) is None:  # stored values are never None
                    return ENOENT
                seq.pop(key, None)
                if lru:
                    del recent[key]
                snap = mp._snap
                if snap is not None:
                    snap.deleted += 1
                    snap.clean_from = len(snap.keys)
                return 0
            finally:
                release()

        def lookup_and_delete() -> int:
            if mp.frozen:
                return EPERM
            key = key_view.raw
            acquire()
            try:
                if key not in data:
                    return ENOENT
                value_view.raw = remove(key)
                return 0
            finally:
                release()

        ops: dict[int, Callable[[], int]] = {Cmd.MAP_LOOKUP_ELEM: lookup, Cmd.MAP_UPDATE_ELEM: update,
                                             Cmd.MAP_DELETE_ELEM: delete}
        if HASH_LOOKUP_AND_DELETE.in_release(self.kernel.version):  # else the full path says ENOTSUPP
            ops[Cmd.MAP_LOOKUP_AND_DELETE_ELEM] = lookup_and_delete
        return ops


@register
class HashOfMaps(HashMap):
    """HASH_OF_MAPS: values are maps compatible with the template; lookups give their ids."""

    types: ClassVar[tuple[MapType, ...]] = (MapType.HASH_OF_MAPS,)
    fd_values = True

    def __init__(self, req: CreateRequest, kernel: MemoryKernel) -> None:
        super().__init__(req, kernel)
        assert req.inner is not None
        self.template = template_of(req.inner)

    @classmethod
    def check(cls, req: CreateRequest) -> None:
        if req.value_size != 4:
            raise Errno(EINVAL)
        HashMap.check(req)

    def update(self, key: bytes | None, value: bytes, flags: int) -> None:
        assert key is not None
        self._put(key, self.kernel.inner_map(self.template, value), flags)

    def _show(self, stored: Any) -> bytes:
        return int(stored.id).to_bytes(4, sys.byteorder)

    def _keep(self, stored: Any) -> None:
        self.kernel.hold(stored)

    def _drop(self, stored: Any) -> None:
        self.kernel.release(stored)

    def _held(self, stored: Any) -> list[MemObject]:
        return [stored]


def template_of(inner: MemMap) -> tuple[Any, ...]:
    """What ``bpf_map_meta_equal`` compares (and arrays' ``max_entries`` unless INNER_MAP)."""
    entries = inner.max_entries if inner.type == MapType.ARRAY and not inner.flags & MapFlags.INNER_MAP else None
    return (inner.type, inner.key_size, inner.value_size, inner.flags, entries)
