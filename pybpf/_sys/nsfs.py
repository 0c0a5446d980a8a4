"""Namespace files (nsfs): what kind of namespace an fd refers to."""

from __future__ import annotations

import fcntl

NS_GET_NSTYPE = 0xB703
"""``ioctl`` on a namespace fd: its ``CLONE_NEW*`` type (Linux 4.11+)."""
CLONE_NEWNET = 0x40000000


def is_netns(fd: int) -> bool:
    """Whether ``fd`` is a network namespace (a ``/proc/PID/ns/net`` file or a bind mount of one)."""
    try:
        return fcntl.ioctl(fd, NS_GET_NSTYPE) == CLONE_NEWNET
    except OSError:
        return False
