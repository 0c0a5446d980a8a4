"""``Link``: an attachment the kernel keeps for as long as its fd (or a pin) lives."""

from __future__ import annotations

import os
from typing import Any

from .._fd import FdOwner
from .._sys import commands, prog
from .._sys.constants import Cmd
from .info import LinkInfo


def _prog_fd(program: Any) -> int:
    fd = program if isinstance(program, int) and not isinstance(program, bool) else getattr(program, "fd", None)
    if not isinstance(fd, int) or fd < 0:
        raise TypeError(f"expected a Program (or a program fd), not {program!r}")
    return fd


class Link(FdOwner):
    """A BPF link that owns its fd: ``close()`` detaches unless the link is pinned.

    Make one with ``Program.link`` or ``Program.attach_xdp``; open one with ``from_pin``,
    ``from_id`` or ``from_fd``.
    """

    _what = "link"

    def __init__(self, fd: int, name: str = "") -> None:
        """Wrap a link fd this object now owns; ``name`` says what it attaches (for messages)."""
        self._own(fd)
        self.name = name

    @classmethod
    def from_pin(cls, path: str | os.PathLike[str]) -> Link:
        """Open a link pinned in bpffs."""
        return cls(commands.obj_get(os.fspath(path), what="link"), os.fspath(path))

    @classmethod
    def from_id(cls, link_id: int) -> Link:
        """Open the link with kernel id ``link_id``."""
        return cls(commands.fd_by_id(Cmd.LINK_GET_FD_BY_ID, link_id, "open link"), f"link {link_id}")

    @classmethod
    def from_fd(cls, fd: int) -> Link:
        """A ``Link`` for a duplicate of ``fd`` (the caller keeps its own fd)."""
        return cls(os.dup(fd))

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"fd={self._fd}"
        return f"<Link {self.name!r} {state}>"

    @property
    def id(self) -> int:
        """The kernel's id for this link."""
        return self.info().id

    def info(self) -> LinkInfo:
        """What the kernel reports about this link (``BPF_OBJ_GET_INFO_BY_FD``)."""
        return LinkInfo.from_struct(prog.link_info(self.fd, self.name))

    def pin(self, path: str | os.PathLike[str]) -> None:
        """Pin the link at ``path`` in bpffs: the attachment then outlives this fd and process."""
        commands.obj_pin(self.fd, os.fspath(path), what="link")

    def update(self, program: Any, old: Any = None) -> None:
        """Swap in ``program`` atomically (``BPF_LINK_UPDATE``); with ``old``, only if that is current."""
        old_fd = 0 if old is None else _prog_fd(old)
        flags = 0 if old is None else 1 << 2  # BPF_F_REPLACE
        commands.link_update(self.fd, _prog_fd(program), old_fd, flags, self.name)

    def detach(self) -> None:
        """Detach now (``BPF_LINK_DETACH``), even if pinned; the fd stays open until ``close()``."""
        commands.link_detach(self.fd, self.name)
