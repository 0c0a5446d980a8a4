"""Maps whose values are file descriptors: maps of maps, program arrays and socket maps.

Updates take the object (a ``Map``, a ``Program``, a ``socket.socket``) or its fd; lookups
return what the kernel gives back: an id for maps and programs, the cookie for sockets.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import stat
import sys
from typing import Any, ClassVar

from .._fd import fd_of
from .._sys.constants import MapType
from .._sys.netif import cookie_of
from ..errors import ENOTSUPP, BPFError, KeyNotFoundError, error_for
from .map import Map
from .spec import MapSpec


class _FdValueMap(Map):
    """A map whose values are written as fds (4 bytes) and read back as ids or cookies."""

    value_what: ClassVar[str] = "value"

    def _put_value(self, buf: bytearray, value: Any) -> None:
        fd = self._value_fd(value)
        buf[: self.value_size] = fd.to_bytes(self.value_size, sys.byteorder)

    def _value_fd(self, value: Any) -> int:
        return fd_of(value, self.value_what)

    @classmethod
    def create(cls, max_entries: int | MapSpec | None = None, **fields: Any) -> Map:  # type: ignore[override]
        """Create with the kernel's sizes as defaults (``SockMap.create(64)``); a ``MapSpec`` is
        accepted too."""
        if isinstance(max_entries, MapSpec):
            return super().create(max_entries, **fields)
        if max_entries is not None:
            fields["max_entries"] = max_entries
        return super().create(None, **fields)


class MapOfMaps(_FdValueMap):
    """ARRAY_OF_MAPS / HASH_OF_MAPS: values are maps (a ``Map`` or map fd); lookup gives the inner map id."""

    map_types = (MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS)
    value_what = "inner map"

    def __init__(self, fd: int, spec: MapSpec, *, readonly: bool = False) -> None:
        super().__init__(fd, spec.copy(value=ctypes.c_uint32, value_size=4), readonly=readonly)


class ProgramArray(_FdValueMap):
    """PROG_ARRAY (tail calls): values are programs (a ``Program`` or prog fd); lookup gives the program id."""

    map_types = (MapType.PROG_ARRAY,)
    value_what = "program"

    @classmethod
    def _defaults(cls) -> dict[str, Any]:
        return {"type": MapType.PROG_ARRAY, "key_size": 4, "value_size": 4}

    def __init__(self, fd: int, spec: MapSpec, *, readonly: bool = False) -> None:
        super().__init__(fd, spec.copy(value=ctypes.c_uint32, value_size=4), readonly=readonly)


def _is_socket_fd(fd: int) -> bool:
    try:
        return stat.S_ISSOCK(os.fstat(fd).st_mode)
    except OSError:
        return False


class _SocketMap(_FdValueMap):
    """Common ground of the socket maps: sockets in, cookies (value size 8) out."""

    value_what = "socket"
    _key_size: ClassVar[int] = 4

    def __init__(self, fd: int, spec: MapSpec, *, readonly: bool = False) -> None:
        value = ctypes.c_uint64 if spec.value_size == 8 else ctypes.c_uint32
        super().__init__(fd, spec.copy(value=value), readonly=readonly)

    @classmethod
    def _defaults(cls) -> dict[str, Any]:
        return {"type": cls.map_types[0], "key_size": cls._key_size, "value_size": 8}

    def _value_fd(self, value: Any) -> int:
        fd = fd_of(value, "socket")
        if not _is_socket_fd(fd):
            raise TypeError(f"{type(self).__name__} values must be sockets; fd {fd} is not a socket")
        return fd

    def lookup(self, key: Any) -> Any:
        """The socket cookie at ``key`` (as ``getsockopt(SO_COOKIE)`` gives it)."""
        if self.value_size != 8:
            raise ValueError(f"{type(self).__name__} lookups return 8-byte cookies: create it with value_size=8, not {self.value_size}")
        return super().lookup(key)

    _refusals: ClassVar[dict[int, str]] = {}

    def _error(self, op: str, code: int, key: Any = None) -> BPFError | ValueError:
        if self.closed:
            return self.closed_error()
        where = f"{op} on {type(self).__name__}" + (f" {self.name!r}" if self.name else "")
        if op == "update" and code in self._refusals:
            return error_for(code, where, message=self._refusals[code], hint="")
        if op == "update" and code == errno.EOPNOTSUPP:
            return error_for(code, where, message="the kernel refuses this socket here (its type or state is not supported, e.g. a TCP socket neither established nor listening, or an unbound UDP socket)")
        if op == "update" and code == errno.EBUSY:
            return error_for(code, where, message="the socket already inherits a conflicting parser/verdict program "
                             "from another map, or it is in a REUSEPORT_SOCKARRAY")
        if op == "delete" and code == errno.EINVAL and self.type in (MapType.SOCKMAP, MapType.REUSEPORT_SOCKARRAY):
            return KeyNotFoundError(code, where, message=f"slot {key!r} is empty")
        return super()._error(op, code, key)


class SockMap(_SocketMap):
    """SOCKMAP: an array of sockets (key 4 bytes: the index) for sk_msg/sk_skb redirection."""

    map_types = (MapType.SOCKMAP,)


class SockHash(_SocketMap):
    """SOCKHASH: sockets under keys of any size (4 by default) for sk_msg/sk_skb redirection."""

    map_types = (MapType.SOCKHASH,)


class ReuseportSockArray(_SocketMap):
    """REUSEPORT_SOCKARRAY: SO_REUSEPORT sockets of one group, selected by sk_reuseport programs."""

    map_types = (MapType.REUSEPORT_SOCKARRAY,)
    _refusals: ClassVar[dict[int, str]] = {
        errno.EINVAL: "the socket needs SO_REUSEPORT and must be a listening TCP or a bound UDP socket",
        errno.EBUSY: "the socket is already in a REUSEPORT_SOCKARRAY (this one or another) or in a SOCKMAP/SOCKHASH",
        ENOTSUPP: "only TCP and UDP sockets over IPv4/IPv6 can join a REUSEPORT_SOCKARRAY",
    }


def socket_cookie(sock: socket.socket | int) -> int:
    """The kernel's cookie of a socket (``SO_COOKIE``): what socket maps return on lookup."""
    if isinstance(sock, socket.socket):
        return cookie_of(sock)
    fd = fd_of(sock, "sock")
    if not _is_socket_fd(fd):
        raise TypeError(f"socket_cookie: fd {fd} is not a socket")
    with socket.socket(fileno=os.dup(fd)) as dup:
        return cookie_of(dup)
