"""``LegacyLink``: an attachment made without a kernel link (``BPF_PROG_ATTACH``, a tc filter over
rtnetlink), held as a ``Link`` that detaches on close but cannot be pinned."""

from __future__ import annotations

import errno
import os
import weakref
from collections.abc import Callable
from typing import Any

from .._sys import commands
from .._sys.constants import LinkType
from ..errors import BPFError, NotSupportedError
from .info import LinkInfo
from .link import Link
from .refusal import known


def _undo(detach: Callable[[], None], kept: list[Any], state: dict[str, bool]) -> None:
    """Detach (unless done already), then close what the attachment kept (fds, or objects with
    ``close()``)."""
    try:
        if not state["detached"]:
            state["detached"] = True
            detach()
    except (BPFError, OSError):
        pass  # the target went away (cgroup removed, interface deleted): nothing left to undo
    finally:
        for item in kept:
            try:
                if isinstance(item, int):
                    os.close(item)
                else:
                    item.close()
            except OSError:
                pass


class LegacyLink(Link):
    """A ``Link`` for an attachment the kernel holds without a link object.

    ``close()`` (or garbage collection) detaches; ``pin()`` raises ``NotSupportedError`` saying
    why (``reason``); ``info()`` reports id 0 and the program's id. Unlike a kernel link the
    attachment survives the process if it dies before ``close()`` (SIGKILL).
    """

    def __init__(self, prog_fd: int, detach: Callable[[], None], name: str, reason: str,
                 keep: tuple[Any, ...] = (), attach_type: int | None = None) -> None:
        """Own ``prog_fd`` (a dup of the program's fd) and what is in ``keep`` (fds, or objects
        with ``close()``); ``detach`` undoes the attachment and must not refer to this object."""
        self._fd = prog_fd
        self._retired = False
        self._state = {"detached": False}
        self._detach_fn = detach
        self._finalizer = weakref.finalize(self, _undo, detach, [prog_fd, *keep], self._state)
        self.name = name
        self.reason = reason
        self.attach_type = attach_type

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("detached" if self._state["detached"] else "attached")
        return f"<LegacyLink {self.name!r} {state}>"

    @property
    def id(self) -> int:
        """0: the kernel has no link object for this attachment."""
        return 0

    def info(self) -> LinkInfo:
        """Id 0, type UNSPEC, and the attached program's id."""
        return LinkInfo(id=0, type=LinkType.UNSPEC, prog_id=commands.prog_info(self.fd).id,
                        attach_type=self.attach_type)

    def pin(self, path: str | os.PathLike[str]) -> None:
        """Always ``NotSupportedError``: there is no kernel link to pin."""
        raise known(errno.EOPNOTSUPP, f"pin link at {os.fspath(path)!r}", f"cannot pin {self.name}: {self.reason}",
                    NotSupportedError)

    def update(self, program: Any, old: Any = None) -> None:
        """Not available without a kernel link: detach and attach again instead."""
        raise known(errno.EOPNOTSUPP, f"update link {self.name!r}", f"cannot update in place: {self.reason}",
                    NotSupportedError)

    def detach(self) -> None:
        """Detach now; the fds stay open until ``close()``."""
        if self.closed:
            raise ValueError("operation on a closed link")
        if not self._state["detached"]:
            self._state["detached"] = True
            self._detach_fn()
