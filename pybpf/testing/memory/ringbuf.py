"""RINGBUF (``kernel/bpf/ringbuf.c``), user-space side: ``pybpf.RingBuffer`` maps and reads it as it
reads the kernel's, and the test produces the records a program would (``MemoryKernel.ringbuf_output``).

The memfd behind the map holds the layout user space expects (``pybpf._sys.ringbuf``): the
consumer page, the producer page, then the data area twice in a row (the kernel maps the same
pages twice; here every byte is written at both places). A reader waits on an eventfd the memory
kernel signals for each record (epoll cannot watch a memfd): the door's ``poll`` hook hands it to
``RingBuffer``, edge-triggered.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import struct
from typing import TYPE_CHECKING

from ..._sys.constants import MapFlags, MapType
from ..._sys.ringbuf import BUSY_BIT, DISCARD_BIT, HDR_SZ, PAGE, record_span
from .maps import CreateRequest, MemMap, register
from .objects import ENOTSUPP, Errno, MemObject

if TYPE_CHECKING:
    from .kernel import MemoryKernel

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_U64 = struct.Struct("=Q")
_HEADER = struct.Struct("=II")


@register
class RingBufMap(MemMap):
    """A ring buffer of ``max_entries`` bytes (a power of 2, a multiple of the page size)."""

    types = (MapType.RINGBUF,)

    def __init__(self, req: CreateRequest, kernel: MemoryKernel) -> None:
        super().__init__(req, kernel)
        self.size = req.max_entries
        self.mm: memoryview | None = None
        self._mapping = (0, 0)
        self.event_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        """Signalled once per record: what a reader's epoll watches instead of the memfd."""
        self.mmapable = True

    @classmethod
    def check(cls, req: CreateRequest) -> None:
        size = req.max_entries
        if req.flags & ~int(MapFlags.NUMA_NODE) or req.key_size or req.value_size or size == 0 \
                or size & (size - 1) or size % PAGE:
            raise Errno(errno.EINVAL)

    def attach_storage(self, fd: int) -> None:
        """Size and map the memfd: consumer page, producer page, data twice."""
        total = 2 * PAGE + 2 * self.size
        os.ftruncate(fd, total)
        addr = _libc.mmap(None, total, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise Errno(ctypes.get_errno() or errno.ENOMEM)
        self._mapping = (addr, total)
        self.mm = memoryview((ctypes.c_char * total).from_address(addr)).cast("B")
        self.storage_fd = fd

    def freeze_storage(self) -> None:
        """Freezing a ring buffer changes nothing its readers see."""

    def lookup(self, key: bytes | None, flags: int = 0) -> bytes:
        raise Errno(ENOTSUPP)

    def update(self, key: bytes | None, value: bytes, flags: int) -> None:
        raise Errno(ENOTSUPP)

    def delete(self, key: bytes | None) -> None:
        raise Errno(ENOTSUPP)

    def next_key(self, key: bytes | None) -> bytes:
        raise Errno(ENOTSUPP)

    def output(self, data: bytes, discard: bool = False) -> bool:
        """``bpf_ringbuf_output`` (``discard``: reserve then ``bpf_ringbuf_discard``): False when
        the ring has no room (the helper's -EAGAIN)."""
        mm = self.mm
        assert mm is not None
        if len(data) > self.size or len(data) >= BUSY_BIT >> 1:
            return False
        consumer = _U64.unpack_from(mm, 0)[0]
        producer = _U64.unpack_from(mm, PAGE)[0]
        span = record_span(len(data))
        if producer + span - consumer > self.size:
            return False
        length = len(data) | (DISCARD_BIT if discard else 0)
        record = _HEADER.pack(length | BUSY_BIT, 0) + data + bytes(span - HDR_SZ - len(data))
        self._put(producer, record)
        _U64.pack_into(mm, PAGE, producer + span)
        self._put(producer, _HEADER.pack(length, 0))  # committed: the busy bit goes last
        os.eventfd_write(self.event_fd, 1)
        return True

    def _put(self, position: int, chunk: bytes) -> None:
        """Write ``chunk`` at ring position ``position``, in both copies of the data area."""
        mm = self.mm
        assert mm is not None
        base, size = 2 * PAGE, self.size
        start = position & (size - 1)
        first = min(len(chunk), size - start)
        for copy in (0, size):
            mm[base + copy + start: base + copy + start + first] = chunk[:first]
            if first < len(chunk):
                mm[base + copy: base + copy + len(chunk) - first] = chunk[first:]

    def released(self) -> list[MemObject]:
        if self.mm is not None:
            self.mm.release()
            self.mm = None
            addr, total = self._mapping
            _libc.munmap(ctypes.c_void_p(addr), ctypes.c_size_t(total))
        for fd in (self.storage_fd, self.event_fd):
            if fd >= 0:
                os.close(fd)
        self.storage_fd = self.event_fd = -1
        return super().released()

