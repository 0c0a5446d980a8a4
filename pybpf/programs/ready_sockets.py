"""Ready-made programs that drive socket maps from the kernel, assembled here (no compiler):

- ``sockops_insert(sockhash)``: a SOCK_OPS program putting each established TCP connection
  into a SOCKHASH under its own 4-tuple (``SockTuple``);
- ``sk_msg_to_peer(sockhash)``: an SK_MSG program sending what a socket writes straight into
  the receive queue of its peer (the socket under the reverse 4-tuple), when that is local;
- ``sk_lookup_dispatch(bindings, sockets)``: an SK_LOOKUP program picking the socket for a new
  connection or datagram by (protocol, address prefix, port) -> label -> socket.

The map layouts are ctypes structures (``SockTuple``, ``BindingKey``, ``DispatchMetrics``), the
same bytes a C program would use; their C definitions are in the docstrings.
"""

from __future__ import annotations

import ctypes
import socket
import sys
from typing import Any

from .._sys.constants import AttachType, MapFlags, MapType, ProgramType
from ..asm import B, DW, FP, H, R0, R1, R2, R3, R4, R6, R7, R8, R9, W, Assembler
from .program import Program
from .ready import SK_DROP, SK_PASS, _map, _need
from .spec import ProgramSpec

BPF_F_INGRESS = 1
BPF_SK_STORAGE_GET_F_CREATE = 1
SOCK_OPS_ACTIVE_ESTABLISHED_CB, SOCK_OPS_PASSIVE_ESTABLISHED_CB = 4, 5

_V4_MAPPED = int.from_bytes(b"\0\0\xff\xff", sys.byteorder)
_ONE_BE = int.from_bytes(b"\0\0\0\x01", sys.byteorder)
_FIRST_BYTE = 0xFF if sys.byteorder == "little" else 0xFF000000
_LOOPBACK_BYTE = 127 if sys.byteorder == "little" else 127 << 24


class SockTuple(ctypes.Structure):
    """The SOCKHASH key of ``sockops_insert``: a connection seen from one end. 40 bytes::

        struct pybpf_sock_tuple {
            __u8  local_ip[16];   /* IPv6, or IPv4 as ::ffff:a.b.c.d; network byte order */
            __u8  remote_ip[16];
            __u32 local_port;     /* host byte order */
            __u32 remote_port;    /* host byte order */
        };

    IPv4 addresses are stored v4-mapped, so an IPv6 socket talking to an IPv4 one finds it.
    """

    _fields_ = [("local_ip", ctypes.c_uint8 * 16), ("remote_ip", ctypes.c_uint8 * 16),
                ("local_port", ctypes.c_uint32), ("remote_port", ctypes.c_uint32)]

    @classmethod
    def of(cls, sock: socket.socket) -> SockTuple:
        """The tuple of a connected TCP socket, as ``sockops_insert`` stores it."""
        local, remote = sock.getsockname(), sock.getpeername()
        return cls((ctypes.c_uint8 * 16)(*_ip16(local[0])), (ctypes.c_uint8 * 16)(*_ip16(remote[0])), local[1], remote[1])

    def reversed(self) -> SockTuple:
        """The same connection seen from the other end."""
        return SockTuple(self.remote_ip, self.local_ip, self.remote_port, self.local_port)


def _ip16(address: str) -> bytes:
    """An address as 16 bytes: IPv6 as is, IPv4 v4-mapped."""
    if ":" in address:
        return socket.inet_pton(socket.AF_INET6, address.split("%", 1)[0])
    return b"\0" * 10 + b"\xff\xff" + socket.inet_pton(socket.AF_INET, address)


# ---- context layouts (include/uapi/linux/bpf.h) -----------------------------------------------

class _Ctx:
    """Offsets of the 4-tuple fields in a program context."""

    def __init__(self, family: int, remote_ip4: int, local_ip4: int, remote_ip6: int, local_ip6: int,
                 remote_port: int, local_port: int) -> None:
        self.family, self.remote_ip4, self.local_ip4 = family, remote_ip4, local_ip4
        self.remote_ip6, self.local_ip6, self.remote_port, self.local_port = remote_ip6, local_ip6, remote_port, local_port


_SOCK_OPS = _Ctx(family=20, remote_ip4=24, local_ip4=28, remote_ip6=32, local_ip6=48, remote_port=64, local_port=68)
_SK_MSG = _Ctx(family=16, remote_ip4=20, local_ip4=24, remote_ip6=28, local_ip6=44, remote_port=60, local_port=64)
_SOCK_OPS_OP = 0
_SK_MSG_SK = 72
_KEY = -40  # the SockTuple on the stack: fp-40 .. fp-1


def _tuple_key(a: Assembler, ctx: _Ctx, reverse: bool, skip: str) -> None:
    """Write the ``SockTuple`` of the connection in R6's context at fp-40 (the peer's own tuple
    when ``reverse``); jump to ``skip`` for a family other than IPv4/IPv6. Uses R1-R2."""
    ours, theirs = (_KEY + 16, _KEY) if reverse else (_KEY, _KEY + 16)
    a.ldx(W, R1, R6, ctx.family)
    a.jeq(R1, socket.AF_INET6, "v6").jne(R1, socket.AF_INET, skip)
    for address, offset in ((ctx.local_ip4, ours), (ctx.remote_ip4, theirs)):
        a.st(W, FP, offset, 0).st(W, FP, offset + 4, 0).st(W, FP, offset + 8, _V4_MAPPED)
        a.ldx(W, R2, R6, address).stx(W, FP, R2, offset + 12)
    a.ja("ports")
    a.label("v6")
    for address, offset in ((ctx.local_ip6, ours), (ctx.remote_ip6, theirs)):
        for word in range(4):
            a.ldx(W, R2, R6, address + 4 * word).stx(W, FP, R2, offset + 4 * word)
    a.label("ports")
    local_port, remote_port = (_KEY + 36, _KEY + 32) if reverse else (_KEY + 32, _KEY + 36)
    a.ldx(W, R2, R6, ctx.local_port).stx(W, FP, R2, local_port)
    a.ldx(W, R2, R6, ctx.remote_port).to_be(R2, 32).stx(W, FP, R2, remote_port)


def _require_loopback(a: Assembler, offset: int, fail: str, tag: str) -> None:
    """Jump to ``fail`` unless the 16-byte address at fp+offset is ::1 or ::ffff:127.x.y.z."""
    a.ldx(W, R1, FP, offset).jne32(R1, 0, fail)
    a.ldx(W, R1, FP, offset + 4).jne32(R1, 0, fail)
    a.ldx(W, R1, FP, offset + 8).ldx(W, R2, FP, offset + 12)
    a.jeq32(R1, 0, f"{tag}_v6")
    a.jne32(R1, _V4_MAPPED, fail)
    a.and32(R2, _FIRST_BYTE).jne32(R2, _LOOPBACK_BYTE, fail).ja(f"{tag}_ok")
    a.label(f"{tag}_v6").jne32(R2, _ONE_BE, fail)
    a.label(f"{tag}_ok")


def _load(a: Assembler, prog_type: ProgramType, name: str, expected: AttachType | None = None) -> Program:
    return Program.load(ProgramSpec(prog_type, a, name=name, expected_attach_type=expected))


def sockops_insert(sockhash: Any, loopback_only: bool = False) -> Program:
    """SOCK_OPS program inserting each TCP connection, active and passive, IPv4 and IPv6, into
    ``sockhash`` (a SOCKHASH with 40-byte keys) under its ``SockTuple`` when it becomes
    established; with ``loopback_only``, only connections whose both ends are loopback
    addresses (127.0.0.0/8, ::1). Attach to a cgroup as ``CGROUP_SOCK_OPS``.

    Inserting at establishment means no byte can reach the socket before it is in the map (the
    race a user-space inserter has). Connections established before attaching are left alone.
    """
    fd, map_type, key_size = _map(sockhash, "sockhash")
    _need(map_type, (MapType.SOCKHASH,), "sockhash")
    if key_size != ctypes.sizeof(SockTuple):
        raise ValueError(f"sockhash keys must be SockTuple ({ctypes.sizeof(SockTuple)} bytes), not {key_size} bytes")
    a = Assembler()
    a.mov64(R6, R1)
    a.ldx(W, R1, R6, _SOCK_OPS_OP)
    a.jeq(R1, SOCK_OPS_ACTIVE_ESTABLISHED_CB, "insert").jne(R1, SOCK_OPS_PASSIVE_ESTABLISHED_CB, "out")
    a.label("insert")
    _tuple_key(a, _SOCK_OPS, reverse=False, skip="out")
    if loopback_only:
        _require_loopback(a, _KEY, "out", "local")
        _require_loopback(a, _KEY + 16, "out", "remote")
    a.mov64(R1, R6).ld_map_fd(R2, fd).mov64(R3, FP).add64(R3, _KEY).mov64(R4, 0).call("sock_hash_update")
    a.label("out").mov64(R0, 1).exit()
    return _load(a, ProgramType.SOCK_OPS, "sockops_insert")


class PeerState(ctypes.c_uint32):
    """What ``sk_msg_to_peer`` decided for a socket at its first write (socket storage)::

        0: not yet written, 1: goes to the peer's receive queue, 2: goes through TCP
    """


UNDECIDED, TO_PEER, THROUGH_TCP = 0, 1, 2


def peer_state_map() -> Any:
    """The SK_STORAGE map ``sk_msg_to_peer`` keeps its per-socket decision in."""
    from ..map import Map, MapSpec

    return Map.create(MapSpec(MapType.SK_STORAGE, key=ctypes.c_int32, value=ctypes.c_uint32, max_entries=0,
                              flags=MapFlags.NO_PREALLOC, name="sk_msg_state"))


def sk_msg_to_peer(sockhash: Any, state: Any = None) -> Program:
    """SK_MSG verdict putting what a socket writes straight into its peer's receive queue
    (``bpf_msg_redirect_hash`` with ``BPF_F_INGRESS`` to the ``SockTuple`` reversed) when the
    peer is in ``sockhash``, else letting it through TCP. Attach to the SOCKHASH that
    ``sockops_insert`` fills, as ``SK_MSG_VERDICT``.

    The choice is made once per socket, at its first write, and kept (in ``state``, an
    SK_STORAGE map; made here when None): a peer that enters the map after bytes already went
    through TCP would otherwise read later bytes before earlier ones.
    """
    fd, map_type, key_size = _map(sockhash, "sockhash")
    _need(map_type, (MapType.SOCKHASH,), "sockhash")
    if key_size != ctypes.sizeof(SockTuple):
        raise ValueError(f"sockhash keys must be SockTuple ({ctypes.sizeof(SockTuple)} bytes), not {key_size} bytes")
    own = state is None
    if own:
        state = peer_state_map()
    try:
        state_fd, state_type, _ = _map(state, "state")
        _need(state_type, (MapType.SK_STORAGE,), "state")
        a = Assembler()
        a.mov64(R6, R1)
        a.ld_map_fd(R1, state_fd).ldx(DW, R2, R6, _SK_MSG_SK).mov64(R3, 0).mov64(R4, BPF_SK_STORAGE_GET_F_CREATE)
        a.call("sk_storage_get")
        a.jeq(R0, 0, "pass")
        a.mov64(R7, R0).ldx(W, R8, R7, 0)
        a.jeq(R8, THROUGH_TCP, "pass")
        _tuple_key(a, _SK_MSG, reverse=True, skip="pass")
        a.mov64(R1, R6).ld_map_fd(R2, fd).mov64(R3, FP).add64(R3, _KEY).mov64(R4, BPF_F_INGRESS)
        a.call("msg_redirect_hash")
        a.jne(R8, UNDECIDED, "pass")
        a.mov64(R1, TO_PEER).jeq(R0, SK_PASS, "keep").mov64(R1, THROUGH_TCP)
        a.label("keep").stx(W, R7, R1, 0)
        a.label("pass").mov64(R0, SK_PASS).exit()
        return _load(a, ProgramType.SK_MSG, "sk_msg_to_peer")
    finally:
        if own:
            state.close()  # the program holds its own reference


# ---- sk_lookup dispatch -------------------------------------------------------------------------


class BindingKey(ctypes.Structure):
    """The LPM_TRIE key of ``sk_lookup_dispatch``'s bindings. 24 bytes::

        struct pybpf_binding {
            __u32 prefixlen;   /* bits of what follows that must match: 32 + address bits */
            __u8  protocol;    /* IPPROTO_TCP or IPPROTO_UDP */
            __u8  pad;         /* 0 */
            __be16 port;       /* network byte order; 0 binds every port */
            __u8  address[16]; /* IPv6, or IPv4 as ::ffff:a.b.c.d */
        };

    The value is the label's id (``__u32``, 1 or more).
    """

    _fields_ = [("prefixlen", ctypes.c_uint32), ("protocol", ctypes.c_uint8), ("pad", ctypes.c_uint8),
                ("port", ctypes.c_uint16), ("address", ctypes.c_uint8 * 16)]


class DispatchMetrics(ctypes.Structure):
    """Per-label counters of ``sk_lookup_dispatch`` (a PERCPU_ARRAY indexed by label id; index 0
    counts nothing)::

        struct pybpf_dispatch_metrics {
            __u64 lookups;  /* connections or datagrams that matched one of the label's bindings */
            __u64 misses;   /* ... and found no socket registered for the label: dropped */
            __u64 errors;   /* ... and the kernel refused the registered socket (bpf_sk_assign) */
        };
    """

    _fields_ = [("lookups", ctypes.c_uint64), ("misses", ctypes.c_uint64), ("errors", ctypes.c_uint64)]


SLOTS_PER_LABEL = 4
"""Socket slots per label in the SOCKMAP: label * 4 + (2 for UDP) + (1 for IPv6)."""


def socket_slot(label: int, protocol: int, family: int) -> int:
    """The SOCKMAP index of a label's socket for ``protocol`` (IPPROTO_TCP/UDP) and ``family``."""
    return label * SLOTS_PER_LABEL + (2 if protocol == socket.IPPROTO_UDP else 0) + (1 if family == socket.AF_INET6 else 0)


_LOOKUP = _Ctx(family=8, remote_ip4=16, local_ip4=40, remote_ip6=20, local_ip6=44, remote_port=36, local_port=60)
_LOOKUP_PROTOCOL = 12
_BKEY = -24  # BindingKey on the stack: fp-24 .. fp-1
_SLOT = -32


def _count(a: Assembler, field: int) -> None:
    """``metrics->field += 1`` when R8 (this CPU's metrics of the label) is not NULL."""
    a.jeq(R8, 0, f"counted{field}")
    a.ldx(DW, R1, R8, field).add64(R1, 1).stx(DW, R8, R1, field)
    a.label(f"counted{field}")


def sk_lookup_dispatch(bindings: Any, sockets: Any, metrics: Any = None) -> Program:
    """SK_LOOKUP program dispatching new connections (TCP) and datagrams (UDP) to sockets by
    label: ``bindings`` (LPM_TRIE, ``BindingKey`` -> u32 label) is searched with the local
    address and port, then with port 0 (bindings for every port); the label's socket is at
    ``socket_slot(label, protocol, family)`` in ``sockets`` (a SOCKMAP; for IPv4 the IPv6 slot
    is tried second, for dual-stack sockets). No binding: the kernel's own lookup goes on. A
    binding without a socket, or a socket the kernel refuses: dropped (the client sees
    ECONNREFUSED). ``metrics`` (PERCPU_ARRAY of ``DispatchMetrics`` by label) counts, if given.
    Attach with ``attach_netns``.
    """
    bfd, btype, bkey = _map(bindings, "bindings")
    _need(btype, (MapType.LPM_TRIE,), "bindings")
    if bkey != ctypes.sizeof(BindingKey):
        raise ValueError(f"bindings keys must be BindingKey ({ctypes.sizeof(BindingKey)} bytes), not {bkey} bytes")
    sfd, stype, _ = _map(sockets, "sockets")
    _need(stype, (MapType.SOCKMAP,), "sockets")
    mfd = None
    if metrics is not None:
        mfd, mtype, _ = _map(metrics, "metrics")
        _need(mtype, (MapType.PERCPU_ARRAY,), "metrics")
    a = Assembler()
    a.mov64(R6, R1)
    a.ldx(W, R1, R6, _LOOKUP.family)
    a.jeq(R1, socket.AF_INET6, "v6").jne(R1, socket.AF_INET, "pass")
    a.st(W, FP, _BKEY + 8, 0).st(W, FP, _BKEY + 12, 0).st(W, FP, _BKEY + 16, _V4_MAPPED)
    a.ldx(W, R2, R6, _LOOKUP.local_ip4).stx(W, FP, R2, _BKEY + 20).ja("port")
    a.label("v6")
    for word in range(4):
        a.ldx(W, R2, R6, _LOOKUP.local_ip6 + 4 * word).stx(W, FP, R2, _BKEY + 8 + 4 * word)
    a.label("port")
    a.st(W, FP, _BKEY, 32 + 128)
    a.ldx(W, R2, R6, _LOOKUP_PROTOCOL).stx(B, FP, R2, _BKEY + 4).st(B, FP, _BKEY + 5, 0)
    a.ldx(W, R2, R6, _LOOKUP.local_port).to_be(R2, 16).stx(H, FP, R2, _BKEY + 6)
    a.ld_map_fd(R1, bfd).mov64(R2, FP).add64(R2, _BKEY).call("map_lookup_elem")
    a.jne(R0, 0, "bound")
    a.st(H, FP, _BKEY + 6, 0)
    a.ld_map_fd(R1, bfd).mov64(R2, FP).add64(R2, _BKEY).call("map_lookup_elem")
    a.jeq(R0, 0, "pass")
    a.label("bound")
    a.ldx(W, R7, R0, 0)
    a.mov64(R8, 0)
    if mfd is not None:
        a.stx(W, FP, R7, _SLOT)
        a.ld_map_fd(R1, mfd).mov64(R2, FP).add64(R2, _SLOT).call("map_lookup_elem")
        a.mov64(R8, R0)
        _count(a, 0)
    # slot = label * 4 + (udp ? 2 : 0) + (v6 ? 1 : 0)
    a.mov64(R9, R7).lsh64(R9, 2)
    a.ldx(W, R1, R6, _LOOKUP_PROTOCOL).jne(R1, socket.IPPROTO_UDP, "tcp").add64(R9, 2)
    a.label("tcp")
    a.ldx(W, R1, R6, _LOOKUP.family).jne(R1, socket.AF_INET6, "slot").add64(R9, 1)
    a.label("slot").stx(W, FP, R9, _SLOT)
    a.ld_map_fd(R1, sfd).mov64(R2, FP).add64(R2, _SLOT).call("map_lookup_elem")
    a.jne(R0, 0, "found")
    a.ldx(W, R1, R6, _LOOKUP.family).jne(R1, socket.AF_INET, "miss")
    a.add64(R9, 1).stx(W, FP, R9, _SLOT)  # IPv4 with no IPv4 socket: a dual-stack IPv6 socket
    a.ld_map_fd(R1, sfd).mov64(R2, FP).add64(R2, _SLOT).call("map_lookup_elem")
    a.jne(R0, 0, "found")
    a.label("miss")
    if mfd is not None:
        _count(a, 8)
    a.mov64(R0, SK_DROP).exit()
    a.label("found")
    a.mov64(R7, R0)
    a.mov64(R1, R6).mov64(R2, R7).mov64(R3, 0).call("sk_assign")
    a.mov64(R9, R0)
    a.mov64(R1, R7).call("sk_release")
    a.jeq(R9, 0, "pass")
    if mfd is not None:
        _count(a, 16)
    a.mov64(R0, SK_DROP).exit()
    a.label("pass").mov64(R0, SK_PASS).exit()
    return _load(a, ProgramType.SK_LOOKUP, "sk_lookup_disp", AttachType.SK_LOOKUP)
