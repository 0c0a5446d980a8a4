"""SOCKMAP, SOCKHASH (``net/core/sock_map.c``) and REUSEPORT_SOCKARRAY (``reuseport_array.c``) as
user space sees them: real sockets go in (by fd, checked as the kernel checks them), their cookies
(``SO_COOKIE``) come out, and a socket leaves every map when its last fd is closed or its TCP
connection is closed, as the kernel's ``sock_map_close``/``unhash`` do.

What no program can do here: redirect traffic. Which sockets are taken is what the kernel says
(measured on 6.18): TCP when established or listening, UDP once bound, Unix stream sockets when
connected, Unix datagram sockets always; others are EOPNOTSUPP. A socket in a
REUSEPORT_SOCKARRAY cannot join another one or a SOCKMAP/SOCKHASH (EBUSY), nor the reverse.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import stat
import struct
import sys
from typing import TYPE_CHECKING, Any, ClassVar

from ..._sys.constants import MapFlags, MapType
from ..._sys.libc import libc
from .arrays import array_check, array_next_key, index_of
from .hashmaps import HashMap
from .maps import EXIST, NOEXIST, CreateRequest, MemMap, register
from .objects import ENOTSUPP, Errno, MemObject
from .releases import UNIX_SOCKETS_IN_SOCKMAP

if TYPE_CHECKING:
    from .kernel import MemoryKernel

_SOL_SOCKET, _SO_TYPE, _SO_REUSEPORT, _SO_PROTOCOL, _SO_DOMAIN, _SO_COOKIE = 1, 3, 15, 38, 39, 57
_SOL_TCP, _TCP_INFO = 6, 11
_TCP_ESTABLISHED, _TCP_CLOSE, _TCP_LISTEN = 1, 7, 10
_FLAGS = int(MapFlags.NUMA_NODE | MapFlags.RDONLY | MapFlags.WRONLY)
"""``SOCK_CREATE_FLAG_MASK``."""
EINVAL, ENOENT, EEXIST, E2BIG, EBUSY = errno.EINVAL, errno.ENOENT, errno.EEXIST, errno.E2BIG, errno.EBUSY


def _sockopt(fd: int, level: int, name: int, size: int = 4) -> bytes | None:
    buf = ctypes.create_string_buffer(size)
    length = ctypes.c_uint32(size)
    if libc.getsockopt(fd, level, name, buf, ctypes.byref(length)) != 0:
        return None
    return buf.raw[: length.value]


def _int_opt(fd: int, level: int, name: int) -> int:
    raw = _sockopt(fd, level, name)
    return int.from_bytes(raw, sys.byteorder, signed=True) if raw else -1


class Sock:
    """A socket held by a socket map: its inode (identity), cookie and an fd that reached it."""

    __slots__ = ("inode", "cookie", "fd", "family", "type", "protocol")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.inode = os.fstat(fd).st_ino
        cookie = _sockopt(fd, _SOL_SOCKET, _SO_COOKIE, 8)
        self.cookie = int.from_bytes(cookie, sys.byteorder) if cookie else 0
        self.family = _int_opt(fd, _SOL_SOCKET, _SO_DOMAIN)
        self.type = _int_opt(fd, _SOL_SOCKET, _SO_TYPE)
        self.protocol = _int_opt(fd, _SOL_SOCKET, _SO_PROTOCOL)

    def alive(self) -> bool:
        """The socket still exists: some fd of this process refers to it, and a TCP socket has not
        closed (the kernel unhashes it then and drops it from socket maps)."""
        if not self._points_here(self.fd):
            for name in os.listdir("/proc/self/fd"):
                if self._points_here(int(name)):
                    self.fd = int(name)
                    break
            else:
                return False
        if self.protocol == socket.IPPROTO_TCP and self.family in (socket.AF_INET, socket.AF_INET6):
            info = _sockopt(self.fd, _SOL_TCP, _TCP_INFO, 8)
            if info and info[0] == _TCP_CLOSE and not _listening(self.fd):
                return False
        return True

    def _points_here(self, fd: int) -> bool:
        try:
            return os.readlink(f"/proc/self/fd/{fd}") == f"socket:[{self.inode}]"
        except OSError:
            return False


def _listening(fd: int) -> bool:
    return _int_opt(fd, _SOL_SOCKET, 30) == 1  # SO_ACCEPTCONN


def socket_from(value: bytes, value_size: int) -> Sock:
    """``sockfd_lookup`` of the fd in a socket map value: EINVAL past INT_MAX, EBADF, ENOTSOCK."""
    ufd = int.from_bytes(value[:value_size], sys.byteorder)
    if ufd > 0x7FFFFFFF:
        raise Errno(EINVAL)
    try:
        st = os.fstat(ufd)
    except OSError:
        raise Errno(errno.EBADF) from None
    if not stat.S_ISSOCK(st.st_mode):
        raise Errno(errno.ENOTSOCK)
    return Sock(ufd)


def _suitable(sock: Sock, version: tuple[int, int, int]) -> bool:
    """``sock_map_sk_is_suitable`` and ``sock_map_sk_state_allowed``, as measured on 6.18."""
    fd = sock.fd
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        if sock.protocol == socket.IPPROTO_TCP:
            info = _sockopt(fd, _SOL_TCP, _TCP_INFO, 8)
            return info is not None and len(info) > 0 and info[0] in (_TCP_ESTABLISHED, _TCP_LISTEN)
        if sock.protocol == socket.IPPROTO_UDP:
            return _bound_port(fd) != 0
        return False
    if sock.family == socket.AF_UNIX:
        if not UNIX_SOCKETS_IN_SOCKMAP.in_release(version):
            return False
        if sock.type == socket.SOCK_STREAM:
            return _connected(fd)
        return sock.type == socket.SOCK_DGRAM
    return False


def _bound_port(fd: int) -> int:
    buf = ctypes.create_string_buffer(128)
    length = ctypes.c_uint32(128)
    if libc.getsockname(fd, buf, ctypes.byref(length)) != 0:
        return 0
    return int(struct.unpack_from("!H", buf.raw, 2)[0])


def _connected(fd: int) -> bool:
    buf = ctypes.create_string_buffer(128)
    length = ctypes.c_uint32(128)
    return bool(libc.getpeername(fd, buf, ctypes.byref(length)) == 0)


class _SocketMapBase(MemMap):
    """What the socket maps share: sockets in, cookies out, and membership for EBUSY."""

    def _cookie(self, sock: Sock | None) -> bytes:
        if self.value_size != 8:
            raise Errno(errno.ENOSPC)
        if sock is None:
            raise Errno(ENOENT)
        return sock.cookie.to_bytes(8, sys.byteorder)

    def _sweep(self) -> None:
        """Drop the sockets that are gone (closed), as the kernel does when they close."""


class _SocketArray(_SocketMapBase):
    """What SOCKMAP and REUSEPORT_SOCKARRAY share: sockets in indexed slots."""

    def __init__(self, req: CreateRequest, kernel: MemoryKernel) -> None:
        super().__init__(req, kernel)
        self.slots: dict[int, Sock] = {}

    def _sweep(self) -> None:
        for index, sock in list(self.slots.items()):
            if not sock.alive():
                del self.slots[index]
                self.kernel.sockets.leave(sock, self)

    def lookup(self, key: bytes | None, flags: int = 0) -> bytes:
        assert key is not None
        self._sweep()
        if self.value_size != 8:
            raise Errno(errno.ENOSPC)
        index = index_of(key)
        return self._cookie(self.slots.get(index) if index < self.max_entries else None)

    def next_key(self, key: bytes | None) -> bytes:
        return array_next_key(key, self.max_entries)

    def released(self) -> list[MemObject]:
        for sock in self.slots.values():
            self.kernel.sockets.leave(sock, self)
        self.slots.clear()
        return super().released()


@register
class SockMap(_SocketArray):
    """SOCKMAP: an array of sockets."""

    types = (MapType.SOCKMAP,)

    @classmethod
    def check(cls, req: CreateRequest) -> None:
        if req.max_entries == 0 or req.key_size != 4 or req.value_size not in (4, 8) or req.flags & ~_FLAGS:
            raise Errno(EINVAL)

    def update(self, key: bytes | None, value: bytes, flags: int) -> None:
        assert key is not None
        sock = socket_from(value, self.value_size)
        if not _suitable(sock, self.kernel.version):
            raise Errno(errno.EOPNOTSUPP)
        if flags > EXIST:
            raise Errno(EINVAL)
        index = index_of(key)
        if index >= self.max_entries:
            raise Errno(E2BIG)
        self._sweep()
        self.kernel.sockets.check_join(sock, reuseport=False)
        old = self.slots.get(index)
        if old is not None and flags == NOEXIST:
            raise Errno(EEXIST)
        if old is None and flags == EXIST:
            raise Errno(ENOENT)
        self.slots[index] = sock
        self.kernel.sockets.join(sock, self)
        if old is not None:
            self.kernel.sockets.leave(old, self)

    def delete(self, key: bytes | None) -> None:
        assert key is not None
        self._sweep()
        index = index_of(key)
        old = self.slots.pop(index, None) if index < self.max_entries else None
        if old is None:
            raise Errno(EINVAL)
        self.kernel.sockets.leave(old, self)



@register
class SockHash(HashMap):
    """SOCKHASH: sockets under keys of any size, in insertion order."""

    types: ClassVar[tuple[MapType, ...]] = (MapType.SOCKHASH,)
    batch_commands = frozenset()

    @classmethod
    def check(cls, req: CreateRequest) -> None:
        if req.max_entries == 0 or req.key_size == 0 or req.value_size not in (4, 8) or req.flags & ~_FLAGS:
            raise Errno(EINVAL)
        if req.key_size > 512:
            raise Errno(E2BIG)

    def _value_in(self) -> int:
        return self.value_size

    def _sweep(self) -> None:
        for key, sock in list(self.data.items()):
            if not sock.alive():
                self._remove(key)
                self.kernel.sockets.leave(sock, self)

    def lookup(self, key: bytes | None, flags: int = 0) -> bytes:
        assert key is not None
        self._sweep()
        if self.value_size != 8:
            raise Errno(errno.ENOSPC)
        sock = self.data.get(key)
        if sock is None:
            raise Errno(ENOENT)
        return bytes(sock.cookie.to_bytes(8, sys.byteorder))

    def update(self, key: bytes | None, value: bytes, flags: int) -> None:
        assert key is not None
        sock = socket_from(value, self.value_size)
        if not _suitable(sock, self.kernel.version):
            raise Errno(errno.EOPNOTSUPP)
        if flags > EXIST:
            raise Errno(EINVAL)
        self._sweep()
        self.kernel.sockets.check_join(sock, reuseport=False)
        self._put(key, sock, flags)

    def _keep(self, stored: Any) -> None:
        self.kernel.sockets.join(stored, self)

    def _drop(self, stored: Any) -> None:
        self.kernel.sockets.leave(stored, self)

    def delete(self, key: bytes | None) -> None:
        self._sweep()
        super().delete(key)

    def next_key(self, key: bytes | None) -> bytes:
        self._sweep()
        return super().next_key(key)

    def lookup_and_delete(self, key: bytes | None, flags: int) -> bytes:
        raise Errno(ENOTSUPP)

    def released(self) -> list[MemObject]:
        for sock in self.data.values():
            self.kernel.sockets.leave(sock, self)
        self.data.clear()
        return MemMap.released(self)

    def fast_ops(self, key_view: Any, value_view: Any, lock: Any) -> None:
        return None


@register
class ReuseportSockArray(_SocketArray):
    """REUSEPORT_SOCKARRAY: SO_REUSEPORT sockets (listening TCP, bound UDP) of one group."""

    types = (MapType.REUSEPORT_SOCKARRAY,)

    @classmethod
    def check(cls, req: CreateRequest) -> None:
        if req.value_size not in (4, 8):
            raise Errno(EINVAL)
        array_check(req)

    def update(self, key: bytes | None, value: bytes, flags: int) -> None:
        assert key is not None
        if flags > EXIST:
            raise Errno(EINVAL)
        index = index_of(key)
        if index >= self.max_entries:
            raise Errno(E2BIG)
        sock = socket_from(value, self.value_size)
        self._sweep()
        old = self.slots.get(index)  # reuseport_array_update_check, in its order
        if old is not None and flags == NOEXIST:
            raise Errno(EEXIST)
        if old is None and flags == EXIST:
            raise Errno(ENOENT)
        if (sock.protocol not in (socket.IPPROTO_TCP, socket.IPPROTO_UDP)
                or sock.family not in (socket.AF_INET, socket.AF_INET6)
                or sock.type not in (socket.SOCK_STREAM, socket.SOCK_DGRAM)):
            raise Errno(ENOTSUPP)
        hashed = _listening(sock.fd) if sock.protocol == socket.IPPROTO_TCP else _bound_port(sock.fd) != 0
        if not hashed or _int_opt(sock.fd, _SOL_SOCKET, _SO_REUSEPORT) != 1:
            raise Errno(EINVAL)
        self.kernel.sockets.check_join(sock, reuseport=True)
        self.slots[index] = sock
        self.kernel.sockets.join(sock, self)
        if old is not None:
            self.kernel.sockets.leave(old, self)

    def delete(self, key: bytes | None) -> None:
        assert key is not None
        self._sweep()
        index = index_of(key)
        if index >= self.max_entries:
            raise Errno(E2BIG)
        old = self.slots.pop(index, None)
        if old is None:
            raise Errno(ENOENT)
        self.kernel.sockets.leave(old, self)



class SocketRegistry:
    """Which maps hold each socket (by inode): a socket in a REUSEPORT_SOCKARRAY has its user data
    taken, so it can join no other socket map, and a socket in a SOCKMAP/SOCKHASH has a psock,
    so it cannot join a REUSEPORT_SOCKARRAY (EBUSY both ways)."""

    def __init__(self) -> None:
        self.members: dict[int, dict[int, int]] = {}
        """socket inode -> {id(map): number of slots}"""
        self.reuseport: dict[int, int] = {}
        """socket inode -> id(REUSEPORT_SOCKARRAY) holding it."""

    def check_join(self, sock: Sock, *, reuseport: bool) -> None:
        if sock.inode in self.reuseport:
            raise Errno(EBUSY)
        if reuseport and self.members.get(sock.inode):
            raise Errno(EBUSY)

    def join(self, sock: Sock, owner: MemMap) -> None:
        if isinstance(owner, ReuseportSockArray):
            self.reuseport[sock.inode] = id(owner)
            return
        counts = self.members.setdefault(sock.inode, {})
        counts[id(owner)] = counts.get(id(owner), 0) + 1

    def leave(self, sock: Sock, owner: MemMap) -> None:
        if isinstance(owner, ReuseportSockArray):
            if self.reuseport.get(sock.inode) == id(owner):
                del self.reuseport[sock.inode]
            return
        counts = self.members.get(sock.inode)
        if not counts or id(owner) not in counts:
            return
        counts[id(owner)] -= 1
        if counts[id(owner)] <= 0:
            del counts[id(owner)]
        if not counts:
            del self.members[sock.inode]
