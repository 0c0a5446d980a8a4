"""Prebuilt attrs for a map's element commands: built once per map and thread, so that an element
operation is one pack into a fixed buffer and one syscall.

Each command has its own attr because the kernel refuses non-zero bytes past a command's last
field (a delete with a value pointer set is EINVAL).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterator
from typing import Any

from .attrs import MapBatchAttr, MapElemAttr
from .constants import Cmd

LOOKUP = int(Cmd.MAP_LOOKUP_ELEM)
UPDATE = int(Cmd.MAP_UPDATE_ELEM)
DELETE = int(Cmd.MAP_DELETE_ELEM)
NEXT_KEY = int(Cmd.MAP_GET_NEXT_KEY)
LOOKUP_AND_DELETE = int(Cmd.MAP_LOOKUP_AND_DELETE_ELEM)
"""Command numbers as plain ints: the hot path passes them straight to the syscall."""

ELEM_SIZE = ctypes.sizeof(MapElemAttr)
BATCH_SIZE = ctypes.sizeof(MapBatchAttr)


def address(buf: bytearray) -> tuple[int, Any]:
    """The address of a bytearray's storage, and the ctypes view that pins it (keep it alive)."""
    view = (ctypes.c_char * max(len(buf), 1)).from_buffer(buf) if buf else None
    return (ctypes.addressof(view) if view is not None else 0), view


class ElemAttrs:
    """One thread's attrs for one map, over its key, value and next-key buffers.

    ``*_ref`` are the ``byref`` arguments for the syscall; ``flagged`` is the update attr whose
    ``flags`` the caller sets (``update_ref`` keeps flags at 0, the common case).
    """

    def __init__(self, fd: int, key: bytearray, value: bytearray, next_key: bytearray) -> None:
        key_addr, self._k = address(key)
        value_addr, self._v = address(value)
        next_addr, self._n = address(next_key)
        self.lookup_ref = ctypes.byref(MapElemAttr(map_fd=fd, key=key_addr, value=value_addr))
        self.update_ref = ctypes.byref(MapElemAttr(map_fd=fd, key=key_addr, value=value_addr))
        self.flagged = MapElemAttr(map_fd=fd, key=key_addr, value=value_addr)
        self.flagged_ref = ctypes.byref(self.flagged)
        self.delete_ref = ctypes.byref(MapElemAttr(map_fd=fd, key=key_addr))
        self.next_ref = ctypes.byref(MapElemAttr(map_fd=fd, key=key_addr, value=next_addr))
        self.first_ref = ctypes.byref(MapElemAttr(map_fd=fd, key=0, value=next_addr))
        self.keyless_ref = ctypes.byref(MapElemAttr(map_fd=fd, key=0, value=value_addr))
        self.keyless_flagged = MapElemAttr(map_fd=fd, key=0, value=value_addr)
        self.keyless_flagged_ref = ctypes.byref(self.keyless_flagged)


def batch_attr(fd: int, keys: int, values: int, count: int, elem_flags: int = 0,
               in_batch: int = 0, out_batch: int = 0) -> MapBatchAttr:
    """The attr of one ``BPF_MAP_*_BATCH`` command over buffers at the given addresses."""
    return MapBatchAttr(in_batch=in_batch, out_batch=out_batch, keys=keys, values=values, count=count,
                        map_fd=fd, elem_flags=elem_flags)


def walk_keys(next_key: Callable[[bytes | None], bytes | None], max_entries: int) -> Iterator[bytes]:
    """Every key once, by ``get_next_key`` (``next_key(None)`` is the first key, None the end).

    The kernel restarts from the first key when the previous one was deleted, so keys already
    seen are skipped, and a walk that finds nothing new for two map-sizes of steps stops: a map
    churned by another process cannot keep it going forever."""
    seen: set[bytes] = set()
    prev: bytes | None = None
    patience = 2 * max_entries + 2  # steps allowed without finding an unseen key
    while patience > 0:
        patience -= 1
        key = next_key(prev)
        if key is None:
            return
        prev = key
        if key not in seen:
            seen.add(key)
            patience = 2 * max_entries + 2
            yield key
