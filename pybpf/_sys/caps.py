"""The process's capabilities (``capget``): error hints name a missing capability only when it is
really missing, and say what else refuses when it is not."""

from __future__ import annotations

import ctypes

from .libc import libc

CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21
CAP_SYS_RESOURCE = 24
CAP_PERFMON = 38
CAP_BPF = 39

_VERSION_3 = 0x20080522


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def effective() -> int:
    """The calling thread's effective capability set as a bit mask (0 if ``capget`` fails)."""
    header, data = _Header(_VERSION_3, 0), (_Data * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        return 0
    return int(data[0].effective) | int(data[1].effective) << 32


def has(cap: int) -> bool:
    """Whether the calling thread has capability ``cap`` in its effective set."""
    return bool(effective() >> cap & 1)


def can_bpf() -> bool:
    """Whether the process may use ``bpf(2)`` fully: CAP_BPF or CAP_SYS_ADMIN."""
    mask = effective()
    return bool(mask >> CAP_BPF & 1 or mask >> CAP_SYS_ADMIN & 1)


def names(mask: int | None = None) -> list[str]:
    """The names of the BPF-relevant capabilities in ``mask`` (default: the effective set)."""
    mask = effective() if mask is None else mask
    known = {CAP_BPF: "CAP_BPF", CAP_PERFMON: "CAP_PERFMON", CAP_NET_ADMIN: "CAP_NET_ADMIN", CAP_SYS_ADMIN: "CAP_SYS_ADMIN"}
    return [name for cap, name in sorted(known.items()) if mask >> cap & 1]
