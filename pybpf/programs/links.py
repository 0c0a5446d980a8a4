"""Every link on the system, as ``LinkInfo`` records that hold no fds (``BPF_LINK_GET_NEXT_ID``)."""

from __future__ import annotations

from collections.abc import Iterator

from .._sys import commands
from .._sys.constants import Cmd
from .info import LinkInfo
from .link import Link


def loaded_links() -> Iterator[LinkInfo]:
    """Every link the kernel holds, in id order; links that go away meanwhile are skipped."""
    for fd in commands.each_fd(Cmd.LINK_GET_NEXT_ID, Cmd.LINK_GET_FD_BY_ID, "link"):
        with Link._checked(fd) as found:
            info = found.info()
        yield info
