"""Attaching programs: to socket maps (``BPF_PROG_ATTACH`` or a link), to an interface (XDP link),
to a SO_REUSEPORT group (``setsockopt``), and the kernel's rules turned into clear errors."""

from __future__ import annotations

import enum
import errno
import os
import socket
from typing import Any

from .. import features
from .._fd import fd_of
from .._sys import commands
from .._sys.constants import AttachType, MapType, ProgramType, member
from .._sys.netif import SO_ATTACH_REUSEPORT_EBPF, SO_DETACH_REUSEPORT_BPF, interface_index
from .._sys.traits import ATTACH_TYPES, program_type_name
from ..errors import BPFError, NotSupportedError, error_for
from .link import Link

MAP_ATTACH_TYPES: dict[AttachType, ProgramType] = {
    kind: traits.program_types[0] for kind, traits in ATTACH_TYPES.items()
    if traits.target == "map" and kind != AttachType.STRUCT_OPS
}
"""The attach points of a SOCKMAP/SOCKHASH and the program type each takes."""

_SOCKET_MAPS = (MapType.SOCKMAP, MapType.SOCKHASH)


class XdpMode(enum.IntFlag):
    """How an XDP program runs (``XDP_FLAGS_*_MODE``); none set lets the kernel pick driver mode if it can."""

    AUTO = 0
    SKB = 1 << 1
    DRV = 1 << 2
    HW = 1 << 3


def _map_type(fd: int) -> int | None:
    try:
        return int(commands.map_info(fd).type)
    except BPFError:
        return None


def _explain_map_error(prog: Any, fd: int, attach_type: AttachType, err: BPFError, op: str) -> BPFError:
    """Turn an errno from attaching to a socket map into the kernel's rule, in words."""
    where = f"{op} {prog.name or 'program'!r} as {attach_type.name}"
    code = err.errno
    expected = MAP_ATTACH_TYPES.get(attach_type)
    if code in (errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF) and _map_type(fd) not in _SOCKET_MAPS:
        return error_for(code, where, message="the target must be a SOCKMAP or SOCKHASH map")
    if code == errno.EINVAL:
        if expected is not None and prog.type != expected:
            got = program_type_name(prog.type)
            return BPFError(code, where, message=f"{attach_type.name} takes {expected.name} programs, not {got}")
        if expected is None:
            names = ", ".join(t.name for t in MAP_ATTACH_TYPES)
            return BPFError(code, where, message=f"a socket map takes the attach types {names}")
        lacking = features.lacking("sockmap_link") if op == "link" else None
        if lacking is not None:
            return NotSupportedError(code, where, message=f"{lacking}; use attach()")
        lacking = features.lacking(f"sockmap_attach:{attach_type.name}")
        if lacking is not None:
            return NotSupportedError(code, where, message=lacking)
    if code == errno.EBUSY:
        other = ATTACH_TYPES[attach_type].exclusive_with
        if other is not None and _attached(fd, other):
            return BPFError(code, where, message=f"the map already has a {other.name} program: "
                            f"{attach_type.name} and {other.name} exclude each other on one map")
        return BPFError(code, where, message=f"a link already holds {attach_type.name} on this map")
    if code == errno.ENOENT and op == "detach":
        return BPFError(code, where, message=f"this program is not attached as {attach_type.name} to the map")
    return error_for(code, where)


def _attached(fd: int, attach_type: AttachType) -> bool:
    try:
        return bool(commands.prog_query(fd, attach_type)[1])
    except BPFError:
        return False


def _attach_type(value: Any) -> AttachType:
    return member(AttachType, value, "attach_type")


def attach_map(prog: Any, target: Any, attach_type: AttachType | int, flags: int = 0) -> None:
    """``BPF_PROG_ATTACH`` of ``prog`` to a socket map at ``attach_type``."""
    kind, fd = _attach_type(attach_type), fd_of(target, "target")
    try:
        commands.prog_attach(fd, prog.fd, kind, flags, name=prog.name)
    except BPFError as err:
        raise _explain_map_error(prog, fd, kind, err, "attach") from None


def detach_map(prog: Any, target: Any, attach_type: AttachType | int) -> None:
    """``BPF_PROG_DETACH`` of ``prog`` from a socket map at ``attach_type``."""
    kind, fd = _attach_type(attach_type), fd_of(target, "target")
    try:
        commands.prog_detach(fd, prog.fd, kind, name=prog.name)
    except BPFError as err:
        raise _explain_map_error(prog, fd, kind, err, "detach") from None


def link_map(prog: Any, target: Any, attach_type: AttachType | int) -> Link:
    """``BPF_LINK_CREATE`` of ``prog`` on a socket map (Linux 6.10+): the link detaches on close."""
    kind, fd = _attach_type(attach_type), fd_of(target, "target")
    try:
        link_fd = commands.link_create(prog.fd, fd, kind, name=prog.name)
    except BPFError as err:
        raise _explain_map_error(prog, fd, kind, err, "link") from None
    return Link(link_fd, f"{prog.name or 'program'} {kind.name}")


def attach_xdp(prog: Any, interface: str | int, mode: XdpMode | int = XdpMode.AUTO) -> Link:
    """Attach an XDP program to an interface with a link; closing the link detaches it."""
    ifindex = interface_index(interface)
    where = f"attach XDP program {prog.name or ''!r} to {interface!r}"
    try:
        link_fd = commands.link_create(prog.fd, ifindex, AttachType.XDP, int(mode), name=prog.name)
    except BPFError as err:
        code = err.errno
        if code == errno.EBUSY:
            raise BPFError(code, where, message="an XDP program is already attached there "
                           "(use Link.update to replace a program attached with a link)") from None
        if code == errno.EINVAL and prog.type != ProgramType.XDP:
            raise BPFError(code, where, message=f"XDP takes XDP programs, not {program_type_name(prog.type)}") from None
        if code in (errno.EOPNOTSUPP, errno.EINVAL) and mode:
            raise NotSupportedError(code, where, message=f"the interface or its driver does not support XDP mode {XdpMode(mode).name}") from None
        raise error_for(code, where) from None
    return Link(link_fd, f"{prog.name or 'xdp'} on {interface}")


def _with_socket(sock: socket.socket | int, action: Any) -> None:
    if isinstance(sock, int) and not isinstance(sock, bool):
        with socket.socket(fileno=os.dup(sock)) as dup:
            action(dup)
    elif hasattr(sock, "setsockopt"):
        action(sock)
    else:
        raise TypeError(f"expected a socket or a socket fd, not {sock!r}")


def _reuseport_reason(prog: Any, sock: socket.socket) -> str:
    if prog.type not in (ProgramType.SK_REUSEPORT, ProgramType.SOCKET_FILTER):
        return f"a reuseport group takes SK_REUSEPORT or SOCKET_FILTER programs, not {program_type_name(prog.type)}"
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT):
        return "the socket does not have SO_REUSEPORT set (set it before bind)"
    return "the socket was bound before SO_REUSEPORT was set, so it is in no reuseport group"


def attach_reuseport(prog: Any, sock: socket.socket | int) -> None:
    """Set ``prog`` as the SO_REUSEPORT group's selector (``SO_ATTACH_REUSEPORT_EBPF``)."""
    def attach(s: socket.socket) -> None:
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, prog.fd)
        except OSError as err:
            code = err.errno or errno.EINVAL
            message = _reuseport_reason(prog, s) if code == errno.EINVAL else ""
            raise error_for(code, f"attach {prog.name or 'program'!r} to a reuseport group", message=message) from None
    _with_socket(sock, attach)


def detach_reuseport(sock: socket.socket | int) -> None:
    """Remove the SO_REUSEPORT group's program (``SO_DETACH_REUSEPORT_BPF``): default selection again."""
    def detach(s: socket.socket) -> None:
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, 0)
        except OSError as err:
            code = err.errno or errno.EINVAL
            message = {errno.ENOENT: "the socket's reuseport group has no program",
                       errno.EINVAL: "the socket is in no SO_REUSEPORT group"}.get(code, "")
            raise error_for(code, "detach reuseport program", message=message) from None
    _with_socket(sock, detach)


def query(target: Any, attach_type: AttachType | int) -> list[int]:
    """The ids of the programs attached to ``target`` (a map, or an fd) at ``attach_type``
    (socket maps: Linux 6.0+)."""
    kind, fd = _attach_type(attach_type), fd_of(target, "target")
    try:
        return commands.prog_query(fd, kind)[1]
    except BPFError as err:
        lacking = features.lacking("sockmap_query") if _map_type(fd) in _SOCKET_MAPS else None
        if lacking is not None:
            raise NotSupportedError(err.errno, f"query {kind.name} programs", message=lacking) from None
        raise
