"""Every link on the system, as ``LinkInfo`` records that hold no fds (``BPF_LINK_GET_NEXT_ID``)."""

from __future__ import annotations

import errno
from collections.abc import Iterator

from .._sys import commands
from .._sys.constants import Cmd
from ..errors import BPFError
from .info import LinkInfo
from .link import Link


def loaded_links() -> Iterator[LinkInfo]:
    """Every link the kernel holds, in id order; links that go away meanwhile are skipped."""
    for link_id in commands.iter_ids(Cmd.LINK_GET_NEXT_ID, "list links"):
        try:
            with Link.from_id(link_id) as found:
                info = found.info()
        except BPFError as err:
            if err.errno == errno.ENOENT:
                continue
            raise
        yield info
