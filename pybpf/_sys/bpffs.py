"""bpffs paths, treated as hostile: bpffs is world-writable (mode 1777, sticky), so any user can
plant a name there before us.

The rules, applied to every pin pybpf opens or makes:
- a path never contains NUL (the kernel would read it truncated);
- no component is a symlink (the pin itself is opened with ``O_PATH | O_NOFOLLOW`` and handed to
  the kernel as ``/proc/self/fd/N``, so it cannot be swapped between the check and the open);
- every directory on the way is owned by the caller or root, and is not writable by others
  unless sticky (a sticky directory lets nobody else rename or delete what we own in it);
- directories pybpf creates are 0700 unless the caller asks for another mode, whatever the umask.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
from collections.abc import Iterator

from .libc import libc

BPF_FS_MAGIC = 0xCAFE4A11
"""``statfs().f_type`` of bpffs."""


class UnsafePathError(PermissionError):
    """A pin path that another user could redirect (a symlink, or a directory others control)."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(errno.EPERM, f"refusing pin path {path!r}: {why}")


def check_text(path: str | os.PathLike[str], what: str = "pin path") -> str:
    """``path`` as an absolute ``str``; ValueError for an empty path or one containing NUL."""
    text = os.fsdecode(os.fspath(path))
    if not text or "\0" in text:
        raise ValueError(f"{what} {text!r} is empty or contains a NUL byte")
    return os.path.abspath(text)


def is_bpffs(path: str) -> bool:
    """Whether ``path`` (or its nearest existing ancestor) is on a bpf file system."""
    buf = ctypes.create_string_buffer(256)  # struct statfs: f_type is the first word
    probe = path
    while libc.statfs(os.fsencode(probe), buf) != 0:
        parent = os.path.dirname(probe)
        if parent == probe:
            return False
        probe = parent
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF == BPF_FS_MAGIC


def _trusted_owner(st: os.stat_result) -> bool:
    return st.st_uid in (0, os.geteuid())


def check_dirs(path: str) -> None:
    """Refuse ``path``'s directories (all but the last component) if another user could redirect them."""
    parts = path.split("/")[1:-1]
    current = ""
    for part in parts:
        current += "/" + part
        st = os.lstat(current)
        if stat.S_ISLNK(st.st_mode):
            raise UnsafePathError(path, f"{current} is a symlink")
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, f"{current} is not a directory")
        if not _trusted_owner(st):
            raise UnsafePathError(path, f"{current} belongs to uid {st.st_uid}, not to this user or root")
        if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
            raise UnsafePathError(path, f"{current} is writable by others and not sticky")


@contextlib.contextmanager
def opened(path: str | os.PathLike[str], *, owned: bool = False) -> Iterator[str]:
    """A name for the pin at ``path`` that the kernel resolves to exactly the file checked here.

    The pin is opened with ``O_PATH | O_NOFOLLOW``; a symlink is refused. With ``owned``, a pin
    that belongs to another user (not root) is refused too (for reusing pins by name).
    """
    text = check_text(path)
    check_dirs(text)
    try:
        fd = os.open(text, os.O_PATH | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, f"no pin at {text}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISLNK(st.st_mode):
            raise UnsafePathError(text, "it is a symlink")
        if owned and not _trusted_owner(st):
            raise UnsafePathError(text, f"it belongs to uid {st.st_uid}, not to this user or root")
        proc = f"/proc/self/fd/{fd}"
        yield proc if os.path.exists(proc) else text
    finally:
        os.close(fd)


def check_new(path: str | os.PathLike[str]) -> str:
    """``path`` checked as the place of a new pin: its directories are safe (the kernel refuses an
    existing name, symlink or not)."""
    text = check_text(path)
    check_dirs(text)
    return text


def make_dir(path: str | os.PathLike[str], mode: int = 0o700) -> str:
    """Create directory ``path`` (and missing parents) with exactly ``mode``, or check the existing
    one: a real directory, owned by this user or root, not writable by others unless sticky."""
    text = check_text(path, "pin directory")
    if not os.path.lexists(text):
        parent = os.path.dirname(text)
        if parent != text and not os.path.lexists(parent):
            make_dir(parent, mode)
        check_dirs(text)
        try:
            os.mkdir(text, mode)
            fd = os.open(text, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            try:
                os.fchmod(fd, mode)  # exactly ``mode``, whatever the umask
            finally:
                os.close(fd)
        except FileExistsError:
            pass  # made meanwhile: checked below like any existing directory
    check_dirs(text + "/")
    return text
