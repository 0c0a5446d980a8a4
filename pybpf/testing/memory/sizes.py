"""Allocations the machine could never satisfy: the kernel answers ENOMEM (or E2BIG where it checks
a size first); the memory kernel estimates a map's preallocated size and answers the same."""

from __future__ import annotations

import errno
import os

from .objects import Errno


def kernel_mem_check(size: int) -> None:
    """ENOMEM when ``size`` bytes exceed the machine's memory."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return
    if size > total:
        raise Errno(errno.ENOMEM)
