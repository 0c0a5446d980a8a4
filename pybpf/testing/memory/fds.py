"""The memory kernel's fds: real file descriptors, so ``close``, ``dup``, ``fork`` and ``mmap``
behave as with the kernel's.

Each object is a memfd (its inode is the object's identity). Each open file description (a
create, an ``OBJ_GET``, a ``*_GET_FD_BY_ID``: what the kernel's ``anon_inode_getfd`` makes) carries
a token in its file position, naming the object and the access mode it was opened with; ``dup``
shares the description and so the token, as the kernel's dup shares the file. Resolving an fd is
one ``lseek``. A description of another file (a socket, /dev/null) has no token: EINVAL, and a
closed fd is EBADF, as from the kernel.
"""

from __future__ import annotations

import errno
import os
import random
from typing import TYPE_CHECKING

from .objects import Errno, MemObject

if TYPE_CHECKING:
    from collections.abc import Iterable

_TOKEN_BASE = 0x5EB << 48
"""Tokens live far past any real file's position (and below the 2**63 limit of lseek)."""
_MFD_CLOEXEC, _MFD_ALLOW_SEALING = 0x0001, 0x0002


class Description:
    """One open file description of an object: what it may do (the kernel's ``f_mode``)."""

    __slots__ = ("obj", "readable", "writable", "token")

    def __init__(self, obj: MemObject, readable: bool, writable: bool, token: int) -> None:
        self.obj = obj
        self.readable = readable
        self.writable = writable
        self.token = token


class Descriptions:
    """Every description the memory kernel handed out, by token."""

    def __init__(self) -> None:
        self.by_token: dict[int, Description] = {}
        self._next = _TOKEN_BASE + random.randrange(1 << 32) * 4096
        self.dev = -1
        """``st_dev`` of memfds: how a scan of /proc/self/fd tells them from other files."""

    def _tag(self, fd: int, obj: MemObject, readable: bool, writable: bool) -> int:
        token = self._next
        self._next += 1
        os.lseek(fd, token, os.SEEK_SET)
        self.by_token[token] = Description(obj, readable, writable, token)
        return fd

    @staticmethod
    def _open_flags(readable: bool, writable: bool) -> int:
        mode = os.O_RDWR if readable and writable else os.O_WRONLY if writable else os.O_RDONLY
        return mode | os.O_CLOEXEC

    def create(self, obj: MemObject, readable: bool = True, writable: bool = True) -> int:
        """A new memfd for ``obj`` (its identity from now on) and a description of it."""
        fd = os.memfd_create(f"pybpf-{obj.kind}", _MFD_CLOEXEC | _MFD_ALLOW_SEALING)
        st = os.fstat(fd)
        self.dev = st.st_dev
        obj.inode = st.st_ino
        if readable and writable:
            return self._tag(fd, obj, readable, writable)
        try:
            return self.reopen(fd, obj, readable, writable)
        finally:
            os.close(fd)

    def reopen(self, source_fd: int, obj: MemObject, readable: bool, writable: bool) -> int:
        """A new description of the object behind ``source_fd`` (a memfd of ``obj``)."""
        fd = os.open(f"/proc/self/fd/{source_fd}", self._open_flags(readable, writable))
        return self._tag(fd, obj, readable, writable)

    def resolve(self, fd: int) -> Description:
        """The description behind an fd: EBADF when closed, EINVAL when not the memory kernel's."""
        if not 0 <= fd <= 0x7FFFFFFF:
            raise Errno(errno.EBADF)
        try:
            token = os.lseek(fd, 0, os.SEEK_CUR)
        except OSError as err:
            raise Errno(errno.EBADF if err.errno == errno.EBADF else errno.EINVAL) from None
        desc = self.by_token.get(token)
        if desc is None:
            raise Errno(errno.EINVAL)
        return desc

    def scan(self, skip: Iterable[int] = ()) -> tuple[dict[int, int], set[int]]:
        """The memfds this process has open: {inode: an fd of it} and the tokens in use. ``skip``:
        fds of the kernel's own (storage of mmapable maps) that keep nothing alive."""
        inodes: dict[int, int] = {}
        tokens: set[int] = set()
        skipped = set(skip)
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if fd in skipped:
                continue
            try:
                st = os.stat(f"/proc/self/fd/{fd}")
                if st.st_dev != self.dev:
                    continue
                tokens.add(os.lseek(fd, 0, os.SEEK_CUR))
            except OSError:
                continue
            inodes.setdefault(st.st_ino, fd)
        return inodes, tokens

    def forget(self, live_tokens: set[int], live: set[int]) -> None:
        """Drop descriptions no fd has any more, and those of dead objects (ids in ``live``)."""
        for token in [t for t, d in self.by_token.items() if t not in live_tokens or id(d.obj) not in live]:
            del self.by_token[token]
