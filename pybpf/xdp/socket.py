"""``XskSocket``: an AF_XDP socket bound to one queue of an interface, with zero-copy receive
into its ``Umem`` and batched ring work."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import errno
import select
import socket
import weakref
from collections.abc import Iterable
from typing import Any

from .._sys import xdp as _x
from .._sys.netif import interface_index
from ..errors import NotSupportedError, PermissionDeniedError, error_for
from .batch import RxBatch
from .rings import QueueRings, RxRing, TxRing
from .umem import FrameCounts, Umem

_MIN_TX_BUDGET = 32  # the kernel's TX_BATCH_SIZE: XDP_MAX_TX_SKB_BUDGET may not go below it
_OLDEST_TX_BATCH = 16  # frames one copy-mode kick sends on Linux 5.10 (32 later, the ring on 6.17+)


class BindFlags(enum.IntFlag):
    """How ``bind`` attaches the socket (``sxdp_flags``). ``SHARED_UMEM`` is set for you when the
    ``Umem`` already serves a socket; such sockets inherit the first one's mode."""

    NONE = 0
    SHARED_UMEM = _x.XDP_SHARED_UMEM
    COPY = _x.XDP_COPY
    ZEROCOPY = _x.XDP_ZEROCOPY
    USE_NEED_WAKEUP = _x.XDP_USE_NEED_WAKEUP


@dataclasses.dataclass(frozen=True)
class XskStatistics:
    """The kernel's drop counters for a socket (``XDP_STATISTICS``)."""

    rx_dropped: int
    rx_invalid_descs: int
    tx_invalid_descs: int
    rx_ring_full: int
    rx_fill_ring_empty_descs: int
    tx_ring_empty_descs: int


class XskSocket:
    """An AF_XDP socket on ``queue_id`` of ``ifname`` (in the caller's network namespace).

    Rings are sized in entries (powers of two; ``rx_size=0`` or ``tx_size=0`` leaves that ring
    out). Without a ``umem`` the socket makes and owns one with frames for a full FILL ring and a
    full TX ring. Of a ``Umem``'s free frames it keeps up to ``tx_size`` (at most half) for sending
    and posts the rest, up to ``fill_size``, to the FILL ring; a ``Umem`` may serve several
    sockets. Frames reach the socket only once an XDP program redirects them to it through an
    ``XskMap``. Not thread-safe: use a socket from one thread at a time.
    """

    def __init__(
        self,
        ifname: str,
        queue_id: int = 0,
        umem: Umem | None = None,
        *,
        rx_size: int = 2048,
        tx_size: int = 2048,
        fill_size: int | None = None,
        comp_size: int | None = None,
        bind_flags: BindFlags | int | None = None,
    ) -> None:
        fill_size = fill_size if fill_size is not None else (rx_size or tx_size)
        comp_size = comp_size if comp_size is not None else (tx_size or rx_size)
        _check_sizes(rx_size=rx_size, tx_size=tx_size, fill_size=fill_size, comp_size=comp_size)
        if isinstance(queue_id, bool) or not isinstance(queue_id, int) or queue_id < 0:
            raise ValueError(f"queue_id must be a non-negative int, not {queue_id!r}")
        if umem is not None and not isinstance(umem, Umem):
            raise TypeError(f"umem must be a Umem, not {type(umem).__name__}")
        if umem is not None and umem.closed:
            raise ValueError("umem is closed")
        shared = umem is not None and umem.in_use
        flags = _bind_flags(bind_flags, shared)
        if not isinstance(ifname, str):
            raise TypeError(f"ifname must be an interface name (str), not {type(ifname).__name__}")
        ifindex = interface_index(ifname)
        _check_queue(ifname, queue_id, rx_size)

        self.ifname = ifname
        self.ifindex = ifindex
        self.queue_id = queue_id
        self.bind_flags = flags
        self._own_umem = umem is None
        self.umem = umem if umem is not None else Umem((fill_size if rx_size else 0) + tx_size)
        self._rx: RxRing | None = None
        self._tx: TxRing | None = None
        self._rings: QueueRings | None = None
        self._poller: Any = None
        try:
            self._sock = _new_socket()
        except BaseException:
            if self._own_umem:
                self.umem.close()
            raise
        self._fd = self._sock.fileno()
        self._owned = _Owned(self._sock, self.umem, self._own_umem)
        self._finalizer = weakref.finalize(self, self._owned.close)
        try:
            self._setup(rx_size, tx_size, fill_size, comp_size, shared)
        except BaseException:
            self.close()
            raise

    def _setup(self, rx_size: int, tx_size: int, fill_size: int, comp_size: int, shared: bool) -> None:
        umem, fd, owned = self.umem, self._fd, self._owned
        rings = umem.rings(self.ifindex, self.queue_id)  # another socket's on this queue, shared
        if not shared:
            self._setsockopt(_x.XDP_UMEM_REG, bytes(umem.registration()), "register the UMEM")
        if rings is None:
            self._setsockopt(_x.XDP_UMEM_FILL_RING, fill_size, "create the FILL ring")
            self._setsockopt(_x.XDP_UMEM_COMPLETION_RING, comp_size, "create the COMPLETION ring")
        if rx_size:
            self._setsockopt(_x.XDP_RX_RING, rx_size, "create the RX ring")
        if tx_size:
            self._setsockopt(_x.XDP_TX_RING, tx_size, "create the TX ring")
        off = self._mmap_offsets()
        # map everything before bind(): Linux 5.10 and 6.1 refuse mmap of a bound socket (EBUSY)
        if rx_size:
            self._rx = owned.rx = RxRing(fd, _x.XDP_PGOFF_RX_RING, rx_size, off.rx)
        if tx_size:
            self._tx = owned.tx = TxRing(fd, _x.XDP_PGOFF_TX_RING, tx_size, off.tx)
            if tx_size >= _MIN_TX_BUDGET:
                self._try_tx_budget(tx_size)
        partner = umem.share_fd(self.ifindex, self.queue_id) if shared else 0
        new_rings = rings is None
        if rings is None:
            rings = QueueRings.map(fd, fill_size, comp_size, off)
        umem.add_socket(fd, self.ifindex, self.queue_id, rings, self._rx, self._tx)  # it unmaps them after
        self._rings = rings
        owned.joined = True
        self._bind(int(self.bind_flags), partner)
        if new_rings and rx_size:  # keep up to a TX ring's worth (at most half) free for sending
            free = umem.free_frames
            umem.fill(rings, min(fill_size, free - min(tx_size, free // 2)))

    def _mmap_offsets(self) -> _x.MmapOffsets:
        try:
            return _x.mmap_offsets(self._sock)
        except OSError as err:
            raise _socket_error(err.errno, f"read the ring offsets of AF_XDP socket on {self.ifname!r}") from None

    def _setsockopt(self, name: int, value: int | bytes, what: str) -> None:
        try:
            self._sock.setsockopt(_x.SOL_XDP, name, value)
        except OSError as err:
            raise _socket_error(err.errno, f"{what} of AF_XDP socket on {self.ifname!r}") from None

    def _try_tx_budget(self, tx_size: int) -> None:
        """Let one copy-mode ``sendto`` transmit a whole TX ring (Linux 6.17+; older kernels do 32)."""
        try:
            self._sock.setsockopt(_x.SOL_XDP, _x.XDP_MAX_TX_SKB_BUDGET, tx_size)
        except OSError:
            pass

    def _bind(self, flags: int, shared_fd: int) -> None:
        where = f"bind AF_XDP socket to {self.ifname!r} queue {self.queue_id}"
        try:
            _x.bind(self._fd, self.ifindex, self.queue_id, flags, shared_fd)
        except OSError as err:
            code = err.errno or errno.EIO
            if code == errno.EBUSY:
                raise error_for(code, where, message="that queue already has an AF_XDP socket (or UMEM) bound, or "
                                "had one closed a moment ago (the kernel frees the queue shortly after)") from None
            if code == errno.EOPNOTSUPP and flags & BindFlags.ZEROCOPY:
                raise NotSupportedError(code, where, message="the driver cannot do zero-copy AF_XDP here; "
                                        "leave out BindFlags.ZEROCOPY (copy mode)") from None
            if code == errno.EINVAL:
                raise error_for(code, where, message="the kernel refused the queue or the flags "
                                f"(queue out of range, or {BindFlags(flags)!r} not allowed here)") from None
            raise _socket_error(code, where) from None

    # ---- receiving ------------------------------------------------------------------------------

    def recv(self, max_frames: int = 64, timeout: float | None = 0.0) -> RxBatch:
        """Up to ``max_frames`` received frames as an ``RxBatch`` of views into the UMEM.

        Returns at once with what is there (maybe nothing); with a ``timeout`` (seconds, None for
        ever) it first waits for a frame. Release the batch to recycle its frames.
        """
        rx = self._rx
        if rx is None:
            raise ValueError("this socket has no RX ring (rx_size=0)" if not self.closed else "operation on a closed XskSocket")
        if max_frames <= 0:
            raise ValueError(f"max_frames must be positive, not {max_frames}")
        if timeout != 0.0 and not len(rx):
            self.wait(timeout)
        descs = rx.consume(max_frames)
        rings = self._rings
        if not descs and rings is not None and rings.fill.needs_wakeup():
            self._wake_rx()
        return RxBatch(self.umem, rings, descs)

    def _wake_rx(self) -> None:
        try:
            self._sock.recv(0, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            pass

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a frame is in the RX ring or ``timeout`` seconds pass; True if one is."""
        if self._poller is None:
            self._poller = select.poll()
            self._poller.register(self.fileno(), select.POLLIN)
        return bool(self._poller.poll(None if timeout is None else max(0, int(timeout * 1000 + 0.999))))

    async def wait_readable(self) -> None:
        """Wait (asyncio) until a frame is in the RX ring."""
        rx = self._rx
        if rx is None:
            raise ValueError("this socket has no RX ring (rx_size=0)" if not self.closed else "operation on a closed XskSocket")
        if not len(rx):
            await _wait_fd(self.fileno(), writable=False)

    async def wait_writable(self) -> None:
        """Wait (asyncio) until the TX ring is at most half full."""
        await _wait_fd(self.fileno(), writable=True)

    # ---- sending --------------------------------------------------------------------------------

    def send(self, packets: Iterable[bytes | bytearray | memoryview]) -> int:
        """Copy packets into free frames and queue them on the TX ring; returns how many were queued
        (a prefix: fewer when the ring or the free frames run out). Completions are reclaimed first."""
        tx = self._tx
        if tx is None:
            raise ValueError("this socket has no TX ring (tx_size=0)" if not self.closed else "operation on a closed XskSocket")
        packets = packets if isinstance(packets, (list, tuple)) else list(packets)
        room = self.umem.frame_size
        lens = [len(p) if isinstance(p, (bytes, bytearray)) else memoryview(p).nbytes for p in packets]
        for index, size in enumerate(lens):
            if not 0 < size <= room:
                raise ValueError(f"packet {index}: {size} bytes does not fit a {room}-byte frame (1..{room})")
        self.reclaim()
        addrs = self.umem.take_free(min(len(packets), tx.free()))
        count = len(addrs)
        if count:
            buffer = self.umem.buffer
            for addr, packet, size in zip(addrs, packets, lens):
                try:
                    buffer[addr: addr + size] = packet
                except (ValueError, TypeError):
                    buffer[addr: addr + size] = memoryview(packet).cast("B")
            tx.produce(addrs, lens[:count])
        self.flush()
        return count

    def flush(self) -> None:
        """Make the kernel start sending what the TX ring holds (``sendto`` when it needs a kick)."""
        tx = self._tx
        if tx is None or not len(tx):
            return
        if self.bind_flags & BindFlags.USE_NEED_WAKEUP and not tx.needs_wakeup():
            return
        for _ in range(len(tx) // _OLDEST_TX_BATCH + 4):
            try:
                self._sock.send(b"", socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                self.reclaim()  # budget used up, or the COMPLETION ring is full: drain it, go on
                continue
            except OSError as err:
                if err.errno == errno.EBUSY:
                    continue  # the device dropped one frame (it is completed): go on
                raise _socket_error(err.errno, f"send on AF_XDP socket on {self.ifname!r}") from None
            if not len(tx):
                return

    def reclaim(self) -> int:
        """Move sent frames from the COMPLETION ring to the free list; returns how many."""
        rings = self._rings
        return 0 if rings is None else self.umem.reclaim(rings)

    # ---- state ----------------------------------------------------------------------------------

    def fileno(self) -> int:
        """The socket's file descriptor (owned by this object)."""
        if self.closed:
            raise ValueError("operation on a closed XskSocket")
        return self._fd

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
        return not self._finalizer.alive

    @property
    def zerocopy(self) -> bool:
        """Whether the kernel runs this socket in zero-copy mode (``XDP_OPTIONS``)."""
        self.fileno()
        opts: Any = _x.getsockopt_struct(self._sock, _x.XDP_OPTIONS, _x.XdpOptions)
        return bool(opts.flags & _x.XDP_OPTIONS_ZEROCOPY)

    def stats(self) -> XskStatistics:
        """The kernel's counters of dropped and invalid descriptors for this socket."""
        self.fileno()
        raw: Any = _x.getsockopt_struct(self._sock, _x.XDP_STATISTICS, _x.Statistics)
        return XskStatistics(**{field.name: getattr(raw, field.name) for field in dataclasses.fields(XskStatistics)})

    def frame_counts(self) -> FrameCounts:
        """Where every frame of this socket's UMEM is (free, held, fill, rx, tx, completion, kernel)."""
        return self.umem.frame_counts()

    def close(self) -> None:
        """Unmap the rings and close the socket (it leaves every XSKMAP). Idempotent.

        FILL and COMPLETION rings shared with another socket on the same queue stay mapped (and
        the kernel keeps this socket) until the last socket using them closes.
        """
        self._finalizer()
        self._rx = self._tx = None
        self._rings = None

    def __enter__(self) -> XskSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"fd={self._fd}"
        return f"<XskSocket {self.ifname!r} queue {self.queue_id} {state}>"


class _Owned:
    """What a socket owns, released once by ``close()`` or by its finalizer: the rings it maps,
    its place among the UMEM's users, the socket, and the UMEM if it made it."""

    def __init__(self, sock: socket.socket, umem: Umem, own_umem: bool) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.umem = umem
        self.own_umem = own_umem
        self.rx: RxRing | None = None
        self.tx: TxRing | None = None
        self.joined = False
        """Whether the UMEM counts the socket as a user (and unmaps the FILL and COMPLETION rings)."""

    def close(self) -> None:
        for ring in (self.rx, self.tx):
            if ring is not None:
                ring.close()
        if self.joined:
            self.umem.remove_socket(self.fd)
        self.sock.close()
        if self.own_umem and not self.umem.in_use:
            self.umem.close()


def _new_socket() -> socket.socket:
    try:
        return socket.socket(_x.AF_XDP, socket.SOCK_RAW, 0)
    except OSError as err:
        if err.errno == errno.EAFNOSUPPORT:
            raise NotSupportedError(err.errno, "create AF_XDP socket", message="this kernel has no AF_XDP "
                                    "(CONFIG_XDP_SOCKETS)") from None
        raise _socket_error(err.errno, "create AF_XDP socket") from None


def _socket_error(code: int | None, where: str) -> OSError:
    code = code or errno.EIO
    if code in (errno.EPERM, errno.EACCES):
        return PermissionDeniedError(code, where, hint="AF_XDP needs CAP_NET_RAW (and CAP_NET_ADMIN to attach XDP)")
    if code == errno.ENOBUFS:
        return error_for(code, where, message="the UMEM is larger than RLIMIT_MEMLOCK allows, or memory ran out")
    return error_for(code, where)


async def _wait_fd(fd: int, writable: bool) -> None:
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def ready() -> None:
        if not done.done():
            done.set_result(None)

    (loop.add_writer if writable else loop.add_reader)(fd, ready)
    try:
        await done
    finally:
        (loop.remove_writer if writable else loop.remove_reader)(fd)


def _check_sizes(**sizes: int) -> None:
    if sizes["rx_size"] == 0 and sizes["tx_size"] == 0:
        raise ValueError("rx_size and tx_size are both 0: a socket needs an RX or a TX ring")
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, not {type(value).__name__}")
        optional = name in ("rx_size", "tx_size")
        if value < 0 or (value == 0 and not optional) or value & (value - 1):
            raise ValueError(f"{name} must be a power of two{' (or 0 for none)' if optional else ''}, not {value}")


def _bind_flags(value: BindFlags | int | None, shared: bool) -> BindFlags:
    if value is None:
        return BindFlags.SHARED_UMEM if shared else BindFlags.USE_NEED_WAKEUP
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"bind_flags must be BindFlags, not {type(value).__name__}")
    flags = BindFlags(value)
    allowed = BindFlags.COPY | BindFlags.ZEROCOPY | BindFlags.USE_NEED_WAKEUP
    if flags & ~allowed & ~BindFlags.SHARED_UMEM or int(value) & ~int(allowed | BindFlags.SHARED_UMEM):
        raise ValueError(f"bind_flags {value!r}: only COPY, ZEROCOPY and USE_NEED_WAKEUP may be given")
    if flags & BindFlags.COPY and flags & BindFlags.ZEROCOPY:
        raise ValueError("bind_flags: COPY and ZEROCOPY exclude each other")
    if shared and flags & allowed:
        raise ValueError("bind_flags: a socket sharing a Umem inherits the mode of its first socket; give none")
    if flags & BindFlags.SHARED_UMEM and not shared:
        raise ValueError("bind_flags: SHARED_UMEM is set for you when the Umem already serves a socket")
    return flags | (BindFlags.SHARED_UMEM if shared else BindFlags.NONE)


def _check_queue(ifname: str, queue_id: int, rx_size: int) -> None:
    counts = _x.queue_counts(ifname)
    if counts is None:
        return
    have = counts[0] if rx_size else counts[1]
    if queue_id >= have:
        kind = "receive" if rx_size else "transmit"
        raise ValueError(f"queue_id {queue_id} is out of range: {ifname!r} has {have} {kind} queue(s) (0..{have - 1})")
