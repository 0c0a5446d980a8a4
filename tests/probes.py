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
    "CGRP_STORAGE": None,  # needs BTF: left to bpftool (newer ones know it)
    "ARENA": (33, 0, 0, 1, 1 << 10),
}


def map_type(name: str) -> str | None:
    """Why maps of type ``name`` (e.g. "ARENA") cannot be created here, or None."""
    found = bpftool_probe().get("map_types", {}).get(f"have_{name.lower()}_map_type")
    if found is None and _RAW_MAP_PROBES.get(name):
        fd, code = _bpf(_MAP_CREATE, struct.pack("=5I", *_RAW_MAP_PROBES[name]) + bytes(60))
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
