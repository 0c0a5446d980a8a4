"""``Umem``: the packet buffer an AF_XDP socket shares with the kernel, cut into equal frames,
and the book of where every frame is."""

from __future__ import annotations

import ctypes
import mmap
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, NamedTuple

from .._sys.xdp import XDP_PACKET_HEADROOM, UmemReg

if TYPE_CHECKING:
    from .rings import CompletionRing, FillRing, RxRing, TxRing
    from .batch import RxBatch

_MIN_FRAME = 2048


class FrameCounts(NamedTuple):
    """Where the frames of a ``Umem`` are; the fields add up to ``total``."""

    free: int
    """In user space, unused: what ``send`` copies packets into."""
    held: int
    """Received and handed to the caller in a batch not yet released."""
    fill: int
    """In FILL rings: waiting for the kernel to receive into them."""
    rx: int
    """In RX rings: received, not yet taken by ``recv``."""
    tx: int
    """In TX rings: queued for sending, not yet taken by the kernel."""
    completion: int
    """In COMPLETION rings: sent, not yet reclaimed."""
    kernel: int
    """Inside the kernel between rings (being received or sent, or parked after a drop)."""

    @property
    def total(self) -> int:
        """All frames of the UMEM."""
        return sum(self)


class QueueRings:
    """The FILL and COMPLETION rings serving one (interface, queue) of a UMEM, shared by the
    sockets bound there and unmapped when the last of them closes."""

    def __init__(self, fill: FillRing, completion: CompletionRing) -> None:
        self.fill = fill
        self.completion = completion
        self.users = 0
        self.closed = False

    def close(self) -> None:
        """Unmap both rings."""
        self.closed = True
        self.fill.close()
        self.completion.close()


class _User(NamedTuple):
    """A socket using the UMEM: where it is bound and its own rings."""

    where: tuple[int, int]
    rx: RxRing | None
    tx: TxRing | None


class Umem:
    """``frame_count`` frames of ``frame_size`` bytes (a power of two, 2048 up to the page size),
    page-aligned anonymous memory registered with ``XDP_UMEM_REG`` by the first socket using it.

    Frames are addressed by their byte offset. One ``Umem`` may serve several ``XskSocket``s
    (pass it to each); received data starts ``headroom + 256`` bytes into a frame.
    """

    def __init__(self, frame_count: int, frame_size: int = 4096, headroom: int = 0) -> None:
        _check_shape(frame_count, frame_size, headroom)
        self.frame_count = frame_count
        self.frame_size = frame_size
        self.headroom = headroom
        self.size = frame_count * frame_size
        self._mmap = mmap.mmap(-1, self.size, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                               mmap.PROT_READ | mmap.PROT_WRITE)
        self._buffer = memoryview(self._mmap)
        self._free: list[int] = list(range(self.size - frame_size, -1, -frame_size))
        self._held = 0
        self._batches: weakref.WeakSet[RxBatch] = weakref.WeakSet()
        self._queues: dict[tuple[int, int], QueueRings] = {}
        self._sockets: dict[int, _User] = {}  # by socket fd

    # ---- the memory -----------------------------------------------------------------------------

    @property
    def buffer(self) -> memoryview:
        """The whole UMEM, writable; frame ``i`` starts at ``i * frame_size``."""
        if self._buffer is None:
            raise ValueError("operation on a closed Umem")
        return self._buffer

    def frame(self, addr: int, length: int | None = None) -> memoryview:
        """A view of ``length`` bytes (default: to the frame's end) at UMEM offset ``addr``."""
        end = (addr | (self.frame_size - 1)) + 1 if length is None else addr + length
        if not 0 <= addr < end <= self.size or (end - 1) // self.frame_size != addr // self.frame_size:
            raise ValueError(f"offset {addr} length {length} is not inside one frame of this Umem")
        return self.buffer[addr:end]

    @property
    def rx_frame_size(self) -> int:
        """The longest packet a frame can receive: frame size minus headroom and the kernel's 256."""
        return self.frame_size - self.headroom - XDP_PACKET_HEADROOM

    def registration(self) -> UmemReg:
        """The ``XDP_UMEM_REG`` argument describing this memory."""
        anchor = ctypes.c_char.from_buffer(self._mmap)
        try:
            return UmemReg(addr=ctypes.addressof(anchor), len=self.size, chunk_size=self.frame_size,
                           headroom=self.headroom)
        finally:
            del anchor

    # ---- the book of frames ---------------------------------------------------------------------

    def frame_counts(self) -> FrameCounts:
        """Where every frame is now (see ``FrameCounts``); ``kernel`` is what no ring accounts for."""
        fill = sum(len(q.fill) for q in self._queues.values())
        comp = sum(len(q.completion) for q in self._queues.values())
        rx = sum(len(u.rx) for u in self._sockets.values() if u.rx is not None)
        tx = sum(len(u.tx) for u in self._sockets.values() if u.tx is not None)
        known = len(self._free) + self._held + fill + rx + tx + comp
        return FrameCounts(len(self._free), self._held, fill, rx, tx, comp, self.frame_count - known)

    def _take_free(self, count: int) -> list[int]:
        """Pop up to ``count`` free frame addresses."""
        count = min(count, len(self._free))
        taken = self._free[len(self._free) - count:]
        del self._free[len(self._free) - count:]
        return taken

    def _give_free(self, addrs: Iterable[int]) -> None:
        """Return frames (any offset inside them) to the free list."""
        mask = ~(self.frame_size - 1)
        self._free.extend(addr & mask for addr in addrs)

    def _reset_frames(self) -> None:
        """With no socket left, every frame not held by a live batch is free again."""
        held = {addr & ~(self.frame_size - 1) for batch in self._batches for addr in batch.addrs}
        self._free = [addr for addr in range(self.size - self.frame_size, -1, -self.frame_size) if addr not in held]

    # ---- lifetime -------------------------------------------------------------------------------

    @property
    def in_use(self) -> bool:
        """Whether a socket is using this UMEM."""
        return bool(self._sockets)

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
        return self._buffer is None

    def close(self) -> None:
        """Unmap the memory; ``ValueError`` while a socket still uses it. Idempotent."""
        if self._buffer is None:
            return
        if self._sockets:
            raise ValueError(f"Umem is in use by {len(self._sockets)} socket(s): close them first")
        for batch in list(self._batches):
            batch.release()
        self._buffer.release()
        self._buffer = None  # type: ignore[assignment]
        try:
            self._mmap.close()
        except BufferError:
            pass  # the caller still holds views of frames: the mapping goes with them

    def __enter__(self) -> Umem:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self._sockets)} socket(s)"
        return f"<Umem {self.frame_count} x {self.frame_size} B headroom={self.headroom} {state}>"


def _check_shape(frame_count: int, frame_size: int, headroom: int) -> None:
    for name, value in (("frame_count", frame_count), ("frame_size", frame_size), ("headroom", headroom)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"Umem {name} must be an int, not {type(value).__name__}")
    if frame_count <= 0:
        raise ValueError(f"Umem frame_count must be positive, not {frame_count}")
    if frame_size & (frame_size - 1) or not _MIN_FRAME <= frame_size <= mmap.PAGESIZE:
        raise ValueError(f"Umem frame_size must be a power of two from {_MIN_FRAME} to {mmap.PAGESIZE}, not {frame_size}")
    if not 0 <= headroom < frame_size - XDP_PACKET_HEADROOM:
        raise ValueError(f"Umem headroom must be 0 up to {frame_size - XDP_PACKET_HEADROOM - 1} "
                         f"for {frame_size}-byte frames, not {headroom}")
