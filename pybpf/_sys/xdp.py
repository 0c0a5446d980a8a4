"""AF_XDP at the kernel's edge: constants and structs of ``include/uapi/linux/if_xdp.h``, the
socket calls Python's ``socket`` module cannot make for an unknown family (``bind``), and the
queue counts of an interface, asked of the caller's network namespace.

Values checked against the 6.1 uapi header and the 6.18 kernel's BTF.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import struct
from ctypes import c_uint16, c_uint32, c_uint64

from .libc import libc

AF_XDP = 44
SOL_XDP = 283

# setsockopt/getsockopt names (SOL_XDP)
XDP_MMAP_OFFSETS = 1
XDP_RX_RING = 2
XDP_TX_RING = 3
XDP_UMEM_REG = 4
XDP_UMEM_FILL_RING = 5
XDP_UMEM_COMPLETION_RING = 6
XDP_STATISTICS = 7
XDP_OPTIONS = 8
XDP_MAX_TX_SKB_BUDGET = 9
"""Linux 6.17+: descriptors one copy-mode ``sendto`` may transmit (32 .. TX ring size; default 32)."""

# sockaddr_xdp.sxdp_flags
XDP_SHARED_UMEM = 1 << 0
XDP_COPY = 1 << 1
XDP_ZEROCOPY = 1 << 2
XDP_USE_NEED_WAKEUP = 1 << 3
XDP_USE_SG = 1 << 4

XDP_RING_NEED_WAKEUP = 1 << 0
"""Bit of a ring's ``flags`` word: the kernel waits for a syscall before it uses this ring again."""
XDP_OPTIONS_ZEROCOPY = 1 << 0
XDP_UMEM_UNALIGNED_CHUNK_FLAG = 1 << 0
XDP_PKT_CONTD = 1 << 0
"""``xdp_desc.options``: the packet continues in the next descriptor (multi-buffer)."""
XDP_PACKET_HEADROOM = 256
"""Bytes the kernel keeps in front of every received frame's data (after the UMEM headroom)."""

# mmap offsets of the rings
XDP_PGOFF_RX_RING = 0
XDP_PGOFF_TX_RING = 0x80000000
XDP_UMEM_PGOFF_FILL_RING = 0x100000000
XDP_UMEM_PGOFF_COMPLETION_RING = 0x180000000


class SockaddrXdp(ctypes.Structure):
    """``struct sockaddr_xdp``: where ``bind`` attaches the socket."""

    _fields_ = [
        ("sxdp_family", c_uint16),
        ("sxdp_flags", c_uint16),
        ("sxdp_ifindex", c_uint32),
        ("sxdp_queue_id", c_uint32),
        ("sxdp_shared_umem_fd", c_uint32),
    ]


class UmemReg(ctypes.Structure):
    """``struct xdp_umem_reg`` (6.8+ layout: the old tail padding is ``tx_metadata_len``, kept zero)."""

    _fields_ = [
        ("addr", c_uint64),
        ("len", c_uint64),
        ("chunk_size", c_uint32),
        ("headroom", c_uint32),
        ("flags", c_uint32),
        ("tx_metadata_len", c_uint32),
    ]


class RingOffset(ctypes.Structure):
    """``struct xdp_ring_offset``: byte offsets inside one ring's mapping."""

    _fields_ = [("producer", c_uint64), ("consumer", c_uint64), ("desc", c_uint64), ("flags", c_uint64)]


class MmapOffsets(ctypes.Structure):
    """``struct xdp_mmap_offsets``: the layout of the four rings."""

    _fields_ = [("rx", RingOffset), ("tx", RingOffset), ("fr", RingOffset), ("cr", RingOffset)]


_RING_OFFSET_V1 = 3 * 8
"""Before Linux 5.4 a ring's offsets had no ``flags`` (the flags word follows ``consumer``)."""


def mmap_offsets(sock: socket.socket) -> MmapOffsets:
    """``getsockopt(XDP_MMAP_OFFSETS)`` of an AF_XDP socket, in either layout."""
    return parse_mmap_offsets(sock.getsockopt(SOL_XDP, XDP_MMAP_OFFSETS, ctypes.sizeof(MmapOffsets)))


def parse_mmap_offsets(raw: bytes) -> MmapOffsets:
    """Decode what ``XDP_MMAP_OFFSETS`` answered; the pre-5.4 layout (no flags word) is widened as
    libbpf does, pointing ``flags`` at the (always zero) word after ``consumer``."""
    if len(raw) == ctypes.sizeof(MmapOffsets):
        return MmapOffsets.from_buffer_copy(raw)
    if len(raw) != 4 * _RING_OFFSET_V1:
        raise OSError(errno.EPROTO, f"XDP_MMAP_OFFSETS answered {len(raw)} bytes, a layout pybpf does not know")
    rings = [struct.unpack_from("=3Q", raw, i * _RING_OFFSET_V1) for i in range(4)]
    return MmapOffsets(*(RingOffset(prod, cons, desc, cons + 4) for prod, cons, desc in rings))


class Statistics(ctypes.Structure):
    """``struct xdp_statistics``."""

    _fields_ = [
        ("rx_dropped", c_uint64),
        ("rx_invalid_descs", c_uint64),
        ("tx_invalid_descs", c_uint64),
        ("rx_ring_full", c_uint64),
        ("rx_fill_ring_empty_descs", c_uint64),
        ("tx_ring_empty_descs", c_uint64),
    ]


class XdpOptions(ctypes.Structure):
    """``struct xdp_options``: ``XDP_OPTIONS_ZEROCOPY`` when the socket runs zero-copy."""

    _fields_ = [("flags", c_uint32)]


class XdpDesc(ctypes.Structure):
    """``struct xdp_desc``: an RX/TX ring entry (16 bytes); FILL/COMPLETION entries are a bare u64."""

    _fields_ = [("addr", c_uint64), ("len", c_uint32), ("options", c_uint32)]


XDP_DESC_SIZE = ctypes.sizeof(XdpDesc)

_bind = libc.bind
_bind.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint32)


def bind(fd: int, ifindex: int, queue_id: int, flags: int, shared_umem_fd: int = 0) -> None:
    """``bind(2)`` an AF_XDP socket to an interface queue; raises ``OSError`` with the errno."""
    addr = SockaddrXdp(AF_XDP, flags, ifindex, queue_id, shared_umem_fd)
    if _bind(fd, ctypes.addressof(addr), ctypes.sizeof(addr)) < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def getsockopt_struct(sock: socket.socket, name: int, struct_type: type[ctypes.Structure]) -> ctypes.Structure:
    """``getsockopt(SOL_XDP, name)`` decoded into a fresh ``struct_type``."""
    raw = sock.getsockopt(SOL_XDP, name, ctypes.sizeof(struct_type))
    out = struct_type()
    ctypes.memmove(ctypes.addressof(out), raw, min(len(raw), ctypes.sizeof(out)))
    return out


_SIOCETHTOOL = 0x8946
_ETHTOOL_GCHANNELS = 0x3C
_IFNAMSIZ = 16


def queue_counts(ifname: str) -> tuple[int, int] | None:
    """``(rx, tx)`` queues in use on ``ifname``, or None when the driver does not say.

    Asks ethtool's channel counts through the caller's network namespace (``/sys/class/net``
    shows the namespace that mounted sysfs, not the caller's), then falls back to sysfs.
    """
    channels = (c_uint32 * 9)(_ETHTOOL_GCHANNELS)
    ifreq = struct.pack(f"{_IFNAMSIZ}sP16x", ifname.encode(), ctypes.addressof(channels))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            fcntl.ioctl(probe.fileno(), _SIOCETHTOOL, ifreq)
        except OSError as err:
            if err.errno not in (errno.EOPNOTSUPP, errno.ENODEV, errno.EPERM):
                raise
            return _sysfs_queue_counts(ifname)
    _, _, _, _, _, rx, tx, _, combined = channels
    if rx + combined == 0 and tx + combined == 0:
        return _sysfs_queue_counts(ifname)
    return rx + combined, tx + combined


def _sysfs_queue_counts(ifname: str) -> tuple[int, int] | None:
    try:
        names = os.listdir(f"/sys/class/net/{ifname}/queues")
        with open(f"/sys/class/net/{ifname}/ifindex") as f:
            same_device = int(f.read()) == socket.if_nametoindex(ifname)
    except OSError:
        return None
    if not same_device:  # sysfs shows another namespace's device of that name
        return None
    return sum(n.startswith("rx-") for n in names), sum(n.startswith("tx-") for n in names)
