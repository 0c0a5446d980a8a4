"""Ready-made programs, assembled here and loaded at once: each function returns a loaded ``Program``.

Maps are passed as ``Map`` objects (``Map.from_fd`` wraps a raw fd); the program refers to the
map, so the map lives on while the program does. Attach the result yourself (``prog.attach(map, ...)``,
``prog.attach_xdp(...)``, ``prog.attach_reuseport(...)``).
"""

from __future__ import annotations

import socket
import sys
from typing import Any

from .._sys.constants import AttachType, MapType, ProgramType
from .._sys.netif import cookie_of
from .._sys.traits import map_type_name
from ..map import Map
from ..map.codec import Field
from ..asm import DW, FP, R0, R1, R2, R3, R4, R6, W, Assembler, Helper
from .program import Program
from .spec import ProgramSpec

SK_DROP, SK_PASS = 0, 1
"""Verdicts of sk_skb, sk_msg and sk_reuseport programs."""
XDP_PASS = 2
"""The XDP verdict that hands the frame to the network stack."""
BPF_F_INGRESS = 1
"""Redirect flag: deliver to the target socket's receive queue instead of sending it out."""

_CTX_XDP_RX_QUEUE_INDEX = 16  # struct xdp_md
_CTX_REUSEPORT_HASH = 32  # struct sk_reuseport_md
_CTX_SKB_LEN = 0  # struct __sk_buff


def _map(obj: Any, what: str) -> tuple[int, int, int]:
    """``(fd, type, key_size)`` of a ``Map``. A bare int is refused: next to keys and counts it
    would be ambiguous (wrap a raw fd with ``Map.from_fd``)."""
    if not isinstance(obj, Map):
        raise TypeError(f"{what} must be a Map (Map.from_fd(fd) wraps a raw fd), not {obj!r}")
    return obj.fd, obj.type, obj.key_size


def _need(map_type: int, allowed: tuple[MapType, ...], what: str) -> None:
    if map_type not in allowed:
        names = " or ".join(t.name for t in allowed)
        raise ValueError(f"{what} must be a {names} map, not {map_type_name(map_type)}")


def _key_bytes(key: Any, size: int) -> bytes:
    """``key`` (bytes or an int) as the map's ``size``-byte key, checked as map operations check it."""
    return Field(size, None, "key").encode(key)


def _store(a: Assembler, data: bytes) -> int:
    """Write ``data`` to the stack below the frame pointer; return its (negative) offset."""
    if len(data) > 256:
        raise ValueError(f"a key of {len(data)} bytes does not fit on the BPF stack here (at most 256)")
    base = -((len(data) + 7) // 8 * 8)
    at = 0
    while at < len(data):
        width = next(w for w in (8, 4, 2, 1) if len(data) - at >= w)
        value = int.from_bytes(data[at : at + width], sys.byteorder)
        if width == 8:
            a.ld_imm64(R3, value).stx(DW, FP, R3, base + at)
        else:
            a.st(width, FP, base + at, value)
        at += width
    return base


def _load(a: Assembler, prog_type: ProgramType, name: str, expected_attach_type: AttachType | None = None) -> Program:
    return Program.load(ProgramSpec(prog_type, a, name=name, expected_attach_type=expected_attach_type))


def _redirect(prog_type: ProgramType, target: Any, key: Any, flags: int, helpers: tuple[Helper, Helper], name: str) -> Program:
    """``return bpf_*_redirect_map(ctx, target, key, flags)`` or the ``_hash`` form with the key on the stack."""
    fd, map_type, key_size = _map(target, "target")
    _need(map_type, (MapType.SOCKMAP, MapType.SOCKHASH), "target")
    a = Assembler()
    if map_type == MapType.SOCKMAP:
        index = int.from_bytes(_key_bytes(key, 4), sys.byteorder)
        a.ld_map_fd(R2, fd).mov32(R3, index).mov64(R4, flags).call(helpers[0])
    else:
        offset = _store(a, _key_bytes(key, key_size))
        a.ld_map_fd(R2, fd).mov64(R3, FP).add64(R3, offset).mov64(R4, flags).call(helpers[1])
    return _load(a.exit(), prog_type, name)


def sk_skb_redirect(target: Any, key: Any = 0, ingress: bool = False) -> Program:
    """SK_SKB verdict sending every skb to the socket at ``key`` of a SOCKMAP (u32 index) or
    SOCKHASH (key bytes or int): out of that socket, or into its receive queue with ``ingress``."""
    helpers = (Helper.sk_redirect_map, Helper.sk_redirect_hash)
    return _redirect(ProgramType.SK_SKB, target, key, BPF_F_INGRESS if ingress else 0, helpers, "sk_skb_redirect")


def sk_msg_redirect(target: Any, key: Any = 0, ingress: bool = False) -> Program:
    """SK_MSG verdict sending every message written to a socket to the socket at ``key`` of a
    SOCKMAP or SOCKHASH: out of that socket, or into its receive queue with ``ingress``."""
    helpers = (Helper.msg_redirect_map, Helper.msg_redirect_hash)
    return _redirect(ProgramType.SK_MSG, target, key, BPF_F_INGRESS if ingress else 0, helpers, "sk_msg_redirect")


def _verdict(prog_type: ProgramType, value: int, name: str) -> Program:
    return _load(Assembler().mov64(R0, value).exit(), prog_type, name)


def sk_skb_pass() -> Program:
    """SK_SKB verdict letting every skb through to its socket."""
    return _verdict(ProgramType.SK_SKB, SK_PASS, "sk_skb_pass")


def sk_skb_drop() -> Program:
    """SK_SKB verdict dropping every skb."""
    return _verdict(ProgramType.SK_SKB, SK_DROP, "sk_skb_drop")


def sk_msg_pass() -> Program:
    """SK_MSG verdict letting every message through."""
    return _verdict(ProgramType.SK_MSG, SK_PASS, "sk_msg_pass")


def sk_msg_drop() -> Program:
    """SK_MSG verdict dropping every message (the sender gets EACCES)."""
    return _verdict(ProgramType.SK_MSG, SK_DROP, "sk_msg_drop")


def sk_skb_parser() -> Program:
    """SK_SKB stream parser taking each skb whole (``return skb->len``), for ``SK_SKB_STREAM_PARSER``."""
    a = Assembler().ldx(W, R0, R1, _CTX_SKB_LEN).exit()
    return _load(a, ProgramType.SK_SKB, "sk_skb_parser")


def splice_verdict(sockhash: Any, peers: Any) -> Program:
    """SK_SKB verdict of the splice pattern: bytes received by a socket go out of its peer.

    ``sockhash`` is a SOCKHASH keyed by socket cookie (key size 8); ``peers`` a HASH (8-byte keys
    and values) from a socket's cookie to its peer's. Sockets without a peer keep their bytes
    (SK_PASS). Attach as ``SK_SKB_VERDICT``; fill the maps with ``splice_pair``.
    """
    hash_fd, hash_type, hash_key = _map(sockhash, "sockhash")
    _need(hash_type, (MapType.SOCKHASH,), "sockhash")
    peers_fd, peers_type, peers_key = _map(peers, "peers")
    _need(peers_type, (MapType.HASH, MapType.LRU_HASH), "peers")
    if hash_key != 8 or peers_key != 8:
        raise ValueError(f"splice maps are keyed by 8-byte socket cookies (sockhash key {hash_key}, peers key {peers_key})")
    a = Assembler()
    a.mov64(R6, R1)
    a.call(Helper.get_socket_cookie)
    a.stx(DW, FP, R0, -8)
    a.ld_map_fd(R1, peers_fd).mov64(R2, FP).add64(R2, -8).call(Helper.map_lookup_elem)
    a.jeq(R0, 0, "pass")
    a.mov64(R1, R6).ld_map_fd(R2, hash_fd).mov64(R3, R0).mov64(R4, 0).call(Helper.sk_redirect_hash)
    a.exit()
    a.label("pass").mov64(R0, SK_PASS).exit()
    return _load(a, ProgramType.SK_SKB, "splice_verdict")


def splice_pair(sockhash: Any, peers: Any, a: socket.socket, b: socket.socket) -> tuple[int, int]:
    """Join two connected TCP sockets through ``splice_verdict``'s maps; returns their cookies.

    For idle sockets only: while ``b`` is not yet in ``sockhash``, bytes arriving at ``a`` find
    no redirect target and are dropped. With traffic in flight, give ``splice_verdict`` a second
    SOCKHASH without programs as its target map and insert both sockets there first, as
    ``pybpf.apps.proxy`` does. Bytes queued before insertion wait for more bytes; setting
    ``SO_RCVLOWAT`` on the socket makes the kernel process them at once. Closed sockets leave
    the SOCKHASH by themselves; delete their ``peers`` entries when done.
    """
    cookie_a, cookie_b = cookie_of(a), cookie_of(b)
    peers[cookie_a] = cookie_b
    peers[cookie_b] = cookie_a
    sockhash[cookie_a] = a
    sockhash[cookie_b] = b
    return cookie_a, cookie_b


def xsk_redirect(xskmap: Any) -> Program:
    """XDP program sending each frame to the AF_XDP socket bound to its receive queue, if any
    (else XDP_PASS): the kernel documentation's ``xsk_redir_prog``, instruction for instruction."""
    fd, map_type, _ = _map(xskmap, "xskmap")
    _need(map_type, (MapType.XSKMAP,), "xskmap")
    return _load(_xsk_redirect_code(fd), ProgramType.XDP, "xsk_redirect")


def _xsk_redirect_code(fd: int) -> Assembler:
    """What clang -O2 makes of ``xsk_redir_prog`` (tests compare the two)."""
    a = Assembler()
    a.ldx(W, R1, R1, _CTX_XDP_RX_QUEUE_INDEX).stx(W, FP, R1, -4)
    a.mov64(R2, FP).add64(R2, -4).ld_map_fd(R1, fd).call(Helper.map_lookup_elem)
    a.mov64(R1, R0).mov64(R0, XDP_PASS).jeq(R1, 0, "out")
    a.ldx(W, R2, FP, -4).ld_map_fd(R1, fd).mov64(R3, 0).call(Helper.redirect_map)
    return a.label("out").exit()


def _select_prologue(a: Assembler, control_fd: int) -> None:
    """``r6 = ctx; r0 = lookup(control, 0)``; jumps to "pass" when the entry is missing."""
    a.mov64(R6, R1).st(W, FP, -4, 0)
    a.ld_map_fd(R1, control_fd).mov64(R2, FP).add64(R2, -4).call(Helper.map_lookup_elem)
    a.jeq(R0, 0, "pass")


def _select_epilogue(a: Assembler, array_fd: int) -> None:
    """``bpf_sk_select_reuseport(ctx, array, r3, 0); return SK_PASS`` (failure: default selection)."""
    a.mov64(R1, R6).ld_map_fd(R2, array_fd).mov64(R4, 0).call(Helper.sk_select_reuseport)
    a.label("pass").mov64(R0, SK_PASS).exit()


def _control(array: Any, control: Any, what: str) -> tuple[int, int]:
    array_fd, array_type, _ = _map(array, "sockarray")
    _need(array_type, (MapType.REUSEPORT_SOCKARRAY,), "sockarray")
    control_fd, control_type, _ = _map(control, what)
    _need(control_type, (MapType.ARRAY,), what)
    return array_fd, control_fd


def reuseport_select(sockarray: Any, control: Any) -> Program:
    """SK_REUSEPORT program picking the socket at the index held in ``control`` (a one-entry ARRAY,
    u32 key 0 -> u32 index); an empty slot falls back to the kernel's default selection."""
    array_fd, control_fd = _control(sockarray, control, "control")
    a = Assembler()
    _select_prologue(a, control_fd)
    a.mov64(R3, R0)
    _select_epilogue(a, array_fd)
    return _load(a, ProgramType.SK_REUSEPORT, "reuseport_sel", AttachType.SK_REUSEPORT_SELECT)


def reuseport_hash(sockarray: Any, count_map: Any) -> Program:
    """SK_REUSEPORT program picking the socket at ``hash % n``, where ``n`` (the number of live
    sockets, filled from index 0) is held in ``count_map`` (a one-entry ARRAY ``Map``, not a number);
    n == 0 or an empty slot falls back to the kernel's default selection."""
    array_fd, count_fd = _control(sockarray, count_map, "count_map")
    a = Assembler()
    _select_prologue(a, count_fd)
    a.ldx(W, R1, R0, 0).jeq(R1, 0, "pass")
    a.ldx(W, R2, R6, _CTX_REUSEPORT_HASH).mod32(R2, R1).stx(W, FP, R2, -8)
    a.mov64(R3, FP).add64(R3, -8)
    _select_epilogue(a, array_fd)
    return _load(a, ProgramType.SK_REUSEPORT, "reuseport_hash", AttachType.SK_REUSEPORT_SELECT)
