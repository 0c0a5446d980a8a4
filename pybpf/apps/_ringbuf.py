"""A minimal reader of fixed-size records from a RINGBUF map, for the splice proxy's events.

# moves to pybpf.events.RingBuffer once that lands on main (the events branch has the full reader)

The map's fd is mapped as the kernel lays it out: the consumer position (one page, read-write),
then the producer position (one page) and the data area twice in a row (read-only), so no record
wraps. A record is an 8-byte header (length with busy and discard bits, page offset) and its
payload, padded to 8 bytes. x86-64 ordering (total store order) is assumed, as in the events reader.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator

_BUSY, _DISCARD = 1 << 31, 1 << 30
_HEADER = 8


class RecordReader:
    """Consume the records of one RINGBUF map (given by fd and size); ``fileno()`` polls readable
    when records wait."""

    def __init__(self, fd: int, size: int) -> None:
        if size <= 0 or size & (size - 1) or size % mmap.PAGESIZE:
            raise ValueError(f"ring buffer size {size} must be a power of two and a multiple of the page size")
        self._fd, self._mask = fd, size - 1
        self._consumer = mmap.mmap(fd, mmap.PAGESIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        try:
            self._producer = mmap.mmap(fd, mmap.PAGESIZE + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ,
                                       offset=mmap.PAGESIZE)
        except BaseException:
            self._consumer.close()
            raise
        self._cons = memoryview(self._consumer).cast("Q")
        whole = memoryview(self._producer)
        self._prod = whole[:8].cast("Q")
        self._data = whole[mmap.PAGESIZE:]
        self._views = [self._cons, self._prod, self._data, whole]

    def fileno(self) -> int:
        """The map's fd (epoll reports it readable while records wait)."""
        return self._fd

    def records(self) -> Iterator[bytes]:
        """Every committed record, each consumed once it is handed out (copied as bytes)."""
        cons = self._cons[0]
        while cons < self._prod[0]:
            off = cons & self._mask
            length = int.from_bytes(self._data[off:off + 4], "little")
            if length & _BUSY:
                break
            size = length & ~(_BUSY | _DISCARD)
            record = None if length & _DISCARD else bytes(self._data[off + _HEADER:off + _HEADER + size])
            cons += (size + _HEADER + 7) & ~7
            self._cons[0] = cons
            if record is not None:
                yield record

    def close(self) -> None:
        """Unmap (the map itself belongs to the caller)."""
        for view in self._views:
            view.release()
        self._views.clear()
        self._producer.close()
        self._consumer.close()
