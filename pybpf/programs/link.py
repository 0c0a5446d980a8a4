"""``Link``: an attachment the kernel keeps for as long as its fd (or a pin) lives."""

from __future__ import annotations

import os
from typing import Any

from .._fd import FdOwner, fd_of
from .._sys import commands, prog
from .._sys.constants import Cmd
from .info import LinkInfo

BPF_F_REPLACE = 1 << 2
"""``BPF_LINK_UPDATE`` flag: replace only if ``old_prog_fd`` is the current program."""


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
        return cls._checked(commands.obj_get(os.fspath(path), what="link"), os.fspath(path))

    @classmethod
    def from_id(cls, link_id: int) -> Link:
        """Open the link with kernel id ``link_id``."""
        return cls._checked(commands.fd_by_id(Cmd.LINK_GET_FD_BY_ID, link_id, "open link"), f"link {link_id}")

    @classmethod
    def from_fd(cls, fd: int) -> Link:
        """A ``Link`` for a duplicate of ``fd`` (the caller keeps its own fd)."""
        return cls._checked(os.dup(fd_of(fd, "fd")))

    @classmethod
    def _checked(cls, fd: int, name: str = "") -> Link:
        """A ``Link`` owning ``fd`` once the kernel confirms it is a link (TypeError otherwise)."""
        kind = commands.object_kind(fd)
        if kind != "link":
            os.close(fd)
            raise TypeError(f"{name or 'fd'} holds {'a ' + kind if kind else 'no BPF object'}, not a link")
        return cls(fd, name)

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
        old_fd = 0 if old is None else fd_of(old, "old")
        flags = 0 if old is None else BPF_F_REPLACE
        commands.link_update(self.fd, fd_of(program, "program"), old_fd, flags, self.name)

    def detach(self) -> None:
        """Detach now (``BPF_LINK_DETACH``), even if pinned; the fd stays open until ``close()``."""
        commands.link_detach(self.fd, self.name)
