"""The calling thread's capabilities (``capget(2)``), so error hints say "needs CAP_X" only when
the process lacks it."""

from __future__ import annotations

import ctypes
import platform

from .syscall import _libc

CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39

_VERSION_3 = 0x20080522
_NR_CAPGET = {"x86_64": 125, "aarch64": 90, "arm64": 90, "riscv64": 90, "ppc64le": 183, "s390x": 184, "armv7l": 184}


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def effective_capabilities() -> int | None:
    """The effective capability set as a bit mask, or None if ``capget`` is unavailable."""
    number = _NR_CAPGET.get(platform.machine())
    if number is None:  # pragma: no cover - depends on the machine
        return None
    header = _Header(_VERSION_3, 0)
    data = (_Data * 2)()
    if _libc.syscall(number, ctypes.byref(header), ctypes.byref(data)) != 0:
        return None
    return data[0].effective | data[1].effective << 32


def has_capability(cap: int) -> bool:
    """Whether the calling thread has capability ``cap`` in its effective set."""
    mask = effective_capabilities()
    return mask is not None and bool(mask >> cap & 1)
