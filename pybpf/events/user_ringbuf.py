"""``UserRingBuffer``: user space produces records that a BPF program drains with
``bpf_user_ringbuf_drain`` (USER_RINGBUF maps, Linux 6.1+).

The roles of ``RingBuffer`` swap: the consumer page is mapped read-only (the kernel advances
``consumer_pos``), the producer page and the data area (mapped twice) read-write. A reservation
writes the record's header with the busy bit and advances ``producer_pos``; ``commit`` clears the
busy bit (``discard`` sets the discard bit instead), and only then may the kernel read the record.
Records are committed in reservation order by construction: one reservation is open at a time.

Memory ordering: the header and data are written with single stores through ``memoryview`` items
and slices before ``producer_pos`` or the busy bit is published; on x86-64 (total store order)
stores are not reordered with stores, which is the release the kernel's ``smp_load_acquire``
pairs with (``kernel/bpf/ringbuf.c``). Written for, and tested on, x86-64; one thread at a time.
"""

from __future__ import annotations

import errno
import mmap
import os
import select
import time
from typing import Any

from .._sys.constants import MapType
from .._sys.ringbuf import BUSY_BIT, CONSUMER_OFFSET, DISCARD_BIT, HDR_SZ, PAGE, PRODUCER_OFFSET, record_span
from ..errors import MapFullError, error_for
from ._reader import Closing, Guard, check_timeout, map_fd_and_info


class UserRingBuffer(Closing):
    """Writes to a USER_RINGBUF map: ``submit(data)``, or ``reserve(size)`` then ``commit()`` or
    ``discard()``. A full ring raises ``MapFullError``; ``wait_writable(size, timeout)`` waits
    for the program to drain enough. Linux 6.1+."""

    def __init__(self, bpf_map: Any) -> None:
        """Map the ring of ``bpf_map`` (a USER_RINGBUF ``Map`` or its fd; the writer keeps its own fd)."""
        fd, info = map_fd_and_info(bpf_map, (MapType.USER_RINGBUF,), "UserRingBuffer")
        self._fd = fd
        self._name = info.name.decode(errors="replace")
        size = self.size = info.max_entries
        self._views: list[memoryview] = []
        self._open: memoryview | None = None
        self._open_at = 0
        try:
            if size < PAGE or size & (size - 1):
                raise ValueError(f"UserRingBuffer: map {self._name!r} has max_entries {size}: a USER_RINGBUF's size is a "
                                 f"power of 2 and a multiple of the page size ({PAGE}), or the kernel refuses it")
            self._consumer = self._map(PAGE, mmap.PROT_READ, CONSUMER_OFFSET, "consumer page")
            self._producer = self._map(PAGE + 2 * size, mmap.PROT_READ | mmap.PROT_WRITE, PRODUCER_OFFSET, "data")
        except BaseException:
            if hasattr(self, "_consumer"):
                self._consumer.close()
            os.close(fd)
            raise
        self._cons_word = self._view(memoryview(self._consumer)[:8].cast("Q"))
        producer = self._view(memoryview(self._producer))
        self._prod_word = self._view(producer[:8].cast("Q"))
        self._data = self._view(producer[PAGE:])
        self._lens = self._view(self._data.cast("I"))
        self._mask = size - 1
        self._epoll = select.epoll()
        self._epoll.register(fd, select.EPOLLOUT | select.EPOLLET)
        self._guard = Guard("UserRingBuffer", self._epoll)

    def _map(self, length: int, prot: int, offset: int, what: str) -> mmap.mmap:
        try:
            return mmap.mmap(self._fd, length, mmap.MAP_SHARED, prot, offset=offset)
        except OSError as err:
            raise error_for(err.errno or errno.EINVAL, f"map {what} of user ring buffer", self._name) from None

    def _view(self, view: memoryview) -> memoryview:
        self._views.append(view)
        return view

    # ---- producing --------------------------------------------------------------------------

    def free(self) -> int:
        """Bytes free in the ring now (each record also takes an 8-byte header and padding to 8)."""
        used: int = self._prod_word[0] - self._cons_word[0]
        return int(self.size) - used

    def reserve(self, size: int) -> memoryview:
        """Reserve a record of ``size`` bytes and return it to fill (writable); then ``commit()``
        or ``discard()``. ``MapFullError`` if the ring has no room now."""
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"size must be an int, not {size!r}")
        span = record_span(size) if size >= 0 else 0
        if size <= 0 or span > self.size or size > DISCARD_BIT - 1:
            raise ValueError(f"size must be 1 .. {self.size - HDR_SZ} bytes (the ring is {self.size} bytes, with an "
                             f"{HDR_SZ}-byte header per record), not {size}")
        self._guard.enter()
        try:
            if self._open is not None:
                raise ValueError("a reservation is already open: commit() or discard() it first")
            prod = self._prod_word[0]
            if self.size - (prod - self._cons_word[0]) < span:
                raise MapFullError(errno.ENOSPC, "reserve in user ring buffer", self._name,
                                   message=f"no room for {size} bytes: the program has not drained the ring "
                                           "(wait_writable(size) waits until it does)")
            off = prod & self._mask
            self._lens[off >> 2] = size | BUSY_BIT
            self._lens[(off >> 2) + 1] = 0
            self._prod_word[0] = prod + span
            record = self._data[off + HDR_SZ: off + HDR_SZ + size]
            self._open, self._open_at = record, off
            return record
        finally:
            self._guard.leave()

    def commit(self) -> None:
        """Publish the open reservation to the kernel."""
        self._finish(0)

    def discard(self) -> None:
        """Drop the open reservation: the kernel skips it."""
        self._finish(DISCARD_BIT)

    def _finish(self, bit: int) -> None:
        self._guard.enter()
        try:
            if self._open is None:
                raise ValueError("no reservation is open: reserve(size) first")
            record, self._open = self._open, None
            index = self._open_at >> 2
            self._lens[index] = (self._lens[index] & ~BUSY_BIT) | bit
            record.release()
        finally:
            self._guard.leave()

    def submit(self, data: bytes | bytearray | memoryview) -> None:
        """Reserve, copy ``data`` and commit in one step. ``MapFullError`` if there is no room."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes-like, not {type(data).__name__}")
        record = self.reserve(len(data))
        record[:] = data
        self.commit()

    def wait_writable(self, size: int = 1, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds (None: forever) until a record of ``size`` bytes fits
        (the program drained enough); whether it does."""
        if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= self.size - HDR_SZ:
            raise ValueError(f"size must be 1 .. {self.size - HDR_SZ} bytes, not {size!r}")
        wait = check_timeout(timeout)
        need = record_span(size)
        self._guard.enter()
        try:
            deadline = None if wait < 0 else time.monotonic() + wait
            while self.free() < need:
                left = -1.0 if deadline is None else deadline - time.monotonic()
                if deadline is not None and left <= 0:
                    return False
                self._epoll.poll(left)  # edge-triggered: the kernel signals after a drain
                if self._guard.closing:
                    return False
            return True
        finally:
            self._guard.leave()

    # ---- plumbing ---------------------------------------------------------------------------

    def fileno(self) -> int:
        """An epoll fd that becomes readable when the program drained records, for selectors."""
        if self._guard.closed:
            raise ValueError("operation on a closed UserRingBuffer")
        return self._epoll.fileno()

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called (or is under way in another thread)."""
        return self._guard.closed or self._guard.closing

    def close(self) -> None:
        """Unmap and close (an open reservation is discarded). Idempotent."""
        if self._guard.closed:
            return
        if self._open is not None and not self._guard.forked:
            self.discard()
        if not self._guard.close():
            return
        for view in reversed(self._views):
            view.release()
        self._views.clear()
        for mapping in (self._consumer, self._producer):
            try:
                mapping.close()
            except BufferError:
                pass
        self._epoll.close()
        os.close(self._fd)

    def __repr__(self) -> str:
        return f"<UserRingBuffer {self._name!r} {'closed' if self.closed else f'free={self.free()}'}>"

    def __del__(self) -> None:
        if not getattr(self, "_guard", None) or self._guard.closed:
            return
        try:
            self.close()
        except Exception:
            pass
