"""A map's element operations as closures over call buffers: one key pack, one syscall, one decode.

Buffers are per thread (ctypes may release the GIL during the syscall, and Python may switch
threads between any two steps, so a shared buffer could be rewritten under the kernel's feet).
``Calls`` is a ``threading.local``: each thread that uses a map builds its own buffers and
closures once. The creating thread's closures are also set on the ``Map`` itself, so the common
case costs one call: each closure first checks that it runs in its own thread, and otherwise
hands over to that thread's ``Calls``. ``retire()`` (on ``close``) sends every later call the
same way, to the closed map's error, even through a saved reference.

The syscall goes through the door the map was made with (``pybpf._sys.syscall``), bound once:
for maps whose element operations cannot sleep, the door's GIL-holding call (no GIL hand-off
per operation); for maps of fds (sockets, maps, programs), whose updates may sleep, the one that
releases the GIL.
"""

from __future__ import annotations

import struct
import threading
import weakref
from collections.abc import Callable
from typing import Any

from .._sys.constants import UpdateFlags
from .._sys.elem import DELETE, ELEM_SIZE, LOOKUP, UPDATE, ElemAttrs
from .._sys.syscall import NR_BPF, Door
from ..errors import BPFError
from .codec import Field

_ALL_UPDATE_FLAGS = int(UpdateFlags.NOEXIST | UpdateFlags.EXIST | UpdateFlags.LOCK)
_get_ident = threading.get_ident


class Calls(threading.local):
    """One thread's call buffers for one map (key, value, next key, an attr per command) and the
    element operations as closures over them: the hot path touches only locals."""

    lookup: Callable[[Any], Any]
    update: Callable[[Any, Any, int], None]
    delete: Callable[[Any], None]
    retire: Callable[[], None]

    def __init__(self, owner: weakref.ref[Any], fd: int, gate: Door, key: Field, value: Field, value_alloc: int,
                 custom_values: bool, may_sleep: bool) -> None:
        tid = _get_ident()
        made_for = owner()
        assert made_for is not None  # the map is being built or used right now
        made_for._users.add(tid)
        self.key = kbuf = bytearray(key.size)
        self.value = vbuf = bytearray(value_alloc)
        self.next_key = bytearray(key.size)
        self.attrs = attrs = ElemAttrs(fd, self.key, self.value, self.next_key)
        self.raw = gate.raw
        self.get_errno = get_errno = gate.get_errno
        raw = gate.raw if may_sleep or gate.raw_held is None else gate.raw_held
        lookup_ref, update_ref, delete_ref = attrs.lookup_ref, attrs.update_ref, attrs.delete_ref
        flagged, flagged_ref = attrs.flagged, attrs.flagged_ref

        put_key, fast_key = key.put, key.fast_put
        decode = value.decode
        put_value: Callable[[Any, int, Any], None] = value.put
        fast_value: Callable[[Any, int, Any], None] = value.fast_put
        if custom_values:
            def put_custom(buf: bytearray, offset: int, obj: Any) -> None:
                owner()._put_value(buf, obj)  # type: ignore[union-attr]

            put_value = fast_value = put_custom

        def fail(op: str, obj: Any) -> BPFError | ValueError:
            found = owner()
            if found is None:
                return ValueError("operation on a closed map")
            error: BPFError | ValueError = found._error(op, get_errno(), obj)
            return error

        def elsewhere() -> Calls:
            """This thread's own ``Calls`` (another thread, or a retired closure: the closed map's)."""
            found = owner()
            if found is None:
                raise ValueError("operation on a closed map")
            calls: Calls = found._calls
            return calls

        unpack = value.unpack_int  # the common u32/u64 value: decoded inline, no extra call

        def lookup(k: Any) -> Any:
            if _get_ident() != tid:
                return elsewhere().lookup(k)
            try:
                fast_key(kbuf, 0, k)
            except struct.error:
                put_key(kbuf, 0, k)
            if raw(NR_BPF, LOOKUP, lookup_ref, ELEM_SIZE) < 0:
                raise fail("lookup", k)
            return unpack(vbuf)[0] if unpack is not None else decode(vbuf)

        def update(k: Any, v: Any, flags: int = 0) -> None:
            if _get_ident() != tid:
                return elsewhere().update(k, v, flags)
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
            return None

        def delete(k: Any) -> None:
            if _get_ident() != tid:
                return elsewhere().delete(k)
            try:
                fast_key(kbuf, 0, k)
            except struct.error:
                put_key(kbuf, 0, k)
            if raw(NR_BPF, DELETE, delete_ref, ELEM_SIZE) < 0:
                raise fail("delete", k)
            return None

        def retire() -> None:
            """From now on every call through these closures goes to the thread's ``Calls``."""
            nonlocal tid
            tid = -1

        lookup.__doc__, update.__doc__, delete.__doc__ = _DOCS
        self.lookup, self.update, self.delete, self.retire = lookup, update, delete, retire


_DOCS = (
    "The value at ``key``; ``KeyNotFoundError`` (a ``KeyError``) when absent.",
    "Set ``key`` to ``value``; ``flags`` is ``UpdateFlags`` (ANY, NOEXIST, EXIST, LOCK).",
    "Remove ``key``; ``KeyNotFoundError`` when absent.",
)


class Closed:
    """Stands in for the call buffers of a closed map: any use says so."""

    def __getattr__(self, name: str) -> Any:
        raise ValueError("operation on a closed map")


CLOSED = Closed()
