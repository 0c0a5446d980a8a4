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
import dataclasses
import errno
import os
import platform
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import error_for
from . import rlimit
from .constants import Cmd
from .libc import libc

_NR_BPF = {"x86_64": 321, "aarch64": 280, "arm64": 280, "riscv64": 280, "ppc64le": 361, "s390x": 351, "armv7l": 386}

try:
    NR_BPF = _NR_BPF[platform.machine()]
except KeyError:  # pragma: no cover - depends on the machine
    raise ImportError(f"pybpf: unknown syscall number of bpf(2) on {platform.machine()!r}") from None


@dataclasses.dataclass(frozen=True)
class Door:
    """How ``bpf(2)`` reaches a kernel: ``raw`` as libc's ``syscall``, ``get_errno`` after a failure."""

    raw: Callable[..., int]
    get_errno: Callable[[], int]
    name: str = "kernel"
    raw_held: Callable[..., int] | None = None
    """``raw`` without releasing the GIL, for element operations that cannot sleep (it saves the
    GIL hand-off on every lookup); None: use ``raw``."""


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
