"""The C library, loaded once: the calls Python's standard library does not expose
(``syscall``, ``bind`` of an unknown address family, ``setns``, ``capget``, ...)."""

from __future__ import annotations

import ctypes
import os

libc = ctypes.CDLL(None, use_errno=True)
"""libc with ``errno`` kept per thread (read it with ``ctypes.get_errno``)."""


def os_error(what: str = "") -> OSError:
    """An ``OSError`` for the ``errno`` the last libc call left (``what`` names the call)."""
    code = ctypes.get_errno()
    return OSError(code, f"{what}: {os.strerror(code)}" if what else os.strerror(code))


CLONE_NEWNET = 0x40000000


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    """Move the calling thread into the namespace ``fd`` refers to (``setns(2)``)."""
    if libc.setns(fd, nstype) != 0:
        raise os_error("setns")
