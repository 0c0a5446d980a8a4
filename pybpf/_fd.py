"""``FdOwner``: the one way a live object owns a kernel fd (maps, programs, links, BTF)."""

from __future__ import annotations

import os
import weakref
from typing import ClassVar, Self


class FdOwner:
    """Owns one fd: ``fd`` (ValueError once closed), ``closed``, idempotent ``close()``, a context
    manager, and a finalizer that closes the fd if the object is dropped unclosed."""

    _what: ClassVar[str] = "object"
    """How errors name the object: "operation on a closed map"."""

    def _own(self, fd: int) -> None:
        """Take ownership of ``fd``."""
        self._fd = fd
        self._finalizer = weakref.finalize(self, os.close, fd)

    @property
    def fd(self) -> int:
        """The file descriptor (owned by this object); ValueError once closed."""
        if self._finalizer.alive:
            return self._fd
        raise ValueError(f"operation on a closed {self._what}")

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
        return not self._finalizer.alive

    def close(self) -> None:
        """Close the fd. Idempotent."""
        self._finalizer()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
