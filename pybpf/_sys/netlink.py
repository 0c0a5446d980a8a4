"""rtnetlink from Python: the message and attribute layouts of ``linux/netlink.h``,
``linux/rtnetlink.h`` and ``linux/pkt_cls.h`` that tc and ``net show`` need, and one request
socket. Nothing here knows what a filter is for; ``pybpf.programs.tc`` does.
"""

from __future__ import annotations

import dataclasses
import errno
import itertools
import os
import socket
import struct
import sys
from collections.abc import Iterator

NETLINK_ROUTE = 0
NETLINK_EXT_ACK = 11
NETLINK_GET_STRICT_CHK = 12
SOL_NETLINK = 270

NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_ECHO = 0x1, 0x2, 0x4, 0x8
NLM_F_DUMP = 0x300
NLM_F_EXCL, NLM_F_CREATE = 0x200, 0x400
NLM_F_ACK_TLVS = 0x200  # in an NLMSG_ERROR: extended-ack attributes follow
NLMSGERR_ATTR_MSG = 1

RTM_GETLINK = 18
RTM_NEWQDISC, RTM_DELQDISC, RTM_GETQDISC = 36, 37, 38
RTM_GETTCLASS = 42
RTM_NEWTFILTER, RTM_DELTFILTER, RTM_GETTFILTER = 44, 45, 46

IFLA_IFNAME, IFLA_XDP = 3, 43
IFLA_XDP_ATTACHED, IFLA_XDP_PROG_ID = 2, 4
IFLA_XDP_DRV_PROG_ID, IFLA_XDP_SKB_PROG_ID, IFLA_XDP_HW_PROG_ID = 5, 6, 7
XDP_ATTACHED_NONE, XDP_ATTACHED_DRV, XDP_ATTACHED_SKB, XDP_ATTACHED_HW, XDP_ATTACHED_MULTI = 0, 1, 2, 3, 4

TCA_KIND, TCA_OPTIONS, TCA_CHAIN = 1, 2, 11
TCA_BPF_ACT, TCA_BPF_FD, TCA_BPF_NAME, TCA_BPF_FLAGS, TCA_BPF_FLAGS_GEN = 1, 6, 7, 8, 9
TCA_BPF_TAG, TCA_BPF_ID = 10, 11
TCA_BPF_FLAG_ACT_DIRECT = 1 << 0
TCA_ACT_KIND, TCA_ACT_OPTIONS = 1, 2
TCA_ACT_BPF_NAME, TCA_ACT_BPF_ID = 6, 9

TC_H_ROOT = 0xFFFFFFFF
TC_H_CLSACT = 0xFFFFFFF1
"""The parent of a clsact (or ingress) qdisc; its handle is ``ffff:``."""
TC_H_MIN_INGRESS, TC_H_MIN_EGRESS = 0xFFF2, 0xFFF3
CLSACT_HANDLE = 0xFFFF0000
ETH_P_ALL = 0x0003

_NLMSGHDR = struct.Struct("=IHHII")
_TCMSG = struct.Struct("=BxxxiIII")
_IFINFOMSG = struct.Struct("=BxHiII")
_RTATTR = struct.Struct("=HH")
_ERRMSG = struct.Struct("=i")
_U32 = struct.Struct("=I")
_MAX_REPLY = 1 << 18
_MAX_MESSAGES = 1 << 16
_seq = itertools.count(1)


def tc_handle(major: int, minor: int) -> int:
    """``TC_H_MAKE(major, minor)``: ``major`` is the upper 16 bits already shifted."""
    return (major & 0xFFFF0000) | (minor & 0xFFFF)


def _align(size: int) -> int:
    return (size + 3) & ~3


def attr(kind: int, value: bytes) -> bytes:
    """One ``rtattr`` with its padding."""
    size = _RTATTR.size + len(value)
    return _RTATTR.pack(size, kind) + value + b"\0" * (_align(size) - size)


def attr_u32(kind: int, value: int) -> bytes:
    """A u32 attribute."""
    return attr(kind, _U32.pack(value))


def attr_str(kind: int, value: str) -> bytes:
    """A NUL-terminated string attribute."""
    return attr(kind, value.encode() + b"\0")


def parse_attrs(data: bytes | memoryview) -> dict[int, bytes]:
    """``{type: payload}`` of a run of attributes (the last one wins for repeated types; the
    NLA_F_NESTED and byte-order bits are masked off)."""
    out: dict[int, bytes] = {}
    view = memoryview(data)
    at = 0
    while at + _RTATTR.size <= len(view):
        size, kind = _RTATTR.unpack_from(view, at)
        if size < _RTATTR.size or at + size > len(view):
            break
        out[kind & 0x3FFF] = bytes(view[at + _RTATTR.size : at + size])
        at += _align(size)
    return out


def attr_text(value: bytes | None) -> str | None:
    """A string attribute's text, without its NUL."""
    return None if value is None else value.split(b"\0", 1)[0].decode(errors="replace")


def attr_int(value: bytes | None) -> int | None:
    """A u8/u16/u32 attribute's value."""
    if value is None:
        return None
    return int.from_bytes(value[:4], sys.byteorder)


def tcmsg(ifindex: int, handle: int = 0, parent: int = 0, info: int = 0) -> bytes:
    """``struct tcmsg`` (family AF_UNSPEC)."""
    return _TCMSG.pack(socket.AF_UNSPEC, ifindex, handle, parent, info)


class NetlinkError(OSError):
    """A refusal from rtnetlink: the errno and the kernel's extended-ack message, if any."""

    def __init__(self, code: int, op: str, message: str = "") -> None:
        self.op = op
        self.message = message
        text = f"{op}: {os.strerror(code)}" + (f" ({message})" if message else "")
        super().__init__(code, text)


@dataclasses.dataclass(frozen=True)
class Message:
    """One netlink message: its type and flags, and its payload (family header + attributes)."""

    type: int
    flags: int
    payload: bytes


class RtNetlink:
    """A NETLINK_ROUTE socket in the calling thread's network namespace (it stays there)."""

    def __init__(self, timeout: float = 5.0) -> None:
        """Open and bind the socket; requests time out after ``timeout`` seconds."""
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        try:
            self.sock.settimeout(timeout)
            self.sock.bind((0, 0))
            for option in (NETLINK_EXT_ACK, NETLINK_GET_STRICT_CHK):
                try:
                    self.sock.setsockopt(SOL_NETLINK, option, 1)
                except OSError:
                    pass
        except BaseException:
            self.sock.close()
            raise

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

    def __enter__(self) -> RtNetlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, msg_type: int, flags: int, payload: bytes, op: str) -> list[Message]:
        """Send one request and gather the answer: the messages of a dump, or of an echo, up to
        the ACK (``NLM_F_ACK`` is added); a refusal raises ``NetlinkError``."""
        seq = next(_seq) & 0xFFFFFFFF
        flags |= NLM_F_REQUEST | (0 if flags & NLM_F_DUMP == NLM_F_DUMP else NLM_F_ACK)
        self.sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(payload), msg_type, flags, seq, 0) + payload)
        found: list[Message] = []
        for _ in range(_MAX_MESSAGES):
            data = self.sock.recv(_MAX_REPLY)
            for message in _messages(data, seq):
                if message.type == NLMSG_DONE:
                    return found
                if message.type == NLMSG_ERROR:
                    code = -_ERRMSG.unpack_from(message.payload)[0]
                    if code:
                        raise NetlinkError(code, op, _ext_ack(message))
                    return found
                found.append(message)
        raise NetlinkError(errno.EMSGSIZE, op, f"more than {_MAX_MESSAGES} replies")


def _messages(data: bytes, seq: int) -> Iterator[Message]:
    at = 0
    while at + _NLMSGHDR.size <= len(data):
        size, kind, flags, got_seq, _ = _NLMSGHDR.unpack_from(data, at)
        if size < _NLMSGHDR.size or at + size > len(data):
            return
        if got_seq == seq:
            yield Message(kind, flags, data[at + _NLMSGHDR.size : at + size])
        at += _align(size)


def _ext_ack(message: Message) -> str:
    """The kernel's extended-ack text of an NLMSG_ERROR, if it sent one."""
    if not message.flags & NLM_F_ACK_TLVS:
        return ""
    inner = _NLMSGHDR.unpack_from(message.payload, _ERRMSG.size)[0] if len(message.payload) >= _ERRMSG.size + _NLMSGHDR.size else 0
    capped = message.flags & 0x100  # NLM_F_CAPPED: only the request's header was echoed
    start = _ERRMSG.size + (_NLMSGHDR.size if capped else _align(inner))
    return attr_text(parse_attrs(message.payload[start:]).get(NLMSGERR_ATTR_MSG)) or ""


# ---- decoded replies ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Interface:
    """An interface from RTM_GETLINK: index, name and the XDP attachment it reports."""

    index: int
    name: str
    xdp_attached: int = XDP_ATTACHED_NONE
    xdp_prog_id: int = 0
    xdp_skb_prog_id: int = 0
    xdp_drv_prog_id: int = 0
    xdp_hw_prog_id: int = 0


def decode_link(message: Message) -> Interface:
    """An RTM_NEWLINK message as an ``Interface``."""
    index = _IFINFOMSG.unpack_from(message.payload)[2]
    attrs = parse_attrs(message.payload[_IFINFOMSG.size :])
    xdp = parse_attrs(attrs.get(IFLA_XDP, b""))
    return Interface(index, attr_text(attrs.get(IFLA_IFNAME)) or "",
                     attr_int(xdp.get(IFLA_XDP_ATTACHED)) or 0, attr_int(xdp.get(IFLA_XDP_PROG_ID)) or 0,
                     attr_int(xdp.get(IFLA_XDP_SKB_PROG_ID)) or 0, attr_int(xdp.get(IFLA_XDP_DRV_PROG_ID)) or 0,
                     attr_int(xdp.get(IFLA_XDP_HW_PROG_ID)) or 0)


@dataclasses.dataclass(frozen=True)
class TcObject:
    """A qdisc, class or filter from a dump: where it sits and its kind; for a bpf filter the
    program's name, id and whether it runs in direct-action mode; for bpf actions their programs."""

    ifindex: int
    handle: int
    parent: int
    info: int
    kind: str
    bpf_name: str | None = None
    bpf_id: int | None = None
    bpf_flags: int = 0
    actions: tuple[tuple[str | None, int | None], ...] = ()

    @property
    def priority(self) -> int:
        """A filter's priority (the upper half of ``tcm_info``)."""
        return self.info >> 16

    @property
    def protocol(self) -> int:
        """A filter's protocol, host order (the lower half of ``tcm_info`` is network order)."""
        return socket.ntohs(self.info & 0xFFFF)


def decode_tc(message: Message) -> TcObject:
    """An RTM_NEW{QDISC,TCLASS,TFILTER} message as a ``TcObject``."""
    _, ifindex, handle, parent, info = _TCMSG.unpack_from(message.payload)
    attrs = parse_attrs(message.payload[_TCMSG.size :])
    kind = attr_text(attrs.get(TCA_KIND)) or ""
    if kind != "bpf" or TCA_OPTIONS not in attrs:
        return TcObject(ifindex, handle, parent, info, kind)
    options = parse_attrs(attrs[TCA_OPTIONS])
    return TcObject(ifindex, handle, parent, info, kind, attr_text(options.get(TCA_BPF_NAME)),
                    attr_int(options.get(TCA_BPF_ID)), attr_int(options.get(TCA_BPF_FLAGS)) or 0,
                    _bpf_actions(options.get(TCA_BPF_ACT)))


def _bpf_actions(data: bytes | None) -> tuple[tuple[str | None, int | None], ...]:
    if not data:
        return ()
    found = []
    for _, act in sorted(parse_attrs(data).items()):
        fields = parse_attrs(act)
        if attr_text(fields.get(TCA_ACT_KIND)) == "bpf" and TCA_ACT_OPTIONS in fields:
            options = parse_attrs(fields[TCA_ACT_OPTIONS])
            found.append((attr_text(options.get(TCA_ACT_BPF_NAME)), attr_int(options.get(TCA_ACT_BPF_ID))))
    return tuple(found)


def ifinfomsg(index: int = 0) -> bytes:
    """``struct ifinfomsg`` for a request."""
    return _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, 0, 0)


def interfaces(nl: RtNetlink) -> list[Interface]:
    """Every interface of the socket's namespace, asking for its XDP state."""
    return [decode_link(m) for m in nl.request(RTM_GETLINK, NLM_F_DUMP, ifinfomsg(), "list interfaces")]


def qdiscs(nl: RtNetlink, ifindex: int) -> list[TcObject]:
    """The qdiscs of one interface."""
    replies = nl.request(RTM_GETQDISC, NLM_F_DUMP, tcmsg(ifindex), "list qdiscs")
    return [q for q in map(decode_tc, replies) if q.ifindex == ifindex]


def classes(nl: RtNetlink, ifindex: int) -> list[TcObject]:
    """The classes of one interface."""
    return [decode_tc(m) for m in nl.request(RTM_GETTCLASS, NLM_F_DUMP, tcmsg(ifindex), "list classes")]


def filters(nl: RtNetlink, ifindex: int, parent: int) -> list[TcObject]:
    """The filters of one interface under ``parent`` (ENOENT/EINVAL when it has no such parent: [])."""
    try:
        replies = nl.request(RTM_GETTFILTER, NLM_F_DUMP, tcmsg(ifindex, parent=parent), "list filters")
    except NetlinkError as err:
        if err.errno in (errno.ENOENT, errno.EINVAL, errno.EOPNOTSUPP):
            return []
        raise
    return [f for f in map(decode_tc, replies) if f.kind]


def add_clsact(nl: RtNetlink, ifindex: int) -> bool:
    """Create a clsact qdisc on ``ifindex``; False if one (or an ingress qdisc) is there already."""
    payload = tcmsg(ifindex, CLSACT_HANDLE, TC_H_CLSACT) + attr_str(TCA_KIND, "clsact")
    try:
        nl.request(RTM_NEWQDISC, NLM_F_CREATE | NLM_F_EXCL, payload, "add clsact qdisc")
    except NetlinkError as err:
        if err.errno == errno.EEXIST:
            return False
        raise
    return True


def delete_clsact(nl: RtNetlink, ifindex: int) -> None:
    """Delete the clsact qdisc of ``ifindex`` (and every filter on it)."""
    payload = tcmsg(ifindex, CLSACT_HANDLE, TC_H_CLSACT) + attr_str(TCA_KIND, "clsact")
    nl.request(RTM_DELQDISC, 0, payload, "delete clsact qdisc")


def add_bpf_filter(nl: RtNetlink, ifindex: int, parent: int, priority: int, prog_fd: int, name: str,
                   handle: int = 0) -> TcObject:
    """Add a direct-action bpf filter running ``prog_fd``; the filter as the kernel made it
    (priority and handle chosen by the kernel when given as 0)."""
    info = (priority << 16) | socket.htons(ETH_P_ALL)
    options = attr_u32(TCA_BPF_FD, prog_fd) + attr_str(TCA_BPF_NAME, name) + attr_u32(TCA_BPF_FLAGS, TCA_BPF_FLAG_ACT_DIRECT)
    payload = tcmsg(ifindex, handle, parent, info) + attr_str(TCA_KIND, "bpf") + attr(TCA_OPTIONS | 0x8000, options)
    replies = nl.request(RTM_NEWTFILTER, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO, payload, "add bpf filter")
    made = [decode_tc(m) for m in replies if m.type == RTM_NEWTFILTER]
    if not made:
        raise NetlinkError(errno.EPROTO, "add bpf filter", "the kernel did not echo the new filter")
    return made[-1]


def delete_filter(nl: RtNetlink, ifindex: int, parent: int, priority: int, protocol: int, handle: int, kind: str = "bpf") -> None:
    """Delete one filter, named by its parent, priority, protocol and handle."""
    info = (priority << 16) | socket.htons(protocol)
    payload = tcmsg(ifindex, handle, parent, info) + attr_str(TCA_KIND, kind)
    nl.request(RTM_DELTFILTER, 0, payload, "delete filter")
