"""What the event readers share: the map checks, the one-thread-at-a-time and fork guards, epoll
waiting, blocking iteration and ``async for``."""

from __future__ import annotations

import ctypes
import os
import select
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, Generic, Self, TypeVar

from .._sys import commands
from .._sys.constants import MapType
from ..errors import BPFError

T = TypeVar("T")
R = TypeVar("R")

_pid = os.getpid()


def _after_fork_in_child() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_after_fork_in_child)


class ReaderBusyError(RuntimeError):
    """A reader was used from a second thread while another thread was using it."""


def map_fd_and_info(bpf_map: Any, want: tuple[MapType, ...], reader: str) -> tuple[int, Any]:
    """A duplicate of the fd behind ``bpf_map`` (a ``Map`` or an fd) and its kernel info, after
    checking its type is one of ``want``; TypeError/ValueError name the argument."""
    if isinstance(bpf_map, bool):
        raise TypeError(f"{reader}: map must be a Map or a map fd, not {bpf_map!r}")
    if isinstance(bpf_map, int):
        fd = bpf_map
    else:
        if getattr(bpf_map, "closed", False):
            raise ValueError(f"{reader}: the map {getattr(bpf_map, 'name', '')!r} is closed")
        found: Any = getattr(bpf_map, "fd", None)
        if not isinstance(found, int) or isinstance(found, bool):
            raise TypeError(f"{reader}: map must be a Map or a map fd, not {bpf_map!r}")
        fd = found
    if fd < 0:
        raise ValueError(f"{reader}: {fd} is not an fd")
    try:
        info = commands.map_info(fd)
    except BPFError as err:
        raise ValueError(f"{reader}: fd {fd} is not an open BPF map ({err.strerror})") from None
    if info.type not in want:
        names = " or ".join(t.name for t in want)
        got = MapType(info.type).name if info.type in MapType._value2member_map_ else f"type {info.type}"
        raise TypeError(f"{reader} reads {names} maps; map {info.name.decode(errors='replace')!r} is {got}")
    return os.dup(fd), info


class Guard:
    """Refuses a second thread while one is inside (``ReaderBusyError``), use in a forked child,
    and use after close, each with a message naming the reader. ``close()`` from another thread
    wakes a reader blocked in ``epoll`` (through an eventfd registered there) and waits for it."""

    def __init__(self, what: str, epoll: select.epoll | None = None) -> None:
        self._what = what
        self._lock = threading.Lock()
        self._owner = 0
        self._pid = os.getpid()
        self.closed = False
        self.closing = False
        self._wake = -1
        if epoll is not None:
            self._wake = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            epoll.register(self._wake, select.EPOLLIN)

    def enter(self) -> None:
        """Start an operation (pair with ``leave``)."""
        if self.closed or self.closing:
            raise ValueError(f"operation on a closed {self._what}")
        if self._pid != _pid:
            raise RuntimeError(f"this {self._what} belongs to process {self._pid}: a forked child cannot consume "
                               "its parent's records (open a new reader in the child)")
        if not self._lock.acquire(blocking=False):
            raise ReaderBusyError(f"this {self._what} is being used by another thread: use one reader per thread "
                                  "(or a lock around it)")
        self._owner = threading.get_ident()

    def leave(self) -> None:
        """End an operation."""
        self._owner = 0
        self._lock.release()

    def close(self, wait: float = 10.0) -> bool:
        """Mark closed, first waking and waiting (up to ``wait`` seconds) for a thread blocked in
        the reader; False if it is already closed. The caller then releases the resources."""
        if self.closed:
            return False
        if self._owner == threading.get_ident():
            raise RuntimeError(f"close() of a {self._what} from inside its own callback: return from the callback first")
        self.closing = True
        if self._wake >= 0:
            os.eventfd_write(self._wake, 1)
        if not self._lock.acquire(timeout=wait):
            self.closing = False
            raise ReaderBusyError(f"this {self._what} is still being used by another thread after {wait} s")
        self.closed = True
        self._lock.release()
        if self._wake >= 0:
            os.close(self._wake)
            self._wake = -1
        return True

    def dispose(self) -> None:
        """Mark closed without waiting (a reader that failed to open, or is torn down)."""
        self.closed = True
        if self._wake >= 0:
            os.close(self._wake)
            self._wake = -1

    @property
    def forked(self) -> bool:
        """Whether this is a forked child of the process that made the reader."""
        return self._pid != _pid


def check_timeout(timeout: float | None) -> float:
    """epoll's timeout in seconds (-1: forever) from ``None`` or a number of seconds >= 0."""
    if timeout is None:
        return -1
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, not {timeout!r}")
    if timeout != timeout or timeout < 0:
        raise ValueError(f"timeout must be >= 0 seconds, not {timeout}")
    return float(timeout)


def drain_rings(guard: Guard, epoll: select.epoll, rings: Sequence[R], visit: Callable[[R], int],
                timeout: float | None) -> int:
    """Run ``visit(ring)`` (which reads a ring's records and says how many) over every ring until
    some were read, waiting on ``epoll`` up to ``timeout`` seconds (None: forever, 0: not at all);
    the number read. Returns early with 0 when the reader is being closed."""
    wait_for = check_timeout(timeout)
    guard.enter()
    try:
        deadline = None if wait_for < 0 else time.monotonic() + wait_for
        while True:
            count = sum(visit(ring) for ring in rings)
            if count or wait_for == 0:
                return count
            left = -1 if deadline is None else deadline - time.monotonic()
            if deadline is not None and left <= 0:
                return 0
            epoll.poll(left)
            if guard.closing:
                return 0
    finally:
        guard.leave()


def poll_rings(guard: Guard, epoll: select.epoll, rings: Sequence[R], read: Callable[[R, list[Any]], object],
               timeout: float | None, decode: Callable[[Any], Any] | None) -> list[Any]:
    """The records every ring holds now, copied (``read(ring, out)`` appends a ring's), waiting as
    ``drain_rings`` does for the first; decoded when the reader has a record type."""
    out: list[Any] = []

    def visit(ring: R) -> int:
        before = len(out)
        read(ring, out)
        return len(out) - before

    drain_rings(guard, epoll, rings, visit, timeout)
    return [decode(record) for record in out] if decode is not None else out


def wait(epoll: select.epoll, timeout: float) -> list[tuple[int, int]]:
    """``epoll_wait`` for up to ``timeout`` seconds (-1: forever), retried on EINTR by Python."""
    return epoll.poll(timeout)


def deadline_left(deadline: float | None) -> float:
    """Seconds left until ``deadline`` (a ``time.monotonic`` value; None: forever, -1)."""
    if deadline is None:
        return -1
    return max(0.0, deadline - time.monotonic())


def decoder(record_type: type | None, reader: str) -> Callable[[Any], Any] | None:
    """A function turning a record into an instance of ``record_type`` (a ctypes type), or None."""
    if record_type is None:
        return None
    if not (isinstance(record_type, type) and issubclass(record_type, ctypes._SimpleCData | ctypes.Structure | ctypes.Union | ctypes.Array)):
        raise TypeError(f"{reader}: type must be a ctypes type (a Structure, Union, Array or scalar), not {record_type!r}")
    size = ctypes.sizeof(record_type)
    name = record_type.__name__
    from_copy = record_type.from_buffer_copy

    def decode(record: Any) -> Any:
        if len(record) < size:
            raise ValueError(f"{reader}: a record of {len(record)} bytes is shorter than {name} ({size} bytes)")
        return from_copy(record[:size]) if len(record) > size else from_copy(record)

    return decode


class Iterable(Generic[T]):
    """Blocking iteration and ``async for`` over a reader's ``poll``."""

    def poll(self, timeout: float | None = None) -> list[T]:  # pragma: no cover - overridden
        raise NotImplementedError

    def fileno(self) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def closed(self) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    def __iter__(self) -> Iterator[T]:
        """Yield records as they come, blocking for the next; ends when the reader is closed."""
        while not self.closed:
            yield from self.poll(None)

    def __aiter__(self) -> AsyncIterator[T]:
        """``async for record in reader``: waits in the running event loop, never blocks it."""
        return self._records()

    async def _records(self) -> AsyncIterator[T]:
        import asyncio

        loop = asyncio.get_running_loop()
        while not self.closed:
            records = self.poll(0)
            if records:
                for record in records:
                    yield record
                continue
            ready: asyncio.Future[None] = loop.create_future()
            fd = self.fileno()

            def wake() -> None:
                if not ready.done():
                    ready.set_result(None)

            loop.add_reader(fd, wake)
            try:
                await ready
            finally:
                loop.remove_reader(fd)


class Closing:
    """Context manager protocol for readers with ``close()``."""

    def close(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
