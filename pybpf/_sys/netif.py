"""Network interfaces and sockets as the kernel names them: interface indexes, socket cookies,
and the socket options that attach BPF programs."""

from __future__ import annotations

import socket
import sys

SO_COOKIE = 57
"""``getsockopt``: the socket's cookie, a u64 in native byte order (what socket maps return)."""
SO_ATTACH_BPF = 50
"""``setsockopt``: attach a socket filter program (by fd)."""
SO_DETACH_BPF = 27
"""``setsockopt``: remove the socket filter (same value as ``SO_DETACH_FILTER``)."""
SO_ATTACH_REUSEPORT_EBPF = 52
"""``setsockopt``: run a BPF program to pick the socket of a SO_REUSEPORT group."""
SO_DETACH_REUSEPORT_BPF = 68
"""``setsockopt``: remove the group's program (Linux 5.3+)."""


def interface_index(interface: str | int) -> int:
    """The index of a network interface given by name or index, in the caller's network namespace;
    ValueError naming it if there is none."""
    if isinstance(interface, bool) or not isinstance(interface, str | int):
        raise TypeError(f"interface must be a name or an index, not {interface!r}")
    if isinstance(interface, int):
        if not 0 < interface < 1 << 31:
            raise ValueError(f"interface index must be positive (and fit 31 bits), not {interface}")
        return interface
    try:
        return socket.if_nametoindex(interface)
    except (OSError, ValueError):
        raise ValueError(f"no network interface named {interface!r} (in this network namespace)") from None


def cookie_of(sock: socket.socket) -> int:
    """The kernel's cookie of ``sock`` (``SO_COOKIE``)."""
    return int.from_bytes(sock.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8), sys.byteorder)
