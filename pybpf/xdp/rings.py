"""The four AF_XDP rings, mapped from the socket: FILL and TX (we produce), RX and COMPLETION
(we consume). Every method moves a whole batch: one index load, one slice copy per wrap-around
segment, one index store.

Memory ordering. The kernel reads our producer index with ``smp_load_acquire`` and publishes
its own with ``smp_store_release`` (``net/xdp/xsk_queue.h``). On our side each index access is
one item of a ``memoryview`` cast to ``"I"``: CPython performs it as a single aligned 4-byte load
or store, and every slice copy of entries finishes before the next bytecode runs. On x86-64
(total store order) loads are not reordered with loads nor stores with stores, so:

* producing: entries are written, then the producer index is stored (release);
* consuming: the producer index is loaded (acquire), then entries are read, then the consumer
  index is stored, which cannot pass those reads.

Weakly ordered CPUs (arm64) would need explicit barriers that CPython cannot express; pybpf's
rings are written for, and tested on, x86-64. A ring is single-producer/single-consumer: one
thread at a time.
"""

from __future__ import annotations

import mmap
from array import array
from collections.abc import Sequence

from .._sys.xdp import (XDP_DESC_SIZE, XDP_RING_NEED_WAKEUP, XDP_UMEM_PGOFF_COMPLETION_RING, XDP_UMEM_PGOFF_FILL_RING,
                        MmapOffsets, RingOffset)

_U32 = 0xFFFFFFFF


class _Ring:
    """One ring's mapping: u32 producer, consumer and flags words, then ``size`` entries."""

    def __init__(self, fd: int, pgoff: int, size: int, offsets: RingOffset, entry_size: int) -> None:
        length = offsets.desc + size * entry_size
        self._mmap = mmap.mmap(fd, length, mmap.MAP_SHARED | mmap.MAP_POPULATE,
                               mmap.PROT_READ | mmap.PROT_WRITE, offset=pgoff)
        view = memoryview(self._mmap)
        self._views = [view]
        self._words = self._keep(view.cast("I"))
        entries = self._entries = self._keep(view[offsets.desc: length])
        self._u64 = self._keep(entries.cast("Q"))
        self.size = size
        self._mask = size - 1
        self._prod: int = offsets.producer // 4
        self._cons: int = offsets.consumer // 4
        self._flags: int = offsets.flags // 4

    def _keep(self, view: memoryview) -> memoryview:
        """Remember ``view`` to release it before unmapping."""
        self._views.append(view)
        return view

    def _segments(self, index: int, count: int) -> tuple[tuple[int, int], ...]:
        """Slot ranges ``(start, stop)`` of ``count`` entries from ring index ``index``."""
        start = index & self._mask
        first = min(count, self.size - start)
        if first == count:
            return ((start, start + count),)
        return (start, self.size), (0, count - first)

    def needs_wakeup(self) -> bool:
        """Whether the kernel set ``XDP_RING_NEED_WAKEUP``: it needs a syscall to use this ring again."""
        return bool(self._words[self._flags] & XDP_RING_NEED_WAKEUP)

    def close(self) -> None:
        """Unmap the ring (idempotent)."""
        for view in reversed(self._views):
            view.release()
        self._views.clear()
        self._mmap.close()


class _ProducerRing(_Ring):
    """A ring we fill and the kernel drains (FILL, TX)."""

    def __init__(self, fd: int, pgoff: int, size: int, offsets: RingOffset, entry_size: int) -> None:
        super().__init__(fd, pgoff, size, offsets, entry_size)
        self._head = self._words[self._prod]

    def __len__(self) -> int:
        """Entries produced and not yet consumed by the kernel."""
        return (self._head - self._words[self._cons]) & _U32

    def free(self) -> int:
        """Slots we may fill now."""
        return self.size - len(self)

    def _publish(self, count: int) -> None:
        self._head = (self._head + count) & _U32
        self._words[self._prod] = self._head  # release: entries were written first


class _ConsumerRing(_Ring):
    """A ring the kernel fills and we drain (RX, COMPLETION)."""

    def __init__(self, fd: int, pgoff: int, size: int, offsets: RingOffset, entry_size: int) -> None:
        super().__init__(fd, pgoff, size, offsets, entry_size)
        self._tail = self._words[self._cons]

    def __len__(self) -> int:
        """Entries the kernel produced that we have not consumed."""
        return (self._words[self._prod] - self._tail) & _U32  # acquire: read before the entries

    def _release(self, count: int) -> None:
        self._tail = (self._tail + count) & _U32
        self._words[self._cons] = self._tail  # the entries were read (copied out) first


class FillRing(_ProducerRing):
    """FILL: UMEM frame addresses handed to the kernel for receiving."""

    def __init__(self, fd: int, pgoff: int, size: int, offsets: RingOffset) -> None:
        super().__init__(fd, pgoff, size, offsets, 8)

    def produce(self, addrs: array[int] | Sequence[int]) -> int:
        """Post as many of ``addrs`` as fit; returns how many were posted (a prefix)."""
        count = min(len(addrs), self.free())
        if count:
            src = memoryview(addrs if isinstance(addrs, array) and addrs.typecode == "Q" else array("Q", addrs))
            done = 0
            for start, stop in self._segments(self._head, count):
                self._u64[start:stop] = src[done: done + stop - start]
                done += stop - start
            self._publish(count)
        return count


class CompletionRing(_ConsumerRing):
    """COMPLETION: addresses of frames the kernel has finished sending."""

    def __init__(self, fd: int, pgoff: int, size: int, offsets: RingOffset) -> None:
        super().__init__(fd, pgoff, size, offsets, 8)

    def consume(self, limit: int | None = None) -> list[int]:
        """Take up to ``limit`` (default: all) completed addresses."""
        count = len(self) if limit is None else min(limit, len(self))
        out: list[int] = []
        for start, stop in self._segments(self._tail, count):
            out += self._u64[start:stop].tolist()
        if count:
            self._release(count)
        return out


class RxRing(_ConsumerRing):
    """RX: descriptors (address, length, options) of received frames."""

    def __init__(self, fd: int, pgoff: int, size: int, offsets: RingOffset) -> None:
        super().__init__(fd, pgoff, size, offsets, XDP_DESC_SIZE)

    def consume(self, limit: int) -> array[int]:
        """Take up to ``limit`` descriptors, copied out as one ``array("Q")``: address, then
        length | options << 32, for each frame (options is 0 unless multi-buffer is on)."""
        tail = self._tail
        count = min(limit, (self._words[self._prod] - tail) & _U32)  # acquire: before the entries
        descs = array("Q")
        if count:
            start = (tail & self._mask) * XDP_DESC_SIZE
            stop = start + count * XDP_DESC_SIZE
            entries = self._entries
            descs.frombytes(entries[start:stop])
            if stop > len(entries):  # wrapped around
                descs.frombytes(entries[: stop - len(entries)])
            self._release(count)
        return descs


class TxRing(_ProducerRing):
    """TX: descriptors of frames to send."""

    def __init__(self, fd: int, pgoff: int, size: int, offsets: RingOffset) -> None:
        super().__init__(fd, pgoff, size, offsets, XDP_DESC_SIZE)

    def produce(self, addrs: Sequence[int], lens: Sequence[int]) -> int:
        """Post descriptors (options 0) for as many frames as fit; returns how many (a prefix)."""
        count = min(len(addrs), self.free())
        if count:
            descs = array("Q", bytes(16 * count))
            descs[0::2] = array("Q", addrs[:count])
            descs[1::2] = array("Q", lens[:count])
            src = memoryview(descs)
            done = 0
            for start, stop in self._segments(self._head, count):
                self._u64[2 * start: 2 * stop] = src[2 * done: 2 * (done + stop - start)]
                done += stop - start
            self._publish(count)
        return count


class QueueRings:
    """The FILL and COMPLETION rings serving one (interface, queue) of a UMEM: mapped by the first
    socket bound there, shared by the sockets bound there after it, unmapped by the ``Umem`` when
    the last of them leaves."""

    def __init__(self, fill: FillRing, completion: CompletionRing) -> None:
        self.fill = fill
        self.completion = completion
        self.closed = False

    @classmethod
    def map(cls, fd: int, fill_size: int, comp_size: int, offsets: MmapOffsets) -> QueueRings:
        """Map the FILL and COMPLETION rings the socket ``fd`` created."""
        fill = FillRing(fd, XDP_UMEM_PGOFF_FILL_RING, fill_size, offsets.fr)
        try:
            completion = CompletionRing(fd, XDP_UMEM_PGOFF_COMPLETION_RING, comp_size, offsets.cr)
        except BaseException:
            fill.close()
            raise
        return cls(fill, completion)

    def close(self) -> None:
        """Unmap both rings (idempotent)."""
        if not self.closed:
            self.closed = True
            self.fill.close()
            self.completion.close()
