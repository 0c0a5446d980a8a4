"""``FdOwner``: the one way a live object owns a kernel fd (maps, programs, links, BTF), and
``fd_of``: the one way to find the fd behind an object a caller hands us.

When other threads may be using the fd (``_used_elsewhere``), closing keeps the fd *number*
reserved until the object itself is gone: ``close()`` atomically points the number at /dev/null
(``dup2``), which releases the kernel object at once, while an operation racing ``close()`` in
another thread reaches /dev/null and fails, and never a new object that happened to get the same
number. The number is released when the object is garbage-collected. Used from one thread only,
``close()`` closes the fd outright.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any, ClassVar, Self

_placeholder_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
_placeholder_lock = threading.Lock()


def _placeholder() -> int:
    """An fd of /dev/null kept for the process: what closed objects' fd numbers point at."""
    global _placeholder_fd
    with _placeholder_lock:
        if not _alive(_placeholder_fd):  # closed behind our back (a daemon closing every fd)
            _placeholder_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        return _placeholder_fd


def _alive(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _release(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


class FdOwner:
    """Owns one fd: ``fd`` (ValueError once closed), ``closed``, idempotent ``close()``, a context
    manager, and a finalizer that closes the fd if the object is dropped unclosed."""

    _what: ClassVar[str] = "object"
    """How errors name the object: "operation on a closed map"."""

    _fd: int
    _finalizer: weakref.finalize[Any, Any]
    _retired: bool

    def _own(self, fd: int) -> None:
        """Take ownership of ``fd``."""
        self._fd = fd
        self._retired = False
        self._finalizer = weakref.finalize(self, _release, fd)

    @property
    def fd(self) -> int:
        """The file descriptor (owned by this object); ValueError once closed."""
        if self._retired or not self._finalizer.alive:
            raise ValueError(f"operation on a closed {self._what}")
        return self._fd

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
        return self._retired or not self._finalizer.alive

    def close(self) -> None:
        """Release the kernel object now (the fd number stays reserved until this object is gone).
        Idempotent."""
        if self._retired or not self._finalizer.alive:
            return
        self._retired = True
        if not self._used_elsewhere():
            self._finalizer()
            return
        try:
            os.dup2(_placeholder(), self._fd, inheritable=False)
        except OSError:
            self._finalizer()  # the number is gone already (closed behind our back): forget it

    def _used_elsewhere(self) -> bool:
        """Whether another thread may be in a call on this fd right now (then ``close`` keeps the
        number reserved). Objects that know their threads say so; the default is no."""
        return False

    def closed_error(self) -> ValueError:
        """The error for any use after ``close()``."""
        return ValueError(f"operation on a closed {self._what}")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def fd_of(obj: Any, what: str) -> int:
    """The fd behind ``obj``: an ``int``, an object with ``.fd`` (Map, Program, Link) or one with
    ``fileno()`` (a socket); TypeError or ValueError naming ``what`` otherwise."""
    if isinstance(obj, bool) or obj is None:
        raise TypeError(f"{what} must be an object with an fd, or an fd, not {obj!r}")
    if isinstance(obj, int):
        fd = obj
    elif hasattr(obj, "fd"):
        fd = obj.fd
    elif hasattr(obj, "fileno"):
        fd = obj.fileno()
    else:
        raise TypeError(f"{what} must be an object with an fd, or an fd, not {type(obj).__name__}")
    if not isinstance(fd, int) or not 0 <= fd < 1 << 31:
        raise ValueError(f"{what} {obj!r} has no open fd (closed?)")
    return fd
