"""Raw probes: tiny maps, two-instruction programs and BTF blobs that ask the kernel whether it has
a mechanism. Each returns 0 when it has, else the errno that says it has not. They call the
current door directly, never pybpf's own checks (``pybpf.features`` holds the matrix of them)."""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..errors import ENOTSUPP
from .attrs import BtfLoadAttr, LinkCreateAttr, MapCreateAttr, ProgAttachAttr, ProgLoadAttr, ProgQueryAttr
from .constants import AttachType, Cmd, MapType, ProgramType
from .elem import batch_attr
from .kernel import kernel_version
from .syscall import bpf_errno
from .traits import MAP_TYPES, PROGRAM_TYPES

Probe = Callable[[], int]
"""A probe returns 0 when the kernel has the feature, else the errno that says it does not."""

EXIT_0 = (0xB7, 0x95)
"""``mov r0, 0 ; exit`` as instruction words."""
_EXIT_1 = (0xB7 | 1 << 32, 0x95)  # mov r0, 1 (SK_PASS) ; exit
_HELPER_REFUSED = (b"invalid func ", b"unknown func ", b"program of this type cannot use helper")


def _close(fd: int) -> int:
    if fd >= 0:
        os.close(fd)
        return 0
    return -fd


@contextmanager
def _fds(*fds: int) -> Iterator[tuple[int, ...]]:
    """Close every non-negative fd on the way out."""
    try:
        yield fds
    finally:
        for fd in fds:
            if fd >= 0:
                os.close(fd)


def map_create(map_type: MapType, flags: int = 0) -> Probe:
    """Create the smallest map of ``map_type`` (as libbpf's probe does)."""
    def probe() -> int:
        traits = MAP_TYPES[map_type]
        fields = {"key_size": 4, "value_size": 4, "max_entries": 1, **traits.probe}
        fields["map_flags"] = fields.get("map_flags", 0) | flags
        attr = MapCreateAttr(map_type=map_type, **fields)
        btf_fd = inner_fd = -1
        try:
            if traits.needs_btf:
                btf_fd = storage_btf()
                if btf_fd < 0:
                    return -btf_fd
                attr.btf_fd, attr.btf_key_type_id, attr.btf_value_type_id = btf_fd, 1, 3
            if map_type in (MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS):
                inner_fd = _small_map(MapType.HASH)
                if inner_fd < 0:
                    return -inner_fd
                attr.inner_map_fd = inner_fd
            if map_type == MapType.STRUCT_OPS:  # a bogus BTF id: ENOTSUPP means the type exists
                attr.btf_vmlinux_value_type_id = 1
                code = _close(bpf_errno(Cmd.MAP_CREATE, attr))
                return 0 if code == ENOTSUPP else code or 0
            return _close(bpf_errno(Cmd.MAP_CREATE, attr))
        finally:
            for fd in (btf_fd, inner_fd):
                if fd >= 0:
                    os.close(fd)
    return probe


def _small_map(map_type: MapType, key_size: int = 4, value_size: int = 4) -> int:
    return bpf_errno(Cmd.MAP_CREATE, MapCreateAttr(map_type=map_type, key_size=key_size, value_size=value_size, max_entries=1))


def storage_btf() -> int:
    """Load libbpf's probe BTF for local storage maps (int; struct bpf_spin_lock; struct val); fd or -errno."""
    strings = b"\0bpf_spin_lock\0val\0cnt\0l\0"
    words = [
        0, 0x01000000, 4, 0x01000020,  # [1] int: signed, 32 bits
        1, 0x04000001, 4, 15, 1, 0,  # [2] struct bpf_spin_lock { int val; }
        15, 0x04000002, 8, 19, 1, 0, 23, 2, 32,  # [3] struct val { int cnt; struct bpf_spin_lock l; }
    ]
    types = b"".join(w.to_bytes(4, sys.byteorder) for w in words)
    header = (0xEB9F).to_bytes(2, sys.byteorder) + bytes([1, 0]) + b"".join(
        v.to_bytes(4, sys.byteorder) for v in (24, 0, len(types), len(types), len(strings)))
    blob = ctypes.create_string_buffer(header + types + strings, len(header) + len(types) + len(strings))
    return bpf_errno(Cmd.BTF_LOAD, BtfLoadAttr(btf=ctypes.addressof(blob), btf_size=ctypes.sizeof(blob)))


def load(prog_type: int, insns: tuple[int, ...] | list[int], *, attach: int = 0, btf_id: int = 0, flags: int = 0,
         log: ctypes.Array[ctypes.c_char] | None = None) -> int:
    """Load a tiny program; its fd, or -errno."""
    code = (ctypes.c_uint64 * len(insns))(*insns)
    license = ctypes.create_string_buffer(b"GPL")
    attr = ProgLoadAttr(prog_type=prog_type, insn_cnt=len(insns), insns=ctypes.addressof(code),
                        license=ctypes.addressof(license), expected_attach_type=attach, attach_btf_id=btf_id,
                        prog_flags=flags)
    if prog_type == ProgramType.KPROBE:
        major, minor = kernel_version()
        attr.kern_version = major << 16 | minor << 8
    if log is not None:
        attr.log_level, attr.log_size, attr.log_buf = 1, ctypes.sizeof(log), ctypes.addressof(log)
    return bpf_errno(Cmd.PROG_LOAD, attr)


def _load_flags(prog_type: ProgramType) -> int:
    return 1 << 4 if prog_type == ProgramType.SYSCALL else 0  # BPF_F_SLEEPABLE: syscall programs must be


def program_load(prog_type: ProgramType) -> Probe:
    """Load ``r0 = 0; exit`` as ``prog_type`` (libbpf's probe, with its expected errors for types
    that load only against a BTF target)."""
    def probe() -> int:
        traits = PROGRAM_TYPES[prog_type]
        attach = int(traits.load_attach_type or 0)
        if prog_type in (ProgramType.TRACING, ProgramType.LSM, ProgramType.EXT):
            log = ctypes.create_string_buffer(4096)
            expect = b"Cannot replace kernel functions" if prog_type == ProgramType.EXT else b"attach_btf_id 1 is not a function"
            if prog_type == ProgramType.LSM:
                attach = AttachType.MODIFY_RETURN
            code = _close(load(prog_type, EXIT_0, attach=attach, btf_id=1, log=log))
            return 0 if code == errno.EINVAL and expect in log.value else code or errno.EINVAL
        if prog_type == ProgramType.STRUCT_OPS:
            code = _close(load(prog_type, EXIT_0))
            return 0 if code == ENOTSUPP else code or 0
        code = _close(load(prog_type, EXIT_0, attach=attach, flags=_load_flags(prog_type)))
        return code if code in (errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM, errno.EACCES) else 0
    return probe


def helper(prog_type: ProgramType, helper_id: int) -> Probe:
    """A program of ``prog_type`` calling helper ``helper_id`` (bpftool's probe: the verifier's log
    must not refuse the call). Types that load only against a BTF target are not probed."""
    def probe() -> int:
        if PROGRAM_TYPES[prog_type].btf_target:
            return errno.EOPNOTSUPP
        log = ctypes.create_string_buffer(4096)
        attach = int(PROGRAM_TYPES[prog_type].load_attach_type or 0)
        code = _close(load(prog_type, (0x85 | helper_id << 32, 0x95), attach=attach, flags=_load_flags(prog_type), log=log))
        if any(words in log.value for words in _HELPER_REFUSED):
            return errno.EINVAL
        return code if code in (errno.EPERM, errno.EACCES) and not log.value else 0
    return probe


def batch_ops(map_type: MapType = MapType.HASH) -> Probe:
    """``BPF_MAP_UPDATE_BATCH`` and ``BPF_MAP_LOOKUP_BATCH`` on a one-element map of ``map_type``."""
    def probe() -> int:
        with _fds(_small_map(map_type)) as (fd,):
            if fd < 0:
                return -fd
            key, value, token = ctypes.c_uint32(0), (ctypes.c_uint64 * 4096)(), ctypes.c_uint64()  # per-CPU: room for 4096 CPUs
            ret = bpf_errno(Cmd.MAP_UPDATE_BATCH, batch_attr(fd, ctypes.addressof(key), ctypes.addressof(value), 1))
            if ret < 0:
                return -ret
            ret = bpf_errno(Cmd.MAP_LOOKUP_BATCH, batch_attr(fd, ctypes.addressof(key), ctypes.addressof(value), 1,
                                                             out_batch=ctypes.addressof(token)))
            return 0 if ret >= 0 or -ret == errno.ENOENT else -ret
    return probe


def hash_lookup_and_delete() -> int:
    """``BPF_MAP_LOOKUP_AND_DELETE_ELEM`` on a HASH map (Linux 5.14; queues and stacks had it first)."""
    with _fds(_small_map(MapType.HASH)) as (fd,):
        if fd < 0:
            return -fd
        key, value = ctypes.c_uint32(0), ctypes.c_uint32(0)
        from .attrs import MapElemAttr

        attr = MapElemAttr(map_fd=fd, key=ctypes.addressof(key), value=ctypes.addressof(value))
        ret = bpf_errno(Cmd.MAP_UPDATE_ELEM, attr)
        if ret < 0:
            return -ret
        ret = bpf_errno(Cmd.MAP_LOOKUP_AND_DELETE_ELEM, attr)
        return 0 if ret >= 0 else -ret


def _socket_program(prog_type: ProgramType) -> int:
    return load(prog_type, _EXIT_1)


def sockmap_attach(attach_type: AttachType) -> Probe:
    """``BPF_PROG_ATTACH`` of a program to a SOCKMAP at ``attach_type`` (and detach again)."""
    def probe() -> int:
        prog_type = ProgramType.SK_MSG if attach_type == AttachType.SK_MSG_VERDICT else ProgramType.SK_SKB
        with _fds(_small_map(MapType.SOCKMAP), _socket_program(prog_type)) as (map_fd, prog_fd):
            if map_fd < 0 or prog_fd < 0:
                return -min(map_fd, prog_fd)
            attr = ProgAttachAttr(target_fd=map_fd, attach_bpf_fd=prog_fd, attach_type=attach_type)
            ret = bpf_errno(Cmd.PROG_ATTACH, attr)
            if ret < 0:
                return -ret
            bpf_errno(Cmd.PROG_DETACH, attr)
            return 0
    return probe


def sockmap_query() -> int:
    """``BPF_PROG_QUERY`` of a SOCKMAP's programs (EINVAL before the kernel learned it)."""
    with _fds(_small_map(MapType.SOCKMAP)) as (map_fd,):
        if map_fd < 0:
            return -map_fd
        ids = (ctypes.c_uint32 * 1)()
        attr = ProgQueryAttr(target_fd=map_fd, attach_type=AttachType.SK_MSG_VERDICT, prog_ids=ctypes.addressof(ids),
                             prog_cnt=1)
        ret = bpf_errno(Cmd.PROG_QUERY, attr)
        return 0 if ret >= 0 else -ret


def sockmap_link() -> int:
    """``BPF_LINK_CREATE`` of a program on a SOCKMAP: EINVAL (unknown attach type for links) before 6.10."""
    with _fds(_small_map(MapType.SOCKMAP), _socket_program(ProgramType.SK_MSG)) as (map_fd, prog_fd):
        if map_fd < 0 or prog_fd < 0:
            return -min(map_fd, prog_fd)
        attr = LinkCreateAttr(prog_fd=prog_fd, target_fd=map_fd, attach_type=AttachType.SK_MSG_VERDICT)
        return _close(bpf_errno(Cmd.LINK_CREATE, attr))


def memcg_accounting() -> int:
    """Whether BPF memory is charged to the memory cgroup (not RLIMIT_MEMLOCK)."""
    from .rlimit import memcg_accounting as accounted

    return 0 if accounted() else errno.EPERM
