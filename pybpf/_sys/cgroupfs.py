"""cgroup v2 from user space: where it is mounted, whether an fd is a cgroup v2 directory, its id."""

from __future__ import annotations

import ctypes
import os

from .libc import libc

CGROUP2_SUPER_MAGIC = 0x63677270
"""``f_type`` of a cgroup v2 file system (``statfs``)."""

class _Statfs(ctypes.Structure):
    """``struct statfs`` (64-bit layout); only ``f_type`` is read."""

    _fields_ = [("f_type", ctypes.c_long), ("_rest", ctypes.c_long * 15)]


def fs_type(fd: int) -> int:
    """``f_type`` of the file system holding ``fd`` (``fstatfs``)."""
    buf = _Statfs()
    if libc.fstatfs(fd, ctypes.byref(buf)) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"fstatfs: {os.strerror(code)}")
    return int(buf.f_type) & 0xFFFFFFFF


def is_cgroup2(fd: int) -> bool:
    """Whether ``fd`` is on a cgroup v2 file system."""
    return fs_type(fd) == CGROUP2_SUPER_MAGIC


def cgroup2_mounts(mounts: str = "/proc/mounts") -> list[str]:
    """Mount points of cgroup v2 file systems, in the order of ``/proc/mounts``."""
    found = []
    with open(mounts) as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 3 and fields[2] == "cgroup2":
                found.append(fields[1].replace("\\040", " "))
    return found


def cgroup2_root() -> str:
    """The first cgroup v2 mount point; ``FileNotFoundError`` when cgroup v2 is not mounted."""
    mounts = cgroup2_mounts()
    if not mounts:
        raise FileNotFoundError("cgroup v2 is not mounted (no cgroup2 line in /proc/mounts)")
    return mounts[0]


def cgroup_id(fd: int) -> int:
    """The kernel's id of the cgroup directory ``fd``: its inode number on cgroup v2."""
    return os.fstat(fd).st_ino
