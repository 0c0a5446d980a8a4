"""pidfds: a handle on another process, and ``pidfd_getfd`` to duplicate one of its fds
(Linux 5.6+; needs ptrace access to the process, e.g. CAP_SYS_PTRACE or the same user)."""

from __future__ import annotations

import ctypes
import os
import platform

from .libc import libc, os_error

_NR_PIDFD_GETFD = {"x86_64": 438, "aarch64": 438, "arm64": 438, "riscv64": 438, "ppc64le": 438, "s390x": 438}


def pidfd_open(pid: int) -> int:
    """A pidfd for process ``pid`` (``ProcessLookupError`` if there is none)."""
    return os.pidfd_open(pid)


def pidfd_getfd(pidfd: int, target_fd: int) -> int:
    """A new fd in this process for fd ``target_fd`` of the process behind ``pidfd``."""
    number = _NR_PIDFD_GETFD.get(platform.machine())
    if number is None:  # pragma: no cover - depends on the machine
        raise OSError(38, f"pidfd_getfd: unknown syscall number on {platform.machine()}")
    fd = libc.syscall(number, ctypes.c_int(pidfd), ctypes.c_int(target_fd), ctypes.c_uint(0))
    if fd < 0:
        raise os_error("pidfd_getfd")
    return int(fd)
