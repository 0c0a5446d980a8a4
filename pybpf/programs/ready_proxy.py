"""The splice proxy's bounded verdict: bytes a socket receives go out of its peer, as long as the
peer keeps up; past a bound they stay with the socket and TCP's own flow control takes over.

The kernel queues redirected bytes on the target's psock without accounting them anywhere, so a
client whose upstream never reads could make it hold gigabytes. ``splice_bounded_verdict`` keeps,
per source socket, a ``SpliceFlow`` record: bytes sent toward the peer (``redirected`` by the
kernel, ``passed`` to user space) and a ring of the end positions of the last redirected skbs.
Against the peer's ``write_seq`` (what its TCP has taken) it knows how many bytes and skbs wait in
the peer's psock queue; past ``pressure_bytes`` it says so (``EVENT_PRESSURE``). Past ``queue_bytes`` or ``ring`` skbs the direction turns ``PASSING``,
for good: skbs go to the source's own receive path (``SK_PASS``), which TCP accounts and which
closes the client's window once the receive buffer is full, and user space takes the direction
over (it reads what was passed, publishing the count in ``forwarded``, and takes the socket out of
the verdict's map). Bytes passed and not yet read beyond ``pass_bytes`` (the receive path can queue
without accounting when the socket's own psock is backlogged) mark the flow ``OVERFLOW``: every
later skb is dropped and the owner resets the pair. Changes of state are announced in a ring buffer.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any

from .._sys.constants import MapType, ProgramType
from ..asm import DW, FP, R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, W, Assembler, Helper
from .program import Program
from .ready import SK_DROP, SK_PASS, _map, _need
from .spec import ProgramSpec

RING = 512
"""Room for skb positions in a ``SpliceFlow``: the most ``ring`` may be."""

PASSING = 1
"""Flow flag: this direction's bytes go to user space until ``forwarded`` catches up."""
BASED = 2
"""Flow flag: ``base`` holds the target's ``write_seq`` at the first byte."""
OVERFLOW = 4
"""Flow flag: more than ``pass_bytes`` waited for user space; every skb is dropped from now on."""

EVENT_PASSING = 1
"""Ring buffer event: a flow started passing bytes to user space."""
EVENT_OVERFLOW = 2
"""Ring buffer event: a flow overflowed; its pair must be reset."""
EVENT_PRESSURE = 4
"""Ring buffer event: more than ``pressure_bytes`` wait on the target's psock queue (once)."""

_SKB_LEN = 0  # struct __sk_buff: len


class SpliceFlow(ctypes.Structure):
    """One direction of a spliced pair, keyed by the source socket's cookie in the ``flows`` HASH.

    User space creates it (``peer`` set, the rest zero) before the socket meets the verdict and
    then only reads it; the verdict program owns every other field.
    """

    _fields_ = [
        ("peer", ctypes.c_uint64),
        ("redirected", ctypes.c_uint64),
        ("passed", ctypes.c_uint64),
        ("base", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("head", ctypes.c_uint32),
        ("notified", ctypes.c_uint32),
        ("ring", ctypes.c_uint32 * RING),
    ]


class SpliceEvent(ctypes.Structure):
    """A ring buffer record: which flow (the source's cookie) and what happened (``EVENT_*``)."""

    _fields_ = [("cookie", ctypes.c_uint64), ("kind", ctypes.c_uint64)]


def _off(field: str) -> int:
    offset: int = getattr(SpliceFlow, field).offset
    return offset


@functools.cache
def tcp_sock_offset(member: str) -> int:
    """Byte offset of a ``struct tcp_sock`` member in the running kernel, from its BTF."""
    from ..btf import Struct, vmlinux  # deferred: the BTF parser is only needed here

    found = vmlinux().by_name("tcp_sock", Struct)
    assert isinstance(found, Struct)
    for m in found.members:
        if m.name == member:
            if m.offset % 8 or m.bitfield_size:
                raise ValueError(f"tcp_sock.{member} is a bitfield")
            return m.offset // 8
    raise LookupError(f"this kernel's struct tcp_sock has no member {member!r}")


def _notify(a: Assembler, events_fd: int, kind: int, label: str) -> None:
    """Emit ``{cookie, kind}`` (cookie at fp-8) into the ring buffer; on success mark it in
    ``notified`` so it is sent once per change of state (a full ring retries on the next skb)."""
    a.ldx(W, R1, R7, _off("notified")).jset(R1, kind, label)
    a.st(DW, FP, -24, kind).ldx(DW, R1, FP, -8).stx(DW, FP, R1, -32)
    a.ld_map_fd(R1, events_fd).mov64(R2, FP).add64(R2, -32).mov64(R3, 16).mov64(R4, 0)
    a.call(Helper.ringbuf_output)
    a.jne(R0, 0, label)
    a.ldx(W, R1, R7, _off("notified")).or32(R1, kind).stx(W, R7, R1, _off("notified"))
    a.label(label)


def splice_bounded_verdict(targets: Any, flows: Any, forwarded: Any, events: Any, *, queue_bytes: int,
                           pass_bytes: int, ring: int = RING, pressure_bytes: int | None = None) -> Program:
    """SK_SKB verdict of the bounded splice (see the module docstring); attach as ``SK_SKB_VERDICT``.

    ``targets``: SOCKHASH by cookie (redirect targets); ``flows``: HASH cookie -> ``SpliceFlow``;
    ``forwarded``: HASH cookie -> u64 passed bytes user space has read; ``events``: RINGBUF.
    ``queue_bytes``: bytes that may wait in a target's psock queue; ``ring``: skbs that may wait
    there (a power of two up to ``RING``); ``pass_bytes``: bytes that may wait for user space;
    ``pressure_bytes`` (default half of ``queue_bytes``): past it, ``EVENT_PRESSURE`` tells user
    space, which may take the direction over before the bound is reached.
    """
    pressure_bytes = queue_bytes // 2 if pressure_bytes is None else pressure_bytes
    if isinstance(ring, bool) or not isinstance(ring, int) or not 0 < ring <= RING or ring & (ring - 1):
        raise ValueError(f"ring must be a power of two between 1 and {RING}, not {ring!r}")
    for name, value in (("queue_bytes", queue_bytes), ("pass_bytes", pass_bytes),
                        ("pressure_bytes", pressure_bytes or 1)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < (1 << 30):
            raise ValueError(f"{name} must be a positive int below 1 GiB, not {value!r}")
    targets_fd, targets_type, targets_key = _map(targets, "targets")
    _need(targets_type, (MapType.SOCKHASH,), "targets")
    flows_fd, flows_type, flows_key = _map(flows, "flows")
    _need(flows_type, (MapType.HASH,), "flows")
    forwarded_fd, forwarded_type, forwarded_key = _map(forwarded, "forwarded")
    _need(forwarded_type, (MapType.HASH,), "forwarded")
    events_fd, events_type, _ = _map(events, "events")
    _need(events_type, (MapType.RINGBUF,), "events")
    if (targets_key, flows_key, forwarded_key) != (8, 8, 8):
        raise ValueError("the splice maps are keyed by 8-byte socket cookies")
    write_seq = tcp_sock_offset("write_seq")

    a = Assembler()
    # r6 = skb, r8 = skb->len, fp-8 = cookie, r7 = flow
    a.mov64(R6, R1).ldx(W, R8, R6, _SKB_LEN)
    a.call(Helper.get_socket_cookie).stx(DW, FP, R0, -8)
    a.ld_map_fd(R1, flows_fd).mov64(R2, FP).add64(R2, -8).call(Helper.map_lookup_elem)
    a.jeq(R0, 0, "pass")
    a.mov64(R7, R0)
    a.ldx(W, R1, R7, _off("flags"))
    a.jset(R1, OVERFLOW, "drop")
    a.jset(R1, PASSING, "passing")

    # The target's write_seq: what its TCP has taken (from the psock queue or from user space).
    a.label("redirect")
    a.ld_map_fd(R1, targets_fd).mov64(R2, R7).add64(R2, _off("peer")).call(Helper.map_lookup_elem)
    a.jeq(R0, 0, "start_passing")
    a.mov64(R9, R0).mov64(R1, R0).call(Helper.skc_to_tcp_sock)
    a.mov64(R2, -1).jeq(R0, 0, "release")  # -1: no tcp_sock; a write_seq is a u32
    a.ldx(W, R2, R0, write_seq)
    a.label("release").stx(DW, FP, R2, -16).mov64(R1, R9).call(Helper.sk_release)
    a.ldx(DW, R0, FP, -16).jeq(R0, -1, "start_passing")
    a.ldx(W, R1, FP, -16)
    a.ldx(W, R2, R7, _off("flags")).jset(R2, BASED, "based")
    a.stx(W, R7, R1, _off("base")).or32(R2, BASED).stx(W, R7, R2, _off("flags"))
    a.label("based")
    # r1 = written = write_seq - base; r4 = sent = redirected + passed (mod 2**32 from here)
    a.ldx(W, R3, R7, _off("base")).sub32(R1, R3)
    a.ldx(DW, R4, R7, _off("redirected")).ldx(DW, R5, R7, _off("passed")).add64(R4, R5)
    a.mov32(R5, R4).sub32(R5, R1).add32(R5, R8)
    a.jgt32(R5, queue_bytes, "start_passing")
    # past pressure_bytes, say so (once; r1 and r4 wait on the stack meanwhile)
    a.jle32(R5, pressure_bytes, "calm")
    a.stx(DW, FP, R1, -40).stx(DW, FP, R4, -48)
    _notify(a, events_fd, EVENT_PRESSURE, "pressure_told")
    a.ldx(DW, R1, FP, -40).ldx(DW, R4, FP, -48)
    a.label("calm")
    # ring[head]: where the skb redirected `ring` skbs ago ends; still unwritten -> `ring` skbs wait
    a.ldx(W, R2, R7, _off("head")).and32(R2, ring - 1).lsh64(R2, 2)
    a.mov64(R3, R7).add64(R3, _off("ring")).add64(R3, R2)
    a.ldx(W, R5, R3, 0).sub32(R5, R1)
    a.jsgt32(R5, 0, "start_passing")
    a.mov32(R5, R4).add32(R5, R8).stx(W, R3, R5, 0)
    a.ldx(W, R2, R7, _off("head")).add32(R2, 1).stx(W, R7, R2, _off("head"))
    a.ldx(DW, R4, R7, _off("redirected")).add64(R4, R8).stx(DW, R7, R4, _off("redirected"))
    a.mov64(R1, R6).ld_map_fd(R2, targets_fd).mov64(R3, R7).add64(R3, _off("peer")).mov64(R4, 0)
    a.call(Helper.sk_redirect_hash)
    a.exit()

    # Passing, for good: user space takes the direction over (it takes the socket out of the map).
    a.label("start_passing")
    a.ldx(W, R2, R7, _off("flags")).or32(R2, PASSING).stx(W, R7, R2, _off("flags"))
    a.label("passing")
    a.ld_map_fd(R1, forwarded_fd).mov64(R2, FP).add64(R2, -8).call(Helper.map_lookup_elem)
    a.mov64(R3, 0).jeq(R0, 0, "unforwarded")
    a.ldx(DW, R3, R0, 0)
    # r3 = forwarded: passed - forwarded + len must stay within pass_bytes
    a.label("unforwarded")
    a.ldx(DW, R4, R7, _off("passed")).mov64(R5, R4).sub64(R5, R3).add64(R5, R8)
    a.jgt(R5, pass_bytes, "overflow")
    a.add64(R4, R8).stx(DW, R7, R4, _off("passed"))
    _notify(a, events_fd, EVENT_PASSING, "passed")
    a.label("pass").mov64(R0, SK_PASS).exit()

    a.label("overflow")
    a.ldx(W, R2, R7, _off("flags")).or32(R2, OVERFLOW).stx(W, R7, R2, _off("flags"))
    a.label("drop")
    _notify(a, events_fd, EVENT_OVERFLOW, "dropped")
    a.mov64(R0, SK_DROP).exit()
    return Program.load(ProgramSpec(ProgramType.SK_SKB, a, name="splice_bounded"))
