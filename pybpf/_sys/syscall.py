"""The one door to the kernel for ``bpf(2)``: every command goes through the current ``Door``.

``Door.raw(NR_BPF, cmd, byref(attr), size)`` returns -1 and sets ``errno`` on failure, exactly as
libc's ``syscall``; ``Door.get_errno`` reads it. The kernel's door is the default. A test (or the
in-memory kernel of ``pybpf.testing``) swaps in another with ``use_door``. Hot paths bind the
current door's ``raw`` once per map and thread, so the swap costs them nothing; objects made
before a swap keep the door they were made with.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..errors import error_for
from . import rlimit
from .constants import Cmd
from .libc import libc

if TYPE_CHECKING:
    from .bpffs import PinFiles

_NR_BPF = {"x86_64": 321, "aarch64": 280, "arm64": 280, "riscv64": 280, "ppc64le": 361, "s390x": 351, "armv7l": 386}

try:
    NR_BPF = _NR_BPF[os.uname().machine]  # not platform.machine(): importing platform costs the command's start
except KeyError:  # pragma: no cover - depends on the machine
    raise ImportError(f"pybpf: unknown syscall number of bpf(2) on {os.uname().machine!r}") from None


class Door:
    """How ``bpf(2)`` reaches a kernel: ``raw`` as libc's ``syscall``, ``get_errno`` after a failure.

    The optional fields are for doors whose objects are not the running kernel's (the in-memory
    kernel of ``pybpf.testing``); None means "ask the machine", as for the real kernel.
    """

    __slots__ = ("raw", "get_errno", "name", "raw_held", "bind", "object_kind", "files", "poll")

    def __init__(self, raw: Callable[..., int], get_errno: Callable[[], int], name: str = "kernel", *,
                 raw_held: Callable[..., int] | None = None, bind: Callable[[int], Callable[..., int]] | None = None,
                 object_kind: Callable[[int], str | None] | None = None, files: PinFiles | None = None,
                 poll: Callable[[int], tuple[int, int]] | None = None) -> None:
        self.raw = raw
        self.get_errno = get_errno
        self.name = name
        self.raw_held = raw_held
        """``raw`` without releasing the GIL, for element operations that cannot sleep (it saves
        the GIL hand-off on every lookup); None: use ``raw``."""
        self.bind = bind
        """A ``raw`` for the commands of one map fd (made once per map and thread): lets a door
        that interprets commands in Python resolve the fd once instead of on every call."""
        self.object_kind = object_kind
        """What an fd of this door holds ("map", "program", "link", "BTF"), instead of /proc/self/fd."""
        self.files = files
        """The bpf file system pins live on, instead of the machine's (``pybpf._sys.bpffs``)."""
        self.poll = poll
        """``(fd, epoll events)`` to wait on for a map fd's readiness, instead of ``(fd, EPOLLIN)``
        (epoll cannot watch the in-memory kernel's fds)."""

    def __repr__(self) -> str:
        return f"Door({self.name!r})"


KERNEL = Door(libc.syscall, ctypes.get_errno, raw_held=ctypes.PyDLL(None, use_errno=True).syscall)
"""The running kernel, through libc's ``syscall``."""

_current = KERNEL


def door() -> Door:
    """The door commands go through now."""
    return _current


@contextlib.contextmanager
def use_door(new: Door) -> Iterator[Door]:
    """Send every ``bpf(2)`` command made inside the block (and by objects made inside it) to ``new``."""
    global _current
    previous, _current = _current, new
    try:
        yield new
    finally:
        _current = previous


_CHARGED = frozenset({Cmd.MAP_CREATE, Cmd.PROG_LOAD, Cmd.BTF_LOAD})
"""Commands whose memory is charged to RLIMIT_MEMLOCK before Linux 5.11."""


def _call(cmd: int, attr: ctypes.Structure) -> tuple[int, int]:
    """``(result, errno)`` of one command; an EPERM from a create or load on a kernel that charges
    RLIMIT_MEMLOCK lifts the limit once and retries."""
    gate = _current
    ref, size = ctypes.byref(attr), ctypes.sizeof(attr)
    ret: int = gate.raw(NR_BPF, cmd, ref, size)
    if ret >= 0:
        return ret, 0
    code = gate.get_errno()
    if code == errno.EPERM and cmd in _CHARGED and gate is KERNEL and rlimit.lift():
        ret = gate.raw(NR_BPF, cmd, ref, size)
        if ret >= 0:
            return ret, 0
        code = gate.get_errno()
    return -1, code


def bpf(cmd: int, attr: ctypes.Structure, op: str, name: str = "") -> int:
    """Run one ``bpf(2)`` command; return its result or raise the typed error for its errno."""
    ret, code = _call(cmd, attr)
    if ret < 0:
        raise error_for(code, op, name)
    return ret


def bpf_errno(cmd: int, attr: ctypes.Structure) -> int:
    """Run one ``bpf(2)`` command; return its result, or ``-errno`` (callers map it themselves)."""
    ret, code = _call(cmd, attr)
    return -code if ret < 0 else ret


def close_fd(fd: int) -> None:
    """Close an fd we own, ignoring EBADF from a double close on the error path."""
    try:
        os.close(fd)
    except OSError:
        pass


def attr_of(ref: Any) -> ctypes.Structure:
    """The attr struct behind a ``byref`` argument (for doors that interpret commands in Python)."""
    obj: ctypes.Structure = ref._obj
    return obj
