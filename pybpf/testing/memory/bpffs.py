"""A virtual bpf file system: pins of the memory kernel, in memory, mounted at ``/sys/fs/bpf`` (or
where the test says). Nothing touches the machine's bpffs.

pybpf's pin checks (``pybpf._sys.bpffs``: no symlinks, directories owned by the caller or root,
not writable by others unless sticky) run against it through ``lstat``; ``BPF_OBJ_PIN`` and
``BPF_OBJ_GET`` resolve paths here with the kernel's errnos (ENOENT, EEXIST, ENOTDIR, EPERM off
bpffs, EACCES for what is not a pin). A test removes pins with ``unlink``/``rmtree`` here: code
under test that calls ``os.unlink`` on a pin path reaches the machine's file system instead.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .objects import Errno, MemObject

if TYPE_CHECKING:
    from .kernel import MemoryKernel


class _Entry:
    __slots__ = ("mode", "uid", "gid", "obj", "ino", "mtime")

    def __init__(self, mode: int, uid: int, gid: int, obj: MemObject | None, ino: int) -> None:
        self.mode, self.uid, self.gid, self.obj, self.ino = mode, uid, gid, obj, ino
        self.mtime = time.time()


class VirtualBpffs:
    """Directories and pins under the mount points, by absolute path."""

    def __init__(self, kernel: MemoryKernel, mounts: tuple[str, ...] = ("/sys/fs/bpf",)) -> None:
        self.kernel = kernel
        self.mounts = tuple(os.path.normpath(os.path.abspath(m)) for m in mounts)
        self.entries: dict[str, _Entry] = {}
        self._ino = 1000
        for mount in self.mounts:
            self.entries[mount] = self._new(stat.S_IFDIR | 0o1777, uid=0, gid=0)

    def _new(self, mode: int, uid: int | None = None, gid: int | None = None, obj: MemObject | None = None) -> _Entry:
        self._ino += 1
        return _Entry(mode, os.geteuid() if uid is None else uid, os.getegid() if gid is None else gid, obj, self._ino)

    @staticmethod
    def _norm(path: str | os.PathLike[str]) -> str:
        return os.path.normpath(os.path.abspath(os.fsdecode(os.fspath(path))))

    def _mount_of(self, path: str) -> str | None:
        for mount in self.mounts:
            if path == mount or path.startswith(mount.rstrip("/") + "/"):
                return mount
        return None

    def _above_mount(self, path: str) -> bool:
        return any(m.startswith(path.rstrip("/") + "/") for m in self.mounts)

    def _walk(self, path: str) -> _Entry:
        """The entry at ``path`` inside a mount: FileNotFoundError, NotADirectoryError on the way."""
        mount = self._mount_of(path)
        assert mount is not None
        current = mount
        for part in path[len(mount):].strip("/").split("/") if path != mount else []:
            entry = self.entries[current]
            if not stat.S_ISDIR(entry.mode):
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), current)
            current = current.rstrip("/") + "/" + part
            if current not in self.entries:
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), current)
        return self.entries[current]

    # ---- what pybpf's checks call (``PinFiles``) -------------------------------------------------

    def lstat(self, path: str) -> os.stat_result:
        """``os.lstat`` inside the mounts; the machine's above them (a missing ancestor of a mount
        point reads as a root-owned directory)."""
        text = self._norm(path)
        if self._mount_of(text) is None:
            try:
                return os.lstat(text)
            except FileNotFoundError:
                if not self._above_mount(text):
                    raise
                return os.stat_result((stat.S_IFDIR | 0o755, 0, 0, 2, 0, 0, 0, 0, 0, 0))
        entry = self._walk(text)
        size = 0
        return os.stat_result((entry.mode, entry.ino, 0xB7F, 1, entry.uid, entry.gid, size,
                               int(entry.mtime), int(entry.mtime), int(entry.mtime)))

    def mkdir(self, path: str, mode: int = 0o777) -> None:
        """``os.mkdir`` with exactly ``mode`` (pybpf then sets it exactly anyway)."""
        text = self._norm(path)
        if self._mount_of(text) is None:
            os.mkdir(text, mode)
            return
        if text in self.entries:
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), text)
        parent = self._walk(os.path.dirname(text))
        if not stat.S_ISDIR(parent.mode):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), text)
        self.entries[text] = self._new(stat.S_IFDIR | (mode & 0o7777))

    def is_bpffs(self, path: str) -> bool:
        return self._mount_of(self._norm(path)) is not None

    # ---- the kernel's side: BPF_OBJ_PIN and BPF_OBJ_GET -----------------------------------------

    def pin(self, path: str, obj: MemObject) -> None:
        """``bpf_obj_do_pin``: a new name in an existing bpffs directory."""
        text = self._norm(path)
        parent_path = os.path.dirname(text)
        if self._mount_of(parent_path) is None:
            if not os.path.isdir(parent_path):
                raise Errno(errno.ENOENT if not os.path.lexists(parent_path) else errno.ENOTDIR)
            raise Errno(errno.EPERM)
        try:
            parent = self._walk(parent_path)
        except FileNotFoundError:
            raise Errno(errno.ENOENT) from None
        except NotADirectoryError:
            raise Errno(errno.ENOTDIR) from None
        if not stat.S_ISDIR(parent.mode):
            raise Errno(errno.ENOTDIR)
        if text in self.entries:
            raise Errno(errno.EEXIST)
        self.kernel.hold(obj)
        self.entries[text] = self._new(stat.S_IFREG | (0o600 & ~_umask()), obj=obj)

    def get(self, path: str) -> MemObject:
        """``bpf_obj_do_get``: the object pinned at ``path``."""
        text = self._norm(path)
        if self._mount_of(text) is None:
            raise Errno(errno.ENOENT if not os.path.lexists(text) else errno.EACCES)
        try:
            entry = self._walk(text)
        except FileNotFoundError:
            raise Errno(errno.ENOENT) from None
        except NotADirectoryError:
            raise Errno(errno.ENOTDIR) from None
        if entry.obj is None:
            raise Errno(errno.EACCES)
        return entry.obj

    # ---- for tests: what ``os`` would do on a real bpffs ----------------------------------------

    def exists(self, path: str | os.PathLike[str]) -> bool:
        """Whether ``path`` is a pin or directory here."""
        try:
            self._walk(self._norm(path))
        except (OSError, AssertionError):
            return False
        return True

    def listdir(self, path: str | os.PathLike[str]) -> list[str]:
        """Names in a directory, as ``os.listdir``."""
        text = self._norm(path)
        entry = self._walk(text)
        if not stat.S_ISDIR(entry.mode):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), text)
        prefix = text.rstrip("/") + "/"
        return sorted(p[len(prefix):] for p in self.entries if p.startswith(prefix) and "/" not in p[len(prefix):])

    def unlink(self, path: str | os.PathLike[str]) -> None:
        """Remove a pin (the object goes when nothing else holds it), as ``os.unlink``."""
        text = self._norm(path)
        entry = self._walk(text)
        if stat.S_ISDIR(entry.mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), text)
        del self.entries[text]
        if entry.obj is not None:
            self.kernel.release(entry.obj)

    def rmdir(self, path: str | os.PathLike[str]) -> None:
        """Remove an empty directory, as ``os.rmdir``."""
        text = self._norm(path)
        if text in self.mounts:
            raise PermissionError(errno.EBUSY, "a mount point cannot be removed", text)
        if self.listdir(text):
            raise OSError(errno.ENOTEMPTY, os.strerror(errno.ENOTEMPTY), text)
        del self.entries[text]

    def rmtree(self, path: str | os.PathLike[str]) -> None:
        """Remove a directory and everything pinned under it."""
        text = self._norm(path)
        for name in self.listdir(text):
            child = text.rstrip("/") + "/" + name
            if stat.S_ISDIR(self.entries[child].mode):
                self.rmtree(child)
            else:
                self.unlink(child)
        if text not in self.mounts:
            self.rmdir(text)

    def walk(self) -> Iterator[tuple[str, MemObject]]:
        """Every pin: (path, object)."""
        for path, entry in list(self.entries.items()):
            if entry.obj is not None:
                yield path, entry.obj


def _umask() -> int:
    """The process's umask, read without changing it (``os.umask`` would, for every thread)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022
