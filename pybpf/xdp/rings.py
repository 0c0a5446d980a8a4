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
    """One ring's mapping: u32 producer, consumer and flags words, then ``size`` entries of
    ``entry_size`` bytes (one or two u64 words)."""

    def __init__(self, fd: int, pgoff: int, size: int, offsets: RingOffset, entry_size: int) -> None:
        length = offsets.desc + size * entry_size
        self._mmap = mmap.mmap(fd, length, mmap.MAP_SHARED | mmap.MAP_POPULATE,
                               mmap.PROT_READ | mmap.PROT_WRITE, offset=pgoff)
        view = memoryview(self._mmap)
        self._views = [view]
        self._words = self._keep(view.cast("I"))
        self._entries = self._keep(view[offsets.desc: length])
        self._slots = self._keep(self._entries.cast("Q"))
        self.size = size
        self._mask = size - 1
        self._entry_size = entry_size
        self._per = entry_size // 8  # u64 words per entry
        self._prod: int = offsets.producer // 4
        self._cons: int = offsets.consumer // 4
        self._flags: int = offsets.flags // 4

    def _keep(self, view: memoryview) -> memoryview:
        """Remember ``view`` to release it before unmapping."""
        self._views.append(view)
        return view

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
        self._head: int = self._words[self._prod]

    def __len__(self) -> int:
        """Entries produced and not yet consumed by the kernel."""
        return (self._head - self._words[self._cons]) & _U32

    def free(self) -> int:
        """Slots we may fill now."""
        return self.size - ((self._head - self._words[self._cons]) & _U32)

    def _put(self, src: memoryview, count: int) -> None:
        """Write the first ``count`` entries of ``src`` (u64 words) at the head, then publish them."""
        head = self._head
        slots = self._slots
        start = (head & self._mask) * self._per
        stop = start + count * self._per
        if stop <= len(slots):
            slots[start:stop] = src[:stop - start]
        else:  # wraps around
            first = len(slots) - start
            slots[start:] = src[:first]
            slots[:stop - len(slots)] = src[first:stop - start]
        self._head = head = (head + count) & _U32
        self._words[self._prod] = head  # release: the entries were written first


class _ConsumerRing(_Ring):
    """A ring the kernel fills and we drain (RX, COMPLETION)."""

    def __init__(self, fd: int, pgoff: int, size: int, offsets: RingOffset, entry_size: int) -> None:
        super().__init__(fd, pgoff, size, offsets, entry_size)
        self._tail: int = self._words[self._cons]

    def __len__(self) -> int:
        """Entries the kernel produced that we have not consumed."""
        return (self._words[self._prod] - self._tail) & _U32

    def _take(self, limit: int) -> array[int]:
        """Copy out up to ``limit`` entries (as u64 words) and give their slots back."""
        tail = self._tail
        count = min(limit, (self._words[self._prod] - tail) & _U32)  # acquire: before the entries
        out = array("Q")
        if count > 0:
            entries = self._entries
            start = (tail & self._mask) * self._entry_size
            stop = start + count * self._entry_size
            out.frombytes(entries[start:stop])
            if stop > len(entries):  # wrapped around
                out.frombytes(entries[:stop - len(entries)])
            self._tail = tail = (tail + count) & _U32
            self._words[self._cons] = tail  # the entries were read (copied out) first
        return out


class FillRing(_ProducerRing):
    """FILL: UMEM frame addresses handed to the kernel for receiving."""

    def __init__(self, fd: int, pgoff: int, size: int, offsets: RingOffset) -> None:
        super().__init__(fd, pgoff, size, offsets, 8)

    def produce(self, addrs: array[int] | Sequence[int]) -> int:
        """Post as many of ``addrs`` as fit; returns how many were posted (a prefix)."""
        count = min(len(addrs), self.free())
        if count > 0:
            self._put(memoryview(addrs if type(addrs) is array and addrs.typecode == "Q" else array("Q", addrs)), count)
        return max(count, 0)


class CompletionRing(_ConsumerRing):
    """COMPLETION: addresses of frames the kernel has finished sending."""

    def __init__(self, fd: int, pgoff: int, size: int, offsets: RingOffset) -> None:
        super().__init__(fd, pgoff, size, offsets, 8)

    def consume(self, limit: int | None = None) -> array[int]:
        """Take up to ``limit`` (default: all) completed addresses."""
        return self._take(self.size if limit is None else limit)


class RxRing(_ConsumerRing):
    """RX: descriptors (address, length, options) of received frames."""

    def __init__(self, fd: int, pgoff: int, size: int, offsets: RingOffset) -> None:
        super().__init__(fd, pgoff, size, offsets, XDP_DESC_SIZE)

    def consume(self, limit: int) -> array[int]:
        """Take up to ``limit`` descriptors, copied out as one ``array("Q")``: address, then
        length | options << 32, for each frame (options is 0 unless multi-buffer is on)."""
        return self._take(limit)


class TxRing(_ProducerRing):
    """TX: descriptors of frames to send."""

    def __init__(self, fd: int, pgoff: int, size: int, offsets: RingOffset) -> None:
        super().__init__(fd, pgoff, size, offsets, XDP_DESC_SIZE)

    def produce(self, addrs: Sequence[int], lens: Sequence[int]) -> int:
        """Post descriptors (options 0) for as many frames as fit; returns how many (a prefix)."""
        count = min(len(addrs), self.free())
        if count > 0:
            descs = array("Q", bytes(16 * count))
            descs[0::2] = array("Q", addrs[:count])
            descs[1::2] = array("Q", lens[:count])
            self._put(memoryview(descs), count)
        return max(count, 0)


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
