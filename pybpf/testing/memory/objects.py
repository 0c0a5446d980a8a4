"""What the memory kernel's fds point at: maps, programs, BTF blobs, each with a kernel id, and the
errno every refusal carries.

An object lives while an fd refers to it or something else holds it (a pin, a slot of another
map): ``holds`` counts the latter, exactly as the kernel's reference counts do.
"""

from __future__ import annotations

import errno
from typing import Any, ClassVar

from ...errors import NotSupportedError

ENOTSUPP = 524
"""The kernel-internal "not supported" errno that reaches user space from some map operations."""


class Errno(Exception):
    """A refusal with the kernel's errno: the door turns it into ``-1`` and ``errno``."""

    __slots__ = ("code",)

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class NotInMemoryKernelError(NotSupportedError):
    """What the memory kernel cannot do (run programs, attach them, some map types): a clear
    ``NotSupportedError`` instead of an errno that would read as a kernel limitation."""

    def __init__(self, op: str, what: str, hint: str = "") -> None:
        self.reason = f"{what} not in the memory kernel (pybpf.testing)"
        super().__init__(errno.EOPNOTSUPP, op, message=self.reason, hint=hint or "run this test on the real kernel")


class MemObject:
    """A BPF object of the memory kernel."""

    kind: ClassVar[str] = "object"
    """How ``/proc/self/fd`` would name it: "map", "program", "BTF", "link"."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.id = 0
        self.inode = 0
        """The inode of the memfd behind every fd of this object: its identity."""
        self.holds = 0
        """References that are not fds: pins, slots of maps of maps, program arrays."""
        self.storage_fd = -1
        """The kernel's own fd of the memfd when the object's memory lives in it (mmapable arrays):
        it keeps the memory, not the object, alive."""

    def released(self) -> list[MemObject]:
        """Called once when the object dies: the objects it held (their holds are dropped)."""
        return []

    def info(self) -> dict[str, Any]:
        """Fields of the object's info struct (``BPF_OBJ_GET_INFO_BY_FD``)."""
        return {"id": self.id}
