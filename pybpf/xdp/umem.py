"""``Umem``: the packet buffer an AF_XDP socket shares with the kernel, cut into equal frames,
and the book of where every frame is.

Frames move only through the book's methods: ``take_free`` (to send), ``fill`` (free frames to a
FILL ring), ``reclaim`` (sent frames back from a COMPLETION ring), ``lend`` and ``give_back`` (an
``RxBatch`` holding received frames, then returning them to FILL). Sockets announce themselves
with ``add_socket`` and ``remove_socket``; the book counts what their rings hold from there.
"""

from __future__ import annotations

import ctypes
import mmap
import weakref
from array import array
from typing import NamedTuple, Protocol

from .._sys.xdp import XDP_PACKET_HEADROOM, UmemReg
from .rings import QueueRings, RxRing, TxRing

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


class FrameHolder(Protocol):
    """What holds frames lent by ``Umem.lend`` (an ``RxBatch``)."""

    @property
    def addrs(self) -> array[int]:
        """UMEM offsets inside the frames it holds."""

    def release(self) -> None:
        """Give the frames back (``Umem.give_back``); called by ``Umem.close`` on what is still lent."""


class _Socket(NamedTuple):
    """A socket using the UMEM: where it is bound, the queue's shared rings and its own."""

    where: tuple[int, int]
    rings: QueueRings
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
        self._free = self._all_frames()  # offsets, anywhere inside a frame: users mask them
        self._held = 0
        self._lent: weakref.WeakSet[FrameHolder] = weakref.WeakSet()
        self._sockets: dict[int, _Socket] = {}  # by socket fd

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

    # ---- the sockets using it -------------------------------------------------------------------

    def rings(self, ifindex: int, queue_id: int) -> QueueRings | None:
        """The FILL and COMPLETION rings of a socket already bound to that queue, if any."""
        for sock in self._sockets.values():
            if sock.where == (ifindex, queue_id):
                return sock.rings
        return None

    def share_fd(self, ifindex: int, queue_id: int) -> int:
        """The socket a new one names when it binds with ``XDP_SHARED_UMEM``: one bound to the same
        queue (whose FILL and COMPLETION rings it shares), else the first; ``ValueError`` if none."""
        same = [fd for fd, sock in self._sockets.items() if sock.where == (ifindex, queue_id)]
        if not same and not self._sockets:
            raise ValueError("the Umem serves no socket yet: nothing to share")
        return same[0] if same else next(iter(self._sockets))

    def add_socket(self, fd: int, ifindex: int, queue_id: int, rings: QueueRings, rx: RxRing | None,
                   tx: TxRing | None) -> None:
        """Count socket ``fd`` on that queue, with its rings, as a user of this memory."""
        if fd in self._sockets:
            raise ValueError(f"socket {fd} already uses this Umem")
        self._sockets[fd] = _Socket((ifindex, queue_id), rings, rx, tx)

    def remove_socket(self, fd: int) -> None:
        """Forget socket ``fd``; unmap its queue's FILL and COMPLETION rings if no other socket uses
        them. With no socket left, every frame not lent to a batch is free again."""
        sock = self._sockets.pop(fd, None)
        if sock is not None and all(other.rings is not sock.rings for other in self._sockets.values()):
            sock.rings.close()
        if not self._sockets:
            lent = {addr & -self.frame_size for holder in self._lent for addr in holder.addrs}
            self._free = array("Q", (addr for addr in self._all_frames() if addr not in lent))

    @property
    def in_use(self) -> bool:
        """Whether a socket is using this UMEM."""
        return bool(self._sockets)

    # ---- the book of frames ---------------------------------------------------------------------

    def frame_counts(self) -> FrameCounts:
        """Where every frame is now (see ``FrameCounts``); ``kernel`` is what no ring accounts for."""
        queues = {id(sock.rings): sock.rings for sock in self._sockets.values()}.values()
        fill = sum(len(rings.fill) for rings in queues)
        comp = sum(len(rings.completion) for rings in queues)
        rx = sum(len(sock.rx) for sock in self._sockets.values() if sock.rx is not None)
        tx = sum(len(sock.tx) for sock in self._sockets.values() if sock.tx is not None)
        known = len(self._free) + self._held + fill + rx + tx + comp
        return FrameCounts(len(self._free), self._held, fill, rx, tx, comp, self.frame_count - known)

    @property
    def free_frames(self) -> int:
        """How many frames are free (in user space, unused)."""
        return len(self._free)

    def take_free(self, count: int) -> list[int]:
        """Take up to ``count`` free frames: their start offsets."""
        free = self._free
        count = min(count, len(free))
        taken = free[len(free) - count:]
        del free[len(free) - count:]
        mask = -self.frame_size
        return [addr & mask for addr in taken]

    def fill(self, rings: QueueRings, count: int) -> int:
        """Post up to ``count`` free frames to the FILL ring of ``rings``; returns how many."""
        free = self._free
        count = min(count, len(free), rings.fill.free())
        if count > 0:
            rings.fill.produce(free[len(free) - count:])
            del free[len(free) - count:]
        return max(count, 0)

    def reclaim(self, rings: QueueRings) -> int:
        """Move what the COMPLETION ring of ``rings`` holds (frames sent) to the free list."""
        if rings.closed:
            return 0
        done = rings.completion.consume()
        self._free.extend(done)
        return len(done)

    def lend(self, holder: FrameHolder, count: int) -> None:
        """Count ``count`` received frames as held by ``holder`` until it calls ``give_back``."""
        self._held += count
        self._lent.add(holder)

    def give_back(self, holder: FrameHolder, addrs: array[int], rings: QueueRings | None) -> None:
        """Take back the frames ``holder`` held: to the FILL ring of ``rings`` while it has room
        (and is mapped), the rest to the free list."""
        self._held -= len(addrs)
        self._lent.discard(holder)
        posted = 0 if rings is None or rings.closed else rings.fill.produce(addrs)
        if posted < len(addrs):
            self._free.extend(addrs[posted:])

    # ---- lifetime -------------------------------------------------------------------------------

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
        for holder in list(self._lent):
            holder.release()
        self._buffer.release()
        self._buffer = None  # type: ignore[assignment]
        try:
            self._mmap.close()
        except BufferError:
            pass  # the caller still holds views of frames: the mapping goes with them

    def _all_frames(self) -> array[int]:
        """Every frame's start offset, the first frames last (``take_free`` pops from the end)."""
        return array("Q", range(self.size - self.frame_size, -1, -self.frame_size))

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
