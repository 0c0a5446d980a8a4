"""``RingBuffer``: reads the records BPF programs put in RINGBUF maps (``bpf_ringbuf_output``,
``bpf_ringbuf_reserve``/``submit``), one or several rings through one reader.

Layout (``pybpf._sys.ringbuf``): the consumer page is mapped read-write, the producer page and
the data area (mapped twice by the kernel, so no record wraps) read-only. A record whose length
word has the busy bit is still being written: reading stops there. A discarded record is skipped.
The consumer position is stored once per batch, after the batch's records were handed out, so
the kernel may reuse their space only then.

Memory ordering. The kernel advances ``producer_pos`` when a record is reserved and publishes the
record by clearing the busy bit with ``smp_store_release``; it reads ``consumer_pos`` with
``smp_load_acquire``. Each position or length access here is one item of a ``memoryview`` cast
to ``"Q"`` or ``"I"``: CPython performs it as one aligned load or store. On x86-64 (total store
order) loads are not reordered with loads nor stores with stores, so reading ``producer_pos``,
then a length word, then the record's bytes sees the record complete once its busy bit is clear;
and our store of ``consumer_pos`` cannot pass the reads of the records it releases. Weakly ordered
CPUs (arm64) would need barriers CPython cannot express: pybpf's readers are written for, and
tested on, x86-64.

Wake-ups. The kernel wakes a reader when a record is committed and the consumer has caught up to
it (so one wake-up may announce many records); after storing ``consumer_pos`` the reader checks
``producer_pos`` again before it sleeps, so no record is left behind a missed wake-up. A pinned
ring keeps unread records between readers: a new reader starts where the last one stopped.

Threads. A reader is used by one thread at a time: a second thread gets ``ReaderBusyError``
instead of two consumers racing on one position. A forked child gets ``RuntimeError``: the mapping
is shared with the parent, and consuming there would take records from the parent.
"""

from __future__ import annotations

import errno
import mmap
import os
import select
from collections.abc import Callable
from typing import Any

from .._sys.constants import MapType
from .._sys.ringbuf import BUSY_BIT, CONSUMER_OFFSET, DISCARD_BIT, HDR_SZ, PAGE, PRODUCER_OFFSET
from ..errors import error_for
from ._reader import Closing, Guard, Iterable, decoder, drain_rings, map_fd_and_info, poll_rings

_BUSY_OR_DISCARD = BUSY_BIT | DISCARD_BIT


class _Ring:
    """One RINGBUF map's two mappings and the positions read from them."""

    def __init__(self, fd: int, size: int, name: str) -> None:
        self.fd, self.size, self.mask, self.name = fd, size, size - 1, name
        try:
            self.consumer = mmap.mmap(fd, PAGE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=CONSUMER_OFFSET)
        except OSError as err:
            raise error_for(err.errno or errno.EINVAL, "map consumer page of ring buffer", name) from None
        try:
            self.producer = mmap.mmap(fd, PAGE + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=PRODUCER_OFFSET)
        except OSError as err:
            self.consumer.close()
            raise error_for(err.errno or errno.EINVAL, "map data of ring buffer", name) from None
        self.cons_word = memoryview(self.consumer).cast("Q")
        producer = memoryview(self.producer)
        self.prod_word = producer[:8].cast("Q")
        self.data = producer[PAGE:]
        self.lens = self.data.cast("I")
        self._views = [self.cons_word, self.prod_word, self.data, self.lens, producer]

    def pending(self) -> int:
        """Bytes produced and not yet consumed (records, headers and padding)."""
        return self.prod_word[0] - self.cons_word[0]

    def close(self) -> None:
        """Unmap. A memoryview a callback kept past its call keeps its mapping alive until dropped."""
        for view in self._views:
            view.release()
        self._views.clear()
        for mapping in (self.consumer, self.producer):
            try:
                mapping.close()
            except BufferError:  # a record view is still referenced: the mapping goes when it does
                pass
        os.close(self.fd)


class RingBuffer(Iterable[Any], Closing):
    """Reads RINGBUF maps: ``poll(timeout)`` returns records, ``consume(callback)`` hands out
    zero-copy views; iteration blocks for the next record, ``async for`` waits in asyncio.

    ``type`` (a ctypes type) makes every record an instance of it (copied; a shorter record is a
    ValueError). ``add(map)`` reads another ring through the same reader. Linux 5.8+.
    """

    def __init__(self, bpf_map: Any, type: type | None = None) -> None:
        """Map the ring of ``bpf_map`` (a RINGBUF ``Map`` or its fd; the reader keeps its own fd)."""
        self._decode = decoder(type, "RingBuffer")
        self._rings: list[_Ring] = []
        self._epoll = select.epoll()
        self._guard = Guard("RingBuffer", self._epoll)
        try:
            self.add(bpf_map)
        except BaseException:
            self._guard.dispose()
            self._epoll.close()
            raise

    def add(self, bpf_map: Any) -> None:
        """Read the RINGBUF ``bpf_map`` too (records of each ring stay in order; rings interleave)."""
        fd, info = map_fd_and_info(bpf_map, (MapType.RINGBUF,), "RingBuffer")
        name = info.name.decode(errors="replace")
        size = info.max_entries
        try:
            if size < PAGE or size & (size - 1):
                raise ValueError(f"RingBuffer: map {name!r} has max_entries {size}: a RINGBUF's size is a power of 2 "
                                 f"and a multiple of the page size ({PAGE}), or the kernel refuses it")
            self._guard.enter()
        except BaseException:
            os.close(fd)
            raise
        try:
            ring = _Ring(fd, size, name)
            try:
                self._epoll.register(fd, select.EPOLLIN)
            except BaseException:
                ring.close()
                raise
            self._rings.append(ring)
        finally:
            self._guard.leave()

    # ---- reading ----------------------------------------------------------------------------

    def poll(self, timeout: float | None = None) -> list[Any]:
        """Every record available now, as ``bytes`` (or ``type`` instances); if none, wait up to
        ``timeout`` seconds (None: forever) for the first. An empty list means the time ran out."""
        return poll_rings(self._guard, self._epoll, self._rings, self._copy, timeout, self._decode)

    def _copy(self, ring: _Ring, out: list[Any]) -> None:
        """Append ring's available records (copied as bytes) to ``out``; advance the consumer."""
        producer, lens, mask, prod_word, cons_word = ring.producer, ring.lens, ring.mask, ring.prod_word, ring.cons_word
        cons = cons_word[0]
        append = out.append
        while True:
            prod = prod_word[0]
            if cons >= prod:
                return
            start = cons
            while cons < prod:
                off = cons & mask
                length = lens[off >> 2]
                if length & BUSY_BIT:
                    break
                cons += ((length & ~_BUSY_OR_DISCARD) + HDR_SZ + 7) & ~7
                if not length & DISCARD_BIT:
                    off += PAGE + HDR_SZ
                    append(producer[off: off + length])
            if cons == start:
                return
            cons_word[0] = cons

    def consume(self, callback: Callable[[Any], object], timeout: float = 0) -> int:
        """Call ``callback(record)`` for every record available, with a ``memoryview`` into the
        ring (valid during the call only: it is released afterwards) or a ``type`` instance;
        returns how many. With ``timeout`` > 0 (or None), first wait that long for a record.

        If ``callback`` raises, the records before it and the one it raised on are consumed and
        the exception propagates.
        """
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {callback!r}")
        return drain_rings(self._guard, self._epoll, self._rings, lambda ring: self._consume(ring, callback), timeout)

    def _consume(self, ring: _Ring, callback: Callable[[Any], object]) -> int:
        data, lens, mask, prod_word, cons_word = ring.data, ring.lens, ring.mask, ring.prod_word, ring.cons_word
        decode = self._decode
        cons = cons_word[0]
        count = 0
        try:
            while True:
                prod = prod_word[0]
                if cons >= prod:
                    return count
                start = cons
                while cons < prod:
                    off = cons & mask
                    length = lens[off >> 2]
                    if length & BUSY_BIT:
                        break
                    cons += ((length & ~_BUSY_OR_DISCARD) + HDR_SZ + 7) & ~7
                    if not length & DISCARD_BIT:
                        off += HDR_SZ
                        view = data[off: off + length]
                        count += 1
                        try:
                            callback(view if decode is None else decode(view))
                        finally:
                            view.release()
                if cons == start:
                    return count
                cons_word[0] = cons
        finally:
            if cons != cons_word[0]:
                cons_word[0] = cons

    def pending(self) -> int:
        """Bytes waiting in all rings (records with their headers and padding), without consuming."""
        self._guard.enter()
        try:
            return sum(ring.pending() for ring in self._rings)
        finally:
            self._guard.leave()

    # ---- plumbing ---------------------------------------------------------------------------

    def fileno(self) -> int:
        """An fd that is readable while any ring has records (an epoll fd), for selectors."""
        if self._guard.closed:
            raise ValueError("operation on a closed RingBuffer")
        return self._epoll.fileno()

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called (or is under way in another thread)."""
        return self._guard.closed or self._guard.closing

    def close(self) -> None:
        """Unmap the rings and close the reader's fds. Idempotent. A thread blocked in ``poll``,
        ``consume`` or iteration is woken (it returns what it has) and waited for."""
        if not self._guard.close():
            return
        for ring in self._rings:
            ring.close()
        self._rings.clear()
        self._epoll.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self._rings)} ring(s)"
        return f"<RingBuffer {state}>"

    def __del__(self) -> None:
        if not getattr(self, "_guard", None) or self._guard.closed or self._guard.forked:
            return
        try:
            self.close()
        except Exception:
            pass
