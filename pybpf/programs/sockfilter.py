"""Socket filters: a SOCKET_FILTER program on one socket (``SO_ATTACH_BPF``), removed with
``SO_DETACH_BPF``. No link: the filter lives as long as the socket."""

from __future__ import annotations

import errno
import socket
from typing import Any

from .._sys.constants import ProgramType
from .._sys.netif import SO_ATTACH_BPF, SO_DETACH_BPF
from ..errors import BPFError
from . import refusal
from .attach import _with_socket

SO_LOCK_FILTER = 44
"""``getsockopt``: whether the socket's filter is locked against changes."""


def _locked(sock: socket.socket) -> bool:
    try:
        return bool(sock.getsockopt(socket.SOL_SOCKET, SO_LOCK_FILTER))
    except OSError:
        return False


def attach_socket(prog: Any, sock: socket.socket | int) -> None:
    """Filter what ``sock`` receives with ``prog`` (a SOCKET_FILTER program), replacing any filter."""
    def attach(s: socket.socket) -> None:
        where = f"attach {prog.name or 'program'!r} to a socket as its filter"
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_BPF, prog.fd)
        except OSError as err:
            code = err.errno or errno.EINVAL
            if code == errno.EINVAL and prog.type != ProgramType.SOCKET_FILTER:
                raise refusal.known(code, where, f"a socket takes SOCKET_FILTER programs, not {refusal.type_name(prog.type)}") from None
            if code == errno.EPERM and _locked(s):
                raise refusal.known(code, where, "the socket's filter is locked (SO_LOCK_FILTER)") from None
            if code == errno.ENOMEM:
                raise refusal.known(code, where, "the filter does not fit in the socket's option memory (net.core.optmem_max)") from None
            raise refusal.generic(code, where) from None
    _with_socket(sock, attach)


def detach_socket(sock: socket.socket | int) -> None:
    """Remove the filter of ``sock`` (``SO_DETACH_BPF``)."""
    def detach(s: socket.socket) -> None:
        where = "detach the socket's filter"
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_DETACH_BPF, 0)
        except OSError as err:
            code = err.errno or errno.EINVAL
            if code == errno.ENOENT:
                raise refusal.known(code, where, "the socket has no filter") from None
            if code == errno.EPERM and _locked(s):
                raise refusal.known(code, where, "the socket's filter is locked (SO_LOCK_FILTER)") from None
            raise refusal.generic(code, where) from None
    _with_socket(sock, detach)
