"""What the kernel lacks or refuses, decided WITHOUT the code under test: bpftool's ``feature
probe`` and raw syscalls with structs packed here. A test may skip only through ``skip_if``
(or ``skip``): under PYBPF_REQUIRE_KERNEL=1, conftest fails every other skip.

Each reason names the mechanism and what the probe saw ("this kernel (6.18) refuses ARENA maps
(bpftool feature probe)", "sockmap links need Linux 6.10; this is 6.1 (BPF_LINK_CREATE: EINVAL)").
"""

from __future__ import annotations

import ctypes
import errno
import functools
import json
import os
import platform
import re
import shutil
import struct
import subprocess
from typing import NoReturn

import pytest

REASONS: set[str] = set()
"""Every skip reason a probe produced in this session: the only skips conftest lets pass."""

_libc = ctypes.CDLL(None, use_errno=True)
_NR_BPF = {"x86_64": 321, "aarch64": 280}[platform.machine()]
_MAP_CREATE, _PROG_LOAD, _LINK_CREATE = 0, 5, 28


def release() -> tuple[int, int]:
    """The running kernel's (major, minor)."""
    m = re.match(r"(\d+)\.(\d+)", os.uname().release)
    assert m is not None
    return int(m[1]), int(m[2])


def running() -> str:
    return "{}.{}".format(*release())


def skip(reason: str) -> NoReturn:
    """Skip the current test because the kernel lacks or refuses a mechanism (``reason`` says which)."""
    REASONS.add(reason)
    pytest.skip(reason)


def skip_if(reason: str | None) -> None:
    """Skip with ``reason`` when a probe found one."""
    if reason:
        skip(reason)


def _bpf(cmd: int, attr: bytes) -> tuple[int, int]:
    buf = ctypes.create_string_buffer(attr, len(attr))
    fd = _libc.syscall(_NR_BPF, cmd, buf, len(attr))
    if fd < 0:
        return -1, ctypes.get_errno()
    return fd, 0


@functools.cache
def bpftool_probe() -> dict[str, dict[str, object]]:
    """``bpftool feature probe kernel -j`` (empty when bpftool is missing)."""
    tool = shutil.which("bpftool") or "/usr/sbin/bpftool"
    if not os.path.exists(tool):
        return {}
    out = subprocess.run([tool, "feature", "probe", "kernel", "-j"], capture_output=True, text=True, timeout=120)
    return json.loads(out.stdout) if out.returncode == 0 else {}


_RAW_MAP_PROBES = {  # types this bpftool does not know: (type, key, value, max_entries, flags), as libbpf probes
    "CGRP_STORAGE": (32, 4, 8, 0, 1),  # with libbpf's probe BTF (int; bpf_spin_lock; struct val)
    "ARENA": (33, 0, 0, 1, 1 << 10),
}


def _probe_btf() -> int:
    """libbpf's BTF for probing storage maps, loaded raw; its fd (or -1)."""
    strings = b"\0bpf_spin_lock\0val\0cnt\0l\0"
    types = struct.pack("=19I", 0, 0x01000000, 4, 0x01000020, 1, 0x04000001, 4, 15, 1, 0,
                        15, 0x04000002, 8, 19, 1, 0, 23, 2, 32)
    blob = struct.pack("=HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings)) + types + strings
    buf = ctypes.create_string_buffer(blob, len(blob))
    fd, _ = _bpf(18, struct.pack("=QQIII", ctypes.addressof(buf), 0, len(blob), 0, 0) + bytes(8))  # BPF_BTF_LOAD
    return fd


def map_type(name: str) -> str | None:
    """Why maps of type ``name`` (e.g. "ARENA") cannot be created here, or None."""
    found = bpftool_probe().get("map_types", {}).get(f"have_{name.lower()}_map_type")
    if found is None and _RAW_MAP_PROBES.get(name):
        attr = struct.pack("=5I", *_RAW_MAP_PROBES[name]) + bytes(60)
        btf_fd = _probe_btf() if name == "CGRP_STORAGE" else -1
        if btf_fd >= 0:  # map_name, numa, ifindex before btf_fd (offset 48), key id 1, value id 3
            attr = attr[:48] + struct.pack("=III", btf_fd, 1, 3) + attr[60:]
        fd, code = _bpf(_MAP_CREATE, attr)
        if btf_fd >= 0:
            os.close(btf_fd)
        if fd >= 0:
            os.close(fd)
            return None
        return f"this kernel ({running()}) lacks or refuses {name} maps (BPF_MAP_CREATE: {errno.errorcode.get(code, code)})"
    if found is None or found:
        return None
    return f"this kernel ({running()}) lacks or refuses {name} maps (bpftool feature probe)"


def program_type(name: str) -> str | None:
    """Why programs of type ``name`` cannot be loaded here, or None."""
    found = bpftool_probe().get("program_types", {}).get(f"have_{name.lower()}_prog_type")
    if found is None or found:
        return None
    return f"this kernel ({running()}) lacks or refuses {name} programs (bpftool feature probe)"


@functools.cache
def sockmap_links() -> str | None:
    """Why BPF_LINK_CREATE on a SOCKMAP fails here (Linux 6.10+), or None."""
    map_fd, code = _bpf(_MAP_CREATE, struct.pack("=5I", 15, 4, 4, 1, 0) + bytes(120))  # SOCKMAP
    if map_fd < 0:
        return f"this kernel ({running()}) refuses SOCKMAP maps (errno {code})"
    insns = struct.pack("=BBhi", 0xB7, 0, 0, 1) + struct.pack("=BBhi", 0x95, 0, 0, 0)  # r0 = 1; exit
    code_buf, lic = ctypes.create_string_buffer(insns, len(insns)), ctypes.create_string_buffer(b"GPL")
    attr = struct.pack("=IIQQ", 16, 2, ctypes.addressof(code_buf), ctypes.addressof(lic)) + bytes(120)  # SK_MSG
    prog_fd, code = _bpf(_PROG_LOAD, attr)
    try:
        if prog_fd < 0:
            return f"this kernel ({running()}) refuses SK_MSG programs (errno {code})"
        link_fd, code = _bpf(_LINK_CREATE, struct.pack("=III", prog_fd, map_fd, 7) + bytes(52))  # SK_MSG_VERDICT
        if link_fd >= 0:
            os.close(link_fd)
            return None
        return f"sockmap links need Linux 6.10; this is {running()} (BPF_LINK_CREATE: {errno.errorcode.get(code, code)})"
    finally:
        os.close(map_fd)
        if prog_fd >= 0:
            os.close(prog_fd)


_ATTACH = {"SK_SKB_STREAM_PARSER": 4, "SK_SKB_STREAM_VERDICT": 5, "SK_MSG_VERDICT": 7, "SK_SKB_VERDICT": 38}
_ATTACH_SINCE = {"SK_SKB_VERDICT": "5.13"}


def _sockmap_and_program(prog_type: int) -> tuple[int, int, str | None]:
    """A one-slot SOCKMAP and a ``return 1`` program of ``prog_type`` (fds, -1 and why on failure)."""
    map_fd, code = _bpf(_MAP_CREATE, struct.pack("=5I", 15, 4, 4, 1, 0) + bytes(120))
    if map_fd < 0:
        return -1, -1, f"this kernel ({running()}) refuses SOCKMAP maps (errno {code})"
    insns = struct.pack("=BBhi", 0xB7, 0, 0, 1) + struct.pack("=BBhi", 0x95, 0, 0, 0)
    code_buf, lic = ctypes.create_string_buffer(insns, len(insns)), ctypes.create_string_buffer(b"GPL")
    prog_fd, code = _bpf(_PROG_LOAD, struct.pack("=IIQQ", prog_type, 2, ctypes.addressof(code_buf), ctypes.addressof(lic))
                         + bytes(120))
    if prog_fd < 0:
        os.close(map_fd)
        return -1, -1, f"this kernel ({running()}) refuses program type {prog_type} (errno {code})"
    return map_fd, prog_fd, None


@functools.cache
def sockmap_attach(name: str) -> str | None:
    """Why ``BPF_PROG_ATTACH`` at attach type ``name`` (e.g. "SK_SKB_VERDICT") on a SOCKMAP fails here, or None."""
    map_fd, prog_fd, why = _sockmap_and_program(16 if name == "SK_MSG_VERDICT" else 14)
    if why:
        return why
    try:
        attr = struct.pack("=4I", map_fd, prog_fd, _ATTACH[name], 0) + bytes(24)
        ok, code = _bpf(8, attr)  # BPF_PROG_ATTACH
        if ok >= 0:
            _bpf(9, attr)  # BPF_PROG_DETACH
            return None
        since = _ATTACH_SINCE.get(name)
        needs = f"{name} attach needs Linux {since}; this is {running()}" if since else f"this kernel refuses {name}"
        return f"{needs} (BPF_PROG_ATTACH: {errno.errorcode.get(code, code)})"
    finally:
        os.close(map_fd)
        os.close(prog_fd)


@functools.cache
def sockmap_query() -> str | None:
    """Why ``BPF_PROG_QUERY`` of a SOCKMAP fails here (Linux 6.0+), or None."""
    map_fd, code = _bpf(_MAP_CREATE, struct.pack("=5I", 15, 4, 4, 1, 0) + bytes(120))
    if map_fd < 0:
        return f"this kernel ({running()}) refuses SOCKMAP maps (errno {code})"
    try:
        ids = (ctypes.c_uint32 * 1)()
        ret, code = _bpf(16, struct.pack("=4IQI", map_fd, 7, 0, 0, ctypes.addressof(ids), 1) + bytes(40))  # BPF_PROG_QUERY
        if ret >= 0:
            return None
        return f"queries of a socket map's programs need Linux 6.0; this is {running()} (BPF_PROG_QUERY: {errno.errorcode.get(code, code)})"
    finally:
        os.close(map_fd)


@functools.cache
def hash_lookup_and_delete() -> str | None:
    """Why ``BPF_MAP_LOOKUP_AND_DELETE_ELEM`` on a HASH map fails here (Linux 5.14+), or None."""
    fd, code = _bpf(_MAP_CREATE, struct.pack("=5I", 1, 4, 4, 1, 0) + bytes(60))
    if fd < 0:
        return f"this kernel ({running()}) refuses HASH maps (errno {code})"
    try:
        key, value = ctypes.c_uint32(7), ctypes.c_uint32(1)
        attr = struct.pack("=IIQQQ", fd, 0, ctypes.addressof(key), ctypes.addressof(value), 0)
        _bpf(2, attr)  # BPF_MAP_UPDATE_ELEM
        ret, code = _bpf(21, attr)  # BPF_MAP_LOOKUP_AND_DELETE_ELEM
        if ret >= 0:
            return None
        return f"lookup-and-delete on hash maps needs Linux 5.14; this is {running()} (errno {errno.errorcode.get(code, code)})"
    finally:
        os.close(fd)


@functools.cache
def bpftool_cgroup_query(cgroup: str) -> str | None:
    """Why bpftool (7.1) cannot list a cgroup's programs here, or None: its ``cgroup show`` asks
    BPF_PROG_QUERY for per-program attach flags (``query.prog_attach_flags``, Linux 6.0), which
    older kernels refuse with EINVAL for every attach type."""
    ids, flags = (ctypes.c_uint32 * 4)(), (ctypes.c_uint32 * 4)()
    fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
    try:
        attr = struct.pack("=IIIIQI4xQ", fd, 0, 0, 0, ctypes.addressof(ids), 4, ctypes.addressof(flags))
        _, code = _bpf(16, attr)  # BPF_PROG_QUERY, CGROUP_INET_INGRESS
    finally:
        os.close(fd)
    if code == 0:
        return None
    return (f"this kernel ({running()}) refuses BPF_PROG_QUERY's prog_attach_flags (Linux 6.0; errno {code}), "
            "which bpftool's cgroup show needs")


def lpm_next_key_restarts() -> str | None:
    """Why a deleted key does not restart an LPM trie walk at its first key here (a bug of 5.10's
    trie_get_next_key, fixed later), or None."""
    fd, code = _bpf(_MAP_CREATE, struct.pack("=5I", 11, 8, 4, 8, 1) + bytes(60))  # LPM_TRIE, NO_PREALLOC
    if fd < 0:
        return f"this kernel ({running()}) refuses LPM_TRIE maps (errno {code})"
    try:
        keys = [struct.pack("=I4B", 32, 10, 0, 0, i) for i in range(3)]
        value = ctypes.c_uint32(0)
        bufs = [ctypes.create_string_buffer(k, 8) for k in keys]
        for buf in bufs:
            _bpf(2, struct.pack("=IIQQQ", fd, 0, ctypes.addressof(buf), ctypes.addressof(value), 0))
        first = ctypes.create_string_buffer(8)
        _bpf(4, struct.pack("=IIQQQ", fd, 0, 0, ctypes.addressof(first), 0))  # the first key
        second = ctypes.create_string_buffer(8)
        _bpf(4, struct.pack("=IIQQQ", fd, 0, ctypes.addressof(first), ctypes.addressof(second), 0))
        _bpf(3, struct.pack("=IIQQQ", fd, 0, ctypes.addressof(second), 0, 0))  # delete the cursor
        after = ctypes.create_string_buffer(8)
        _bpf(4, struct.pack("=IIQQQ", fd, 0, ctypes.addressof(second), ctypes.addressof(after), 0))
        if after.raw == first.raw:
            return None
        return f"this kernel's ({running()}) LPM trie does not restart a walk at its first key after the cursor was deleted"
    finally:
        os.close(fd)


def memory_release_lacks(version: tuple[int, ...], since: tuple[int, int], what: str) -> str | None:
    """Why the memory kernel of ``pybpf.testing``, following release ``version``, lacks ``what``
    (which arrived in ``since``), or None: the memory kernel's own version gate."""
    if tuple(version[:2]) >= since:
        return None
    return f"{what} need Linux {since[0]}.{since[1]}; the memory kernel follows {version[0]}.{version[1]}"


@functools.cache
def reuseport_migrate() -> str | None:
    """Why an SK_REUSEPORT program for ``SK_REUSEPORT_SELECT_OR_MIGRATE`` (Linux 5.14) is refused here, or
    None. It reads ``ctx->migrating_sk``: older kernels load the attach type but know no migration."""
    insns = (struct.pack("=BBhi", 0x79, 0x12, 48, 0)  # r2 = ctx->migrating_sk (struct sk_reuseport_md)
             + struct.pack("=BBhi", 0xB7, 0, 0, 1) + struct.pack("=BBhi", 0x95, 0, 0, 0))  # r0 = 1; exit
    code_buf, lic = ctypes.create_string_buffer(insns, len(insns)), ctypes.create_string_buffer(b"GPL")
    # prog_type SK_REUSEPORT (21), insn_cnt, insns, license, log_level/size/buf, kern_version, prog_flags,
    # prog_name, prog_ifindex, expected_attach_type SK_REUSEPORT_SELECT_OR_MIGRATE (40)
    attr = struct.pack("=IIQQIIQII16sII", 21, 3, ctypes.addressof(code_buf), ctypes.addressof(lic), 0, 0, 0, 0, 0,
                       b"", 0, 40) + bytes(56)
    fd, code = _bpf(_PROG_LOAD, attr)
    if fd >= 0:
        os.close(fd)
        return None
    return (f"SK_REUSEPORT_SELECT_OR_MIGRATE needs Linux 5.14; this is {running()} "
            f"(BPF_PROG_LOAD: {errno.errorcode.get(code, code)})")
