"""``PerfBuffer``: reads what BPF programs send with ``bpf_perf_event_output`` through a
PERF_EVENT_ARRAY: one ``PERF_COUNT_SW_BPF_OUTPUT`` event per CPU, each with its own ring.

Each ring is mmap'ed as one control page (``struct perf_event_mmap_page``) and ``pages`` data
pages. Records (``struct perf_event_header`` then the body) are 8-byte aligned, so a header never
wraps but a body may: such a record is copied out in two pieces. ``PERF_RECORD_SAMPLE`` bodies are
a u32 size then the raw bytes; ``PERF_RECORD_LOST`` counts records the kernel dropped because the
ring was full (added to ``lost``).

Memory ordering. The kernel publishes ``data_head`` after writing records and reads ``data_tail``
to know what it may overwrite (``kernel/events/ring_buffer.c``). Each is read or written here as
one item of a ``memoryview`` cast to ``"Q"`` (one aligned 8-byte access); on x86-64 (total store
order) the load of ``data_head`` is not reordered with the loads of the records after it, nor is
the store of ``data_tail`` with the copies before it. Weakly ordered CPUs would need barriers that
CPython cannot express: pybpf's readers are written for, and tested on, x86-64.

Wake-ups. By default the kernel wakes the reader for every record (``wakeup_events=1``, as
libbpf); ``wakeup_events=N`` wakes it every N records and ``watermark=BYTES`` when that many bytes
wait, which costs fewer wake-ups at high rates. With either, ``poll`` reads every ring before it
sleeps, so records below the threshold are still delivered when asked for.

CPUs. Events are opened on the possible CPUs that are online (and below the map's
``max_entries``); an offline CPU has no event (``cpus`` lists those read), as libbpf does.
Threads and fork: as ``RingBuffer`` (one thread at a time; a forked child is refused).
"""

from __future__ import annotations

import errno
import mmap
import os
import select
from collections.abc import Callable
from typing import Any

from .._sys import cpus, perf
from .._sys.constants import MapType
from ..errors import BPFError, error_for
from ._reader import Closing, Guard, Iterable, decoder, drain_rings, map_fd_and_info, poll_rings

PAGE = mmap.PAGESIZE
_HEAD = perf.DATA_HEAD_OFFSET // 8
_TAIL = perf.DATA_TAIL_OFFSET // 8
_U32 = perf.RAW_SIZE
_HEADER = perf.HEADER
_LOST = perf.LOST
_SAMPLE = perf.PERF_RECORD_SAMPLE
_LOST_TYPE = perf.PERF_RECORD_LOST
_MAX_PAGES = 1 << 16


class _CpuRing:
    """The event fd of one CPU and its mapped ring."""

    def __init__(self, cpu: int, fd: int, pages: int) -> None:
        self.cpu, self.fd = cpu, fd
        self.size = pages * PAGE
        self.mask = self.size - 1
        try:
            self.mapping = mmap.mmap(fd, PAGE + self.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as err:
            code = err.errno or errno.EINVAL
            hint = "the per-user perf memory limit (/proc/sys/kernel/perf_event_mlock_kb) may be too low for this many pages" if code == errno.EPERM else ""
            raise error_for(code, f"map perf ring of CPU {cpu}", hint=hint) from None
        view = memoryview(self.mapping)
        self.control = view[:PAGE].cast("Q")
        self.data = view[PAGE:]
        self._views = [self.control, self.data, view]

    def close(self) -> None:
        for view in self._views:
            view.release()
        self._views.clear()
        try:
            self.mapping.close()
        except BufferError:  # a record view is still referenced: the mapping goes when it does
            pass


class PerfBuffer(Iterable[Any], Closing):
    """Reads a PERF_EVENT_ARRAY: ``poll(timeout)`` returns sample payloads, ``consume(callback)``
    hands out views, ``lost`` counts records the kernel dropped; iteration and ``async for``.

    ``pages`` (a power of 2) sizes each CPU's ring; ``wakeup_events`` or ``watermark`` (bytes)
    batch wake-ups. Payloads are as the kernel delivers them: their size is rounded up so that
    size + 4 is a multiple of 8. ``type`` (a ctypes type) decodes each payload into an instance.
    """

    def __init__(self, bpf_map: Any, pages: int = 8, *, wakeup_events: int = 1, watermark: int | None = None,
                 type: type | None = None) -> None:
        """Open one event per online CPU, map its ring and store it in ``bpf_map`` at the CPU's index."""
        if isinstance(pages, bool) or not isinstance(pages, int):
            raise TypeError(f"pages must be an int, not {pages!r}")
        if pages < 1 or pages & (pages - 1) or pages > _MAX_PAGES:
            raise ValueError(f"pages must be a power of 2 between 1 and {_MAX_PAGES}, not {pages}")
        if isinstance(wakeup_events, bool) or not isinstance(wakeup_events, int) or not 1 <= wakeup_events < 1 << 32:
            raise ValueError(f"wakeup_events must be an int from 1 to 2**32-1, not {wakeup_events!r}")
        if watermark is not None:
            if isinstance(watermark, bool) or not isinstance(watermark, int) or not 1 <= watermark <= pages * PAGE:
                raise ValueError(f"watermark must be 1 .. {pages * PAGE} bytes (the ring's size), not {watermark!r}")
            if wakeup_events != 1:
                raise ValueError("give wakeup_events or watermark, not both")
        self._decode = decoder(type, "PerfBuffer")
        self.lost = 0
        """Records the kernel reported lost (ring full), summed over CPUs."""
        self._rings: list[_CpuRing] = []
        self._by_fd: dict[int, _CpuRing] = {}
        self._epoll = select.epoll()
        self._guard = Guard("PerfBuffer", self._epoll)
        self._map_fd, info = -1, None
        try:
            self._map_fd, info = map_fd_and_info(bpf_map, (MapType.PERF_EVENT_ARRAY,), "PerfBuffer")
            self._name = info.name.decode(errors="replace")
            online = cpus.online_cpus()
            for cpu in cpus.possible_cpu_list():
                if cpu >= info.max_entries or cpu not in online:
                    continue
                self._open(cpu, pages, wakeup_events, watermark)
        except BaseException:
            self._teardown()
            raise
        self.cpus: tuple[int, ...] = tuple(r.cpu for r in self._rings)
        """The CPUs whose events this reader opened (online CPUs below the map's ``max_entries``)."""

    def _open(self, cpu: int, pages: int, wakeup_events: int, watermark: int | None) -> None:
        attr = perf.PerfEventAttr(type=perf.PERF_TYPE_SOFTWARE, config=perf.PERF_COUNT_SW_BPF_OUTPUT,
                                  sample_period=1, sample_type=perf.PERF_SAMPLE_RAW)
        if watermark is not None:
            attr.flags = perf.FLAG_WATERMARK
            attr.wakeup_events = watermark
        else:
            attr.wakeup_events = wakeup_events
        fd = perf.perf_event_open_errno(attr, -1, cpu)
        if fd == -errno.ENODEV:  # went offline since we looked
            return
        if fd < 0:
            raise error_for(-fd, f"open BPF output event on CPU {cpu} for", self._name, hint=perf._perf_hint(-fd))
        try:
            ring = _CpuRing(cpu, fd, pages)
        except BaseException:
            os.close(fd)
            raise
        self._rings.append(ring)
        self._by_fd[fd] = ring
        perf.enable(fd, self._name)
        self._epoll.register(fd, select.EPOLLIN)
        _update(self._map_fd, cpu, fd, self._name)

    # ---- reading ----------------------------------------------------------------------------

    def poll(self, timeout: float | None = None) -> list[Any]:
        """Every sample available now as ``bytes`` (or ``type`` instances); if none, wait up to
        ``timeout`` seconds (None: forever) for the first. Lost-record notices add to ``lost``."""
        return poll_rings(self._guard, self._epoll, self._rings, lambda ring, out: self._read(ring, out.append, copy=True),
                          timeout, self._decode)

    def consume(self, callback: Callable[[Any], object], timeout: float = 0) -> int:
        """Call ``callback(sample)`` for every sample available (a ``memoryview`` into the ring,
        valid during the call; a record that wrapped around is passed as ``bytes``); returns how
        many. With ``timeout`` > 0 (or None), first wait that long for one."""
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {callback!r}")
        decode = self._decode
        if decode is None:
            deliver = callback
        else:
            def deliver(view: Any) -> object:
                return callback(decode(view))
        return drain_rings(self._guard, self._epoll, self._rings, lambda ring: self._read(ring, deliver, copy=False), timeout)

    def _read(self, ring: _CpuRing, deliver: Callable[[Any], object], copy: bool) -> int:
        """Hand every sample of ``ring`` to ``deliver``; advance ``data_tail``; the count."""
        control, data, mask, size = ring.control, ring.data, ring.mask, ring.size
        tail = control[_TAIL]
        head = control[_HEAD]
        count = 0
        try:
            while tail < head:
                off = tail & mask
                kind, _, length = _HEADER.unpack_from(data, off)
                if length < 8:
                    raise BPFError(errno.EIO, f"read perf ring of CPU {ring.cpu}", message=f"a record of {length} bytes: the ring is corrupt")
                body = off + 8
                end = off + length
                if end <= size:
                    record: Any = data[body:end]
                else:  # wraps around the ring's end
                    record = bytes(data[body:size]) + bytes(data[: end - size]) if body < size else data[body - size: end - size]
                tail += length
                if kind == _SAMPLE:
                    raw = _U32.unpack_from(record)[0]
                    sample = record[4: 4 + raw]
                    count += 1
                    if copy:
                        deliver(bytes(sample))
                    else:
                        try:
                            deliver(sample)
                        finally:
                            if isinstance(sample, memoryview):
                                sample.release()
                elif kind == _LOST_TYPE:
                    self.lost += _LOST.unpack_from(record)[1]
                if isinstance(record, memoryview):
                    record.release()
                if tail >= head:
                    head = control[_HEAD]
        finally:
            control[_TAIL] = tail
        return count

    # ---- plumbing ---------------------------------------------------------------------------

    def fileno(self) -> int:
        """An fd that is readable while any CPU's ring has records (an epoll fd), for selectors."""
        if self._guard.closed:
            raise ValueError("operation on a closed PerfBuffer")
        return self._epoll.fileno()

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called (or is under way in another thread)."""
        return self._guard.closed or self._guard.closing

    def close(self) -> None:
        """Disable the events, take them out of the map, unmap the rings, close the fds. Idempotent.
        A thread blocked in ``poll``, ``consume`` or iteration is woken and waited for."""
        if self._guard.close():
            self._teardown()

    def _teardown(self) -> None:
        self._guard.dispose()
        for ring in self._rings:
            perf.disable(ring.fd)
            if self._map_fd >= 0 and not self._guard.forked:
                _delete(self._map_fd, ring.cpu)
            ring.close()
            os.close(ring.fd)
        self._rings.clear()
        self._by_fd.clear()
        if self._map_fd >= 0:
            os.close(self._map_fd)
            self._map_fd = -1
        self._epoll.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"cpus={list(self.cpus)}"
        return f"<PerfBuffer {state} lost={self.lost}>"

    def __del__(self) -> None:
        if not getattr(self, "_guard", None) or self._guard.closed:
            return
        try:
            self.close()
        except Exception:
            pass


def _update(map_fd: int, cpu: int, event_fd: int, name: str) -> None:
    """Store ``event_fd`` in the PERF_EVENT_ARRAY at index ``cpu``."""
    from ..map import Map

    with Map.from_fd(map_fd) as target:
        try:
            target.update(cpu, event_fd)
        except BPFError as err:
            raise error_for(err.errno or errno.EIO, f"store the event of CPU {cpu} in", name) from None


def _delete(map_fd: int, cpu: int) -> None:
    from ..map import Map

    try:
        with Map.from_fd(map_fd) as target:
            del target[cpu]
    except (BPFError, KeyError, ValueError):
        pass
