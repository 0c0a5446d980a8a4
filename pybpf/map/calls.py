"""Per-thread call buffers for a map's element operations, and the operations as closures.

Each thread gets its own key, value and attr buffers, built once; a lookup is then one key
pack, one syscall and one decode. Threads never share a buffer (ctypes releases the GIL during
the syscall, so a shared one could be rewritten under the kernel's feet). The syscall goes
through the door the map was made with (``pybpf._sys.syscall``), bound here once.
"""

from __future__ import annotations

import struct
import threading
import weakref
from typing import Any

from .._sys.constants import UpdateFlags
from .._sys.elem import DELETE, ELEM_SIZE, LOOKUP, UPDATE, ElemAttrs
from .._sys.syscall import NR_BPF, Door
from ..errors import BPFError
from .codec import Field


_ALL_UPDATE_FLAGS = int(UpdateFlags.NOEXIST | UpdateFlags.EXIST | UpdateFlags.LOCK)


class Calls(threading.local):
    """One thread's call buffers for one map (key, value, next key, an attr per command) and the
    element operations as closures over them: the hot path touches only locals."""

    def __init__(self, owner: weakref.ref[Any], fd: int, gate: Door, key: Field, value: Field, value_alloc: int,
                 custom_values: bool) -> None:
        users = owner()._users  # type: ignore[union-attr]
        users.add(threading.get_ident())
        self.key = kbuf = bytearray(key.size)
        self.value = vbuf = bytearray(value_alloc)
        self.next_key = bytearray(key.size)
        self.attrs = attrs = ElemAttrs(fd, self.key, self.value, self.next_key)
        self.raw = raw = gate.raw
        self.get_errno = get_errno = gate.get_errno
        lookup_ref, update_ref, delete_ref = attrs.lookup_ref, attrs.update_ref, attrs.delete_ref
        flagged, flagged_ref = attrs.flagged, attrs.flagged_ref

        put_key, fast_key = key.put, key.fast_put
        decode = value.decode
        if not custom_values:
            put_value, fast_value = value.put, value.fast_put
        else:
            def put_value(buf: bytearray, offset: int, obj: Any) -> None:
                owner()._put_value(buf, obj)

            fast_value = put_value

        def fail(op: str, obj: Any) -> BPFError | ValueError:
            return owner()._error(op, get_errno(), obj)  # type: ignore[no-any-return]

        unpack = value.unpack_int  # the common u32/u64 value: decoded inline, no extra call

        def lookup(k: Any) -> Any:
            try:
                fast_key(kbuf, 0, k)
            except struct.error:
                put_key(kbuf, 0, k)
            if raw(NR_BPF, LOOKUP, lookup_ref, ELEM_SIZE) < 0:
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
                if not 0 < flags <= _ALL_UPDATE_FLAGS:
                    raise ValueError(f"update flags must be UpdateFlags (NOEXIST, EXIST, LOCK), not {flags!r}")
                flagged.flags = flags
                if raw(NR_BPF, UPDATE, flagged_ref, ELEM_SIZE) < 0:
                    raise fail("update", k)
            elif raw(NR_BPF, UPDATE, update_ref, ELEM_SIZE) < 0:
                raise fail("update", k)

        def delete(k: Any) -> None:
            try:
                fast_key(kbuf, 0, k)
            except struct.error:
                put_key(kbuf, 0, k)
            if raw(NR_BPF, DELETE, delete_ref, ELEM_SIZE) < 0:
                raise fail("delete", k)

        self.lookup, self.update, self.delete = lookup, update, delete


class Closed:
    """Stands in for the call buffers of a closed map: any use says so."""

    def __getattr__(self, name: str) -> Any:
        raise ValueError("operation on a closed map")


CLOSED = Closed()
