"""The one door to the kernel: ``bpf(2)`` through libc's ``syscall`` via ctypes.

``raw`` is the bare ctypes function (returns -1 and sets errno); hot paths call it with
prebuilt attrs. ``bpf`` is the checked form that raises a typed ``BPFError``.
"""

from __future__ import annotations

import ctypes
import os
import platform

from ..errors import error_for

_NR_BPF = {"x86_64": 321, "aarch64": 280, "arm64": 280, "riscv64": 280, "ppc64le": 361, "s390x": 351, "armv7l": 386}

try:
    NR_BPF = _NR_BPF[platform.machine()]
except KeyError:  # pragma: no cover - depends on the machine
    raise ImportError(f"pybpf: unknown syscall number of bpf(2) on {platform.machine()!r}") from None

_libc = ctypes.CDLL(None, use_errno=True)
raw = _libc.syscall
"""``raw(NR_BPF, cmd, byref(attr), size) -> int``: -1 with ``get_errno()`` set on failure."""

get_errno = ctypes.get_errno


def bpf(cmd: int, attr: ctypes.Structure, op: str, name: str = "") -> int:
    """Run one ``bpf(2)`` command; return its result or raise the typed error for its errno."""
    ret = raw(NR_BPF, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if ret < 0:
        raise error_for(get_errno(), op, name)
    return ret


def bpf_errno(cmd: int, attr: ctypes.Structure) -> int:
    """Run one ``bpf(2)`` command; return its result, or ``-errno`` (callers map it themselves)."""
    ret = raw(NR_BPF, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    return -get_errno() if ret < 0 else ret


def close_fd(fd: int) -> None:
    """Close an fd we own, ignoring EBADF from a double close on the error path."""
    try:
        os.close(fd)
    except OSError:
        pass

