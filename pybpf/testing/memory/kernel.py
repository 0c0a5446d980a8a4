"""``MemoryKernel``: the objects, ids, fds and pins of an in-memory kernel, and ``memory_kernel()``,
under which pybpf's maps live in it instead of the running kernel.

Lifetimes follow the kernel's: an object lives while a file descriptor refers to it or something
holds it (a pin, a slot of a map of maps or program array); then its id disappears and what it
held is released. The memory kernel cannot see ``close(2)``, so it finds dead objects by looking
at the process's fds (``/proc/self/fd``) when it matters: before listing ids, before opening by
id, and from time to time on creation.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import sys
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from ..._sys.syscall import Door, use_door
from .bpffs import VirtualBpffs
from .door import Commands
from .fds import Description, Descriptions
from .hashmaps import template_of
from .maps import MemMap
from .objects import Errno, MemObject
from .programs import MemProgram, StandIn
from .releases import version_of
from .ringbuf import RingBufMap
from .sockets import SocketRegistry

_KINDS = ("map", "program", "BTF", "link")


class MemoryKernel:
    """An in-memory kernel for pybpf's maps: give its ``door`` to ``pybpf._sys.syscall.use_door``
    (``memory_kernel()`` does).

    ``bpffs``: where its virtual bpf file systems are mounted. ``programs``: Python stand-ins for
    programs, by name (see ``pybpf.testing.memory.programs``). ``release``: the kernel release,
    (major, minor) or (major, minor, patch), whose behaviour to follow where releases differ
    (default: the running kernel's; see ``releases.py``).
    """

    def __init__(self, *, bpffs: tuple[str, ...] = ("/sys/fs/bpf",), programs: Mapping[str, StandIn] | None = None,
                 release: tuple[int, ...] | None = None) -> None:
        self.version = version_of(release)
        """(major, minor, patch) whose behaviour to follow (``releases.py``)."""
        self.lock = threading.Lock()
        self.fds = Descriptions()
        self.fs = VirtualBpffs(self, bpffs)
        self.sockets = SocketRegistry()
        self.programs: dict[str, StandIn] = dict(programs or {})
        """Stand-ins for programs, by the name they are loaded under; add more at any time."""
        self.objects: dict[str, dict[int, MemObject]] = {kind: {} for kind in _KINDS}
        """Live objects by kind and id."""
        self._next_id = dict.fromkeys(_KINDS, 1)
        self._created_since_sweep = 0
        self._sweep_at = 64
        self.closed = False
        self.commands = Commands(self)
        self.door = Door(self.commands.raw, self.commands.get_errno, "memory", bind=self.commands.bind,
                         object_kind=self.object_kind, files=self.fs, poll=self.poll)
        """The door pybpf's calls go through."""

    # ---- objects ------------------------------------------------------------------------------

    def adopt(self, obj: MemObject, readable: bool = True, writable: bool = True) -> int:
        """Give a new object its id and first fd."""
        fd = self.fds.create(obj, readable, writable)
        table = self.objects[obj.kind]
        obj.id = self._next_id[obj.kind]
        self._next_id[obj.kind] = obj.id % 0x7FFFFFFE + 1
        table[obj.id] = obj
        self._created_since_sweep += 1
        if self._created_since_sweep >= self._sweep_at:
            self.sweep(keep=obj)
        return fd

    def open(self, obj: MemObject, readable: bool = True, writable: bool = True) -> int:
        """A new fd (a new description) of a live object, as ``*_GET_FD_BY_ID`` and ``OBJ_GET`` make."""
        if obj.storage_fd >= 0:
            return self.fds.reopen(obj.storage_fd, obj, readable, writable)
        inodes, _ = self.fds.scan(self._storage_fds())
        source = inodes.get(obj.inode)
        if source is not None:
            return self.fds.reopen(source, obj, readable, writable)
        return self.fds.create(obj, readable, writable)  # held only by pins or maps: a new memfd

    def resolve(self, fd: int, kind: str | None = None) -> Description:
        """The description behind ``fd``; EINVAL when it holds another kind of object."""
        desc = self.fds.resolve(fd)
        if kind is not None and desc.obj.kind != kind:
            raise Errno(errno.EINVAL)
        return desc

    def hold(self, obj: MemObject) -> None:
        """Something other than an fd now refers to ``obj`` (a pin, a map slot)."""
        obj.holds += 1

    def release(self, obj: MemObject) -> None:
        """Drop one hold; an object nobody holds and no fd refers to dies."""
        obj.holds -= 1
        if obj.holds <= 0 and obj.id in self.objects[obj.kind]:
            inodes, _ = self.fds.scan(self._storage_fds())
            if obj.inode not in inodes:
                self._die(obj)

    def _die(self, obj: MemObject) -> None:
        if self.objects[obj.kind].pop(obj.id, None) is None:
            return
        for held in obj.released():
            self.release(held)

    def _storage_fds(self) -> list[int]:
        return [obj.storage_fd for table in self.objects.values() for obj in table.values() if obj.storage_fd >= 0]

    def sweep(self, keep: MemObject | None = None) -> None:
        """Forget the objects no fd refers to and nothing holds (their fds were closed)."""
        inodes, tokens = self.fds.scan(self._storage_fds())
        for table in self.objects.values():
            for obj in list(table.values()):
                if obj is not keep and obj.holds <= 0 and obj.inode not in inodes:
                    self._die(obj)
        live = {id(obj) for table in self.objects.values() for obj in table.values()}
        self.fds.forget(tokens, live)
        self._created_since_sweep = 0
        self._sweep_at = max(64, 2 * sum(len(t) for t in self.objects.values()))

    def by_id(self, kind: str, obj_id: int) -> MemObject:
        """The live object of ``kind`` with ``obj_id``: ENOENT otherwise."""
        obj = self.objects[kind].get(obj_id)
        if obj is None:
            raise Errno(errno.ENOENT)
        if obj.holds <= 0:
            inodes, _ = self.fds.scan(self._storage_fds())
            if obj.inode not in inodes:
                self._die(obj)
                raise Errno(errno.ENOENT)
        return obj

    def object_kind(self, fd: int) -> str | None:
        """What an fd holds, for ``pybpf._sys.commands.object_kind``: this kernel's objects by their
        token, anything else as /proc/self/fd names it."""
        try:
            return self.fds.resolve(fd).obj.kind
        except Errno:
            pass
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return None
        return {"anon_inode:bpf-map": "map", "anon_inode:bpf-prog": "program"}.get(link)

    def poll(self, fd: int) -> tuple[int, int]:
        """What a reader waits on for a map fd: a ring buffer's eventfd, edge-triggered (one wake-up
        per record produced); any other fd as it is."""
        try:
            obj = self.fds.resolve(fd).obj
        except Errno:
            return fd, select.EPOLLIN
        if isinstance(obj, RingBufMap):
            return obj.event_fd, select.EPOLLIN | select.EPOLLET
        return fd, select.EPOLLIN

    # ---- helpers for the map types -------------------------------------------------------------

    def inner_map(self, template: tuple[Any, ...], value: bytes) -> MemMap:
        """``bpf_map_fd_get_ptr``: the map whose fd is in ``value``, if it matches the template."""
        fd = int.from_bytes(value[:4], sys.byteorder)
        inner = self.resolve(fd, "map").obj
        assert isinstance(inner, MemMap)
        if template_of(inner)[:4] != template[:4] or (template[4] is not None and inner.max_entries != template[4]):
            raise Errno(errno.EINVAL)
        return inner

    def program_of(self, fd: int) -> MemProgram:
        """``bpf_prog_get``: the program behind ``fd``."""
        program = self.resolve(fd, "program").obj
        assert isinstance(program, MemProgram)
        return program

    # ---- for tests ----------------------------------------------------------------------------

    def ringbuf_output(self, bpf_map: Any, data: bytes, *, discard: bool = False) -> bool:
        """Put a record in a RINGBUF map, as a program's ``bpf_ringbuf_output`` would (``discard``:
        a record reserved then discarded, which readers skip). False when the ring is full."""
        fd = bpf_map if isinstance(bpf_map, int) else bpf_map.fd
        with self.lock:
            ring = self.resolve(fd, "map").obj
            if not isinstance(ring, RingBufMap):
                raise TypeError(f"ringbuf_output: map {getattr(bpf_map, 'name', fd)!r} is not a RINGBUF")
            return ring.output(bytes(data), discard)

    def maps(self) -> list[MemMap]:
        """The live maps (after a sweep)."""
        self.sweep()
        return [obj for obj in self.objects["map"].values() if isinstance(obj, MemMap)]

    def close(self) -> None:
        """End this kernel: its pins go, its ids are forgotten. Maps the test still holds keep their
        contents and keep answering (through the objects they are bound to), as plain memfds."""
        if self.closed:
            return
        self.closed = True
        self.fs.entries.clear()
        for table in self.objects.values():
            for obj in table.values():
                if obj.storage_fd >= 0:  # our mapping keeps the memory; the fd was ours
                    os.close(obj.storage_fd)
                    obj.storage_fd = -1
                if isinstance(obj, RingBufMap) and obj.event_fd >= 0:
                    os.close(obj.event_fd)
                    obj.event_fd = -1
            table.clear()


@contextlib.contextmanager
def memory_kernel(*, bpffs: tuple[str, ...] = ("/sys/fs/bpf",), programs: Mapping[str, StandIn] | None = None,
                  release: tuple[int, ...] | None = None) -> Iterator[MemoryKernel]:
    """Run the block against a fresh in-memory kernel: maps created, opened, pinned and listed in it
    behave as the kernel's, without privileges. Programs need Python stand-ins (``programs``)."""
    kernel = MemoryKernel(bpffs=bpffs, programs=programs, release=release)
    try:
        with use_door(kernel.door):
            yield kernel
    finally:
        kernel.close()
