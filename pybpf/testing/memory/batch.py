"""``BPF_MAP_*_BATCH``: the kernel's generic batch functions (``syscall.c``) for arrays and tries,
and the hash maps' own (``hashtab.c``), with the same partial counts and errors.

A failing batch reports how many elements it processed in ``count`` (updates and deletes stop at
the first failure). A lookup batch ends with ENOENT together with the last elements. Generic
lookups walk ``get_next_key`` (skipping keys without a value from Linux 6.14; before, giving up
with EINTR after three in a row: an ARRAY_OF_MAPS with an empty slot did that); hash lookups hand
out 4-byte positions as tokens.
"""

from __future__ import annotations

import bisect
import ctypes
import errno
import struct
from typing import Any

from ..._sys.attrs import MapBatchAttr
from .hashmaps import HashMap
from .maps import LOCK, MemMap
from .objects import Errno

_RETRIES = 3
_TOKEN = struct.Struct("=I")


def read(addr: int, size: int) -> bytes:
    """``copy_from_user``: EFAULT for a NULL pointer (other bad pointers are trusted, not checked)."""
    if size == 0:
        return b""
    if not addr:
        raise Errno(errno.EFAULT)
    return ctypes.string_at(addr, size)


def write(addr: int, data: bytes) -> None:
    """``copy_to_user``."""
    if not data:
        return
    if not addr:
        raise Errno(errno.EFAULT)
    ctypes.memmove(addr, data, len(data))


def _elem_flags(attr: MapBatchAttr) -> None:
    if attr.elem_flags & ~LOCK or attr.elem_flags & LOCK:
        raise Errno(errno.EINVAL)


def update_batch(obj: MemMap, attr: MapBatchAttr) -> int:
    """``generic_map_update_batch``."""
    _elem_flags(attr)
    max_count = attr.count
    if not max_count:
        return 0
    attr.count = 0
    ks, vs = obj.key_size, obj.value_in
    keys, values = read(attr.keys, ks * max_count), read(attr.values, vs * max_count)
    if isinstance(obj, HashMap) and not attr.elem_flags:
        try:
            obj.put_many([keys[i: i + ks] for i in range(0, ks * max_count, ks)],
                         [values[i: i + vs] for i in range(0, vs * max_count, vs)])
        except Errno as refused:
            attr.count = getattr(refused, "done", 0)
            raise
        attr.count = max_count
        return 0
    done = 0
    try:
        for done in range(max_count):
            obj.update(keys[done * ks: (done + 1) * ks], values[done * vs: (done + 1) * vs], attr.elem_flags)
        done = max_count
    finally:
        attr.count = done
    return 0


def delete_batch(obj: MemMap, attr: MapBatchAttr) -> int:
    """``generic_map_delete_batch``."""
    _elem_flags(attr)
    max_count = attr.count
    if not max_count:
        return 0
    attr.count = 0
    ks = obj.key_size
    keys = read(attr.keys, ks * max_count)
    done = 0
    try:
        for done in range(max_count):
            obj.delete(keys[done * ks: (done + 1) * ks])
        done = max_count
    finally:
        attr.count = done
    return 0


def lookup_batch(obj: MemMap, attr: MapBatchAttr, skip_holes: bool) -> int:
    """``generic_map_lookup_batch``: ``get_next_key`` from the key in ``in_batch``. Before Linux
    6.14 a key whose value vanished is retried three times, then the batch fails with EINTR (an
    empty slot of an ARRAY_OF_MAPS always does); from 6.14 it is skipped."""
    _elem_flags(attr)
    max_count = attr.count
    if not max_count:
        return 0
    attr.count = 0
    ks = obj.key_size
    prev = read(attr.in_batch, ks) if attr.in_batch else None
    keys: list[bytes] = []
    values: list[bytes] = []
    retry, err = _RETRIES, 0
    while len(keys) < max_count:
        try:
            key = obj.next_key(prev)
        except Errno as refused:
            err = refused.code
            break
        try:
            value = obj.lookup(key)
        except Errno as refused:
            if refused.code != errno.ENOENT:
                raise
            if skip_holes:  # 6.14 on: a key without a value (an empty slot) is passed over
                prev = key
                continue
            if retry:
                retry -= 1
                continue
            err = errno.EINTR
            break
        keys.append(key)
        values.append(value)
        prev, retry = key, _RETRIES
    write(attr.keys, b"".join(keys))
    write(attr.values, b"".join(values))
    attr.count = len(keys)
    if keys:
        write(attr.out_batch, keys[-1])
    if err:
        raise Errno(err)
    return 0


def hash_lookup_batch(obj: HashMap, attr: MapBatchAttr, delete: bool) -> int:
    """``__htab_map_lookup_and_delete_batch``: tokens are positions in insertion order."""
    _elem_flags(attr)
    if attr.flags:
        raise Errno(errno.EINVAL)
    max_count = attr.count
    if not max_count:
        return 0
    attr.count = 0
    start = _TOKEN.unpack(read(attr.in_batch, 4))[0] if attr.in_batch else 0
    snap = obj._snapshot()
    first = bisect.bisect_left(snap.seqs, start)
    values: list[Any]
    if first >= snap.clean_from:  # every entry from here on is there: slices, no checks
        end = min(first + max_count, len(snap.keys))
        taken = snap.keys[first:end]
        next_token = snap.seqs[end] if end < len(snap.keys) else -1
        stored = obj.take(snap, first, end) if delete else list(map(obj.data.__getitem__, taken))
        if delete:
            snap.clean_from = max(snap.clean_from, end)
        values = stored if type(obj) is HashMap else [obj._show(v) for v in stored]
        if delete and type(obj) is not HashMap:
            for held in stored:
                obj._drop(held)
    else:
        taken = []
        next_token = -1
        for key, seq in obj.ordered_from(start):
            if len(taken) == max_count:
                next_token = seq
                break
            taken.append(key)
        values = [obj.lookup(k) for k in taken]
        if delete:
            for key in taken:
                obj.delete(key)
    write(attr.keys, b"".join(taken))
    write(attr.values, b"".join(values))
    attr.count = len(taken)
    write(attr.out_batch, _TOKEN.pack(next_token if next_token >= 0 else min(obj.next_seq, 0xFFFFFFFF)))
    if next_token < 0:
        raise Errno(errno.ENOENT)
    return 0
