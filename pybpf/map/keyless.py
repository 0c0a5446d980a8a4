"""Maps without keys: QUEUE and STACK (push, pop, peek) and BLOOM_FILTER (add, membership)."""

from __future__ import annotations

import errno
from typing import Any, NoReturn

from .._sys.constants import MapType, UpdateFlags
from .._sys.elem import ELEM_SIZE, LOOKUP, LOOKUP_AND_DELETE, UPDATE
from .._sys.syscall import NR_BPF
from .._sys.traits import map_type_name
from ..errors import KeyNotFoundError, NotSupportedError
from .map import Map


class _Keyless(Map):
    """Element operations with a NULL key; the keyed mapping protocol does not apply."""

    def _call(self, cmd: int, op: str, flags: int = 0) -> None:
        calls = self._calls
        attrs = calls.attrs
        if cmd == UPDATE:
            if not 0 <= flags <= UpdateFlags.EXIST:
                raise ValueError(f"{op}: flags must be UpdateFlags.ANY or EXIST, not {flags!r}")
            attrs.keyless_flagged.flags = flags
            ref = attrs.keyless_flagged_ref
        else:
            ref = attrs.keyless_ref
        if calls.raw(NR_BPF, cmd, ref, ELEM_SIZE) < 0:
            raise self._error(op, calls.get_errno())

    def _keyed(self, op: str) -> NoReturn:
        raise NotSupportedError(errno.EINVAL, op, self.name, message=f"{map_type_name(self.type)} maps have no keys")

    def lookup(self, key: Any) -> Any:
        self._keyed("lookup")

    def update(self, key: Any, value: Any, flags: UpdateFlags | int = UpdateFlags.ANY) -> None:  # type: ignore[override]
        self._keyed("update")

    def delete(self, key: Any) -> None:
        self._keyed("delete")

    def lookup_and_delete(self, key: Any) -> Any:
        self._keyed("lookup_and_delete")


class QueueMap(_Keyless):
    """QUEUE (FIFO) or STACK (LIFO): ``push``, ``pop``, ``peek``; pop and peek on empty raise."""

    map_types = (MapType.QUEUE, MapType.STACK)

    def push(self, value: Any, flags: UpdateFlags | int = UpdateFlags.ANY) -> None:
        """Add ``value``; when full, ``UpdateFlags.EXIST`` drops the oldest instead of failing."""
        self._value.put(self._calls.value, 0, value)
        self._call(UPDATE, "push", flags)

    def pop(self) -> Any:  # type: ignore[override]  # a queue's pop, not a mapping's
        """Remove and return the next value; ``KeyNotFoundError`` when empty."""
        self._call(LOOKUP_AND_DELETE, "pop")
        return self._value.decode(self._calls.value)

    def peek(self) -> Any:
        """The next value without removing it; ``KeyNotFoundError`` when empty."""
        self._call(LOOKUP, "peek")
        return self._value.decode(self._calls.value)

    def __len__(self) -> int:
        raise NotSupportedError(errno.EINVAL, "len", self.name, message="the kernel does not count queue/stack elements")

    def __bool__(self) -> bool:
        try:
            self.peek()
        except KeyNotFoundError:
            return False
        return True


class BloomFilter(_Keyless):
    """BLOOM_FILTER: ``add(value)`` and ``value in bloom`` (no false negatives, some false positives)."""

    map_types = (MapType.BLOOM_FILTER,)

    def add(self, value: Any) -> None:
        """Add ``value`` to the set."""
        self._value.put(self._calls.value, 0, value)
        self._call(UPDATE, "add")

    def __contains__(self, value: object) -> bool:
        self._value.put(self._calls.value, 0, value)
        try:
            self._call(LOOKUP, "contains")
        except KeyNotFoundError:
            return False
        return True

    def __len__(self) -> int:
        raise NotSupportedError(errno.EINVAL, "len", self.name, message="a bloom filter does not know its size")
