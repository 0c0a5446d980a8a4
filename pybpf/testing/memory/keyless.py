"""QUEUE, STACK (``queue_stack_maps.c``) and BLOOM_FILTER (``bloom_filter.c``): maps without keys.

The bloom filter is exact here: it answers "present" only for values added, where the kernel's
answers "present" for some values never added too (false positives, as a bloom filter may). A test
that depends on a false positive depends on the kernel's random hash seed.
"""

from __future__ import annotations

import collections
import errno
from typing import TYPE_CHECKING

from ..._sys.constants import MapFlags, MapType
from .maps import ACCESS_MASK, EXIST, NOEXIST, CreateRequest, MemMap, access_ok, register
from .objects import Errno
from .sizes import kernel_mem_check

if TYPE_CHECKING:
    from .kernel import MemoryKernel

_KMALLOC_MAX = 1 << 22
ENOENT, E2BIG, EINVAL = errno.ENOENT, errno.E2BIG, errno.EINVAL


@register
class QueueStack(MemMap):
    """QUEUE (first in, first out) and STACK (last in, first out) of ``max_entries`` values."""

    types = (MapType.QUEUE, MapType.STACK)

    def __init__(self, req: CreateRequest, kernel: MemoryKernel) -> None:
        super().__init__(req, kernel)
        self.items: collections.deque[bytes] = collections.deque()
        self.lifo = req.type == MapType.STACK

    @classmethod
    def check(cls, req: CreateRequest) -> None:
        if (req.max_entries == 0 or req.key_size != 0 or req.value_size == 0
                or req.flags & ~(int(MapFlags.NUMA_NODE) | ACCESS_MASK) or not access_ok(req.flags)):
            raise Errno(EINVAL)
        if req.value_size > _KMALLOC_MAX:
            raise Errno(E2BIG)
        kernel_mem_check((req.max_entries + 1) * req.value_size)

    def update(self, key: bytes | None, value: bytes, flags: int) -> None:
        """Push; when full, ``EXIST`` drops the oldest value instead of failing with E2BIG."""
        if flags & NOEXIST or flags > EXIST:
            raise Errno(EINVAL)
        if len(self.items) >= self.max_entries:
            if not flags & EXIST:
                raise Errno(E2BIG)
            self.items.popleft()
        self.items.append(value)

    def lookup(self, key: bytes | None, flags: int = 0) -> bytes:
        """Peek."""
        if not self.items:
            raise Errno(ENOENT)
        return self.items[-1] if self.lifo else self.items[0]

    def lookup_and_delete(self, key: bytes | None, flags: int) -> bytes:
        """Pop."""
        if not self.items:
            raise Errno(ENOENT)
        return self.items.pop() if self.lifo else self.items.popleft()


@register
class BloomFilter(MemMap):
    """BLOOM_FILTER: a set of values (exact: no false positives)."""

    types = (MapType.BLOOM_FILTER,)

    def __init__(self, req: CreateRequest, kernel: MemoryKernel) -> None:
        super().__init__(req, kernel)
        self.values: set[bytes] = set()

    @classmethod
    def check(cls, req: CreateRequest) -> None:
        allowed = int(MapFlags.NUMA_NODE | MapFlags.ZERO_SEED) | ACCESS_MASK
        if (req.key_size != 0 or req.value_size == 0 or req.max_entries == 0 or req.flags & ~allowed
                or not access_ok(req.flags) or req.map_extra & ~0xF):
            raise Errno(EINVAL)

    def update(self, key: bytes | None, value: bytes, flags: int) -> None:
        if flags != 0:
            raise Errno(EINVAL)
        self.values.add(value)

    def contains(self, value: bytes) -> None:
        """The lookup of a bloom filter: ENOENT unless ``value`` was added."""
        if value not in self.values:
            raise Errno(ENOENT)

    def delete(self, key: bytes | None) -> None:
        raise Errno(errno.EOPNOTSUPP)

    def next_key(self, key: bytes | None) -> bytes:
        raise Errno(errno.EOPNOTSUPP)
