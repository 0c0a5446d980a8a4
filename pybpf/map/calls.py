"""Per-thread call buffers for a map's element operations, and the operations as closures.

Each thread gets its own key, value and attr buffers, built once; a lookup is then one key
pack, one syscall and one decode. Threads never share a buffer (ctypes releases the GIL during
the syscall, so a shared one could be rewritten under the kernel's feet).
"""

from __future__ import annotations

import ctypes
import struct
import threading
import weakref
from typing import Any

from .._sys.attrs import MapBatchAttr, MapElemAttr
from .._sys.syscall import NR_BPF, get_errno, raw
from ..errors import BPFError
from .codec import Field

ELEM_SIZE = ctypes.sizeof(MapElemAttr)
BATCH_SIZE = ctypes.sizeof(MapBatchAttr)


def address(buf: bytearray) -> tuple[int, Any]:
    """The address of a bytearray's storage, and the ctypes view that pins it (keep it alive)."""
    view = (ctypes.c_char * max(len(buf), 1)).from_buffer(buf) if buf else None
    return (ctypes.addressof(view) if view is not None else 0), view


class Calls(threading.local):
    """One thread's call buffers for one map (key, value, next key, an attr per command) and the
    element operations as closures over them: the hot path touches only locals.

    Each command has its own attr because the kernel refuses non-zero bytes past a command's
    last field (a delete with a value pointer set is EINVAL).
    """

    def __init__(self, owner: weakref.ref[Any], fd: int, key: Field, value: Field, value_alloc: int, custom_values: bool) -> None:
        self.key = kbuf = bytearray(key.size)
        self.value = vbuf = bytearray(value_alloc)
        self.next_key = bytearray(key.size)
        key_addr, self._k = address(self.key)
        value_addr, self._v = address(self.value)
        next_addr, self._n = address(self.next_key)
        self.attr = MapElemAttr(map_fd=fd, key=key_addr, value=value_addr)
        self.ref = ref = ctypes.byref(self.attr)
        self.update_attr = MapElemAttr(map_fd=fd, key=key_addr, value=value_addr)  # flags stay ANY
        self.update_ref = upd_ref = ctypes.byref(self.update_attr)
        self.flagged_attr = flagged = MapElemAttr(map_fd=fd, key=key_addr, value=value_addr)
        flagged_ref = ctypes.byref(flagged)
        self.delete_attr = MapElemAttr(map_fd=fd, key=key_addr)
        self.delete_ref = del_ref = ctypes.byref(self.delete_attr)
        self.next_attr = MapElemAttr(map_fd=fd, key=key_addr, value=next_addr)
        self.next_ref = ctypes.byref(self.next_attr)
        self.first_attr = MapElemAttr(map_fd=fd, key=0, value=next_addr)
        self.first_ref = ctypes.byref(self.first_attr)

        put_key, fast_key = key.put, key.fast_put
        decode = value.decode
        if not custom_values:
            put_value, fast_value = value.put, value.fast_put
        else:
            def put_value(buf: bytearray, offset: int, obj: Any) -> None:
                owner()._put_value(buf, obj)  # type: ignore[union-attr]

            fast_value = put_value

        def fail(op: str, obj: Any) -> BPFError:
            return owner()._error(op, get_errno(), obj)  # type: ignore[union-attr]

        unpack = value.unpack_int  # the common u32/u64 value: decoded inline, no extra call

        def lookup(k: Any) -> Any:
            try:
                fast_key(kbuf, 0, k)
            except struct.error:
                put_key(kbuf, 0, k)
            if raw(NR_BPF, 1, ref, ELEM_SIZE) < 0:
                raise fail("lookup", k)
            return unpack(vbuf)[0] if unpack is not None else decode(vbuf)

        def update(k: Any, v: Any, flags: int) -> None:
            try:
                fast_key(kbuf, 0, k)
            except struct.error:
                put_key(kbuf, 0, k)
            try:
                fast_value(vbuf, 0, v)
            except struct.error:
                put_value(vbuf, 0, v)
            if flags:
                flagged.flags = flags
                if raw(NR_BPF, 2, flagged_ref, ELEM_SIZE) < 0:
                    raise fail("update", k)
            elif raw(NR_BPF, 2, upd_ref, ELEM_SIZE) < 0:
                raise fail("update", k)

        def delete(k: Any) -> None:
            try:
                fast_key(kbuf, 0, k)
            except struct.error:
                put_key(kbuf, 0, k)
            if raw(NR_BPF, 3, del_ref, ELEM_SIZE) < 0:
                raise fail("delete", k)

        self.lookup, self.update, self.delete = lookup, update, delete


class Closed:
    """Stands in for the call buffers of a closed map: any use says so."""

    def __getattr__(self, name: str) -> Any:
        raise ValueError("operation on a closed map")


CLOSED = Closed()
