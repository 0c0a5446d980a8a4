"""What the running kernel can do: one matrix of feature -> (release that brought it, probe).

A probe asks the kernel directly (a tiny map, a two-instruction program, a BTF blob) through the
current door, never through pybpf's own checks, so "pybpf refuses this" never reads as "the kernel
lacks this". Answers are cached per door. Each map type, program type and helper is a feature;
so are named mechanisms (``"sockmap_link"``, ``"batch_ops"``, ...). ``require`` and ``lacking``
turn a missing feature into words: the release it needs, or that this kernel refuses it although
the process has the capabilities (configuration or policy).

Row names: ``map_type:HASH``, ``program_type:XDP``, ``helper:XDP:redirect_map`` and the names in
``FEATURES``. bpftool's ``feature probe`` is the reference for the probes.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import os
import sys
from collections.abc import Callable

from ._sys import caps, rlimit
from ._sys.attrs import BtfLoadAttr, MapCreateAttr, ProgLoadAttr
from ._sys.constants import AttachType, Cmd, MapFlags, MapType, ProgramType
from ._sys.kernel import kernel_has, kernel_version, release_text
from ._sys.syscall import bpf_errno, door
from ._sys.traits import ATTACH_TYPES, MAP_TYPES, PROGRAM_TYPES, Release
from .errors import ENOTSUPP, NotSupportedError

__all__ = [
    "FEATURES", "Feature", "have", "have_batch_ops", "have_helper", "have_map_flag", "have_map_type",
    "have_program_type", "kernel_has", "kernel_version", "lacking", "probe_all", "require",
]

Probe = Callable[[], int]
"""A probe returns 0 when the kernel has the feature, else the errno that says it does not."""


@dataclasses.dataclass(frozen=True)
class Feature:
    """One row: the release that brought the feature (None: not tied to one) and how to ask."""

    since: Release | None
    probe: Probe
    what: str
    """How messages name it: "SOCKHASH maps", "sockmap links"."""


# ---- raw probes -----------------------------------------------------------------------------

def _close(fd: int) -> int:
    if fd >= 0:
        os.close(fd)
        return 0
    return -fd


def _map_probe(map_type: MapType, flags: int = 0) -> Probe:
    def probe() -> int:
        traits = MAP_TYPES[map_type]
        fields = {"key_size": 4, "value_size": 4, "max_entries": 1, **traits.probe}
        fields["map_flags"] = fields.get("map_flags", 0) | flags
        attr = MapCreateAttr(map_type=map_type, **fields)
        btf_fd = inner_fd = -1
        try:
            if traits.needs_btf:
                btf_fd = _storage_btf()
                if btf_fd < 0:
                    return -btf_fd
                attr.btf_fd, attr.btf_key_type_id, attr.btf_value_type_id = btf_fd, 1, 3
            if map_type in (MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS):
                inner_fd = bpf_errno(Cmd.MAP_CREATE, MapCreateAttr(map_type=MapType.HASH, key_size=4, value_size=4,
                                                                     max_entries=1))
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


def _storage_btf() -> int:
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


_EXIT_0 = (0xB7, 0x95)  # mov r0, 0 ; exit


def _load(prog_type: int, insns: list[int], *, attach: int = 0, btf_id: int = 0, flags: int = 0,
          log: ctypes.Array[ctypes.c_char] | None = None) -> int:
    """Load a tiny program; 0 or the errno."""
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
    return _close(bpf_errno(Cmd.PROG_LOAD, attr))


def _program_probe(prog_type: ProgramType) -> Probe:
    def probe() -> int:
        traits = PROGRAM_TYPES[prog_type]
        attach = int(traits.load_attach_type or 0)
        if prog_type in (ProgramType.TRACING, ProgramType.LSM, ProgramType.EXT):
            log = ctypes.create_string_buffer(4096)
            expect = b"Cannot replace kernel functions" if prog_type == ProgramType.EXT else b"attach_btf_id 1 is not a function"
            if prog_type == ProgramType.LSM:
                attach = AttachType.MODIFY_RETURN
            code = _load(prog_type, list(_EXIT_0), attach=attach, btf_id=1, log=log)
            return 0 if code == errno.EINVAL and expect in log.value else code or errno.EINVAL
        if prog_type == ProgramType.STRUCT_OPS:
            code = _load(prog_type, list(_EXIT_0))
            return 0 if code == ENOTSUPP else code or 0
        flags = 1 << 4 if prog_type == ProgramType.SYSCALL else 0  # BPF_F_SLEEPABLE
        code = _load(prog_type, list(_EXIT_0), attach=attach, flags=flags)
        return code if code in (errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM, errno.EACCES) else 0
    return probe


def _batch_probe() -> int:
    fd = bpf_errno(Cmd.MAP_CREATE, MapCreateAttr(map_type=MapType.HASH, key_size=4, value_size=4, max_entries=1))
    if fd < 0:
        return -fd
    try:
        from ._sys.elem import batch_attr

        key, value = ctypes.c_uint32(0), ctypes.c_uint32(0)
        ret = bpf_errno(Cmd.MAP_UPDATE_BATCH, batch_attr(fd, ctypes.addressof(key), ctypes.addressof(value), 1))
        return -ret if ret < 0 else 0
    finally:
        os.close(fd)


def _sockmap_link_probe() -> int:
    """BPF_LINK_CREATE of a program on a SOCKMAP: EINVAL (unknown attach type for links) before 6.10."""
    map_fd = bpf_errno(Cmd.MAP_CREATE, MapCreateAttr(map_type=MapType.SOCKMAP, key_size=4, value_size=4, max_entries=1))
    if map_fd < 0:
        return -map_fd
    code = (ctypes.c_uint64 * 2)(0xB7 | 1 << 32, 0x95)  # mov r0, SK_PASS ; exit
    license = ctypes.create_string_buffer(b"GPL")
    prog_fd = bpf_errno(Cmd.PROG_LOAD, ProgLoadAttr(prog_type=ProgramType.SK_MSG, insn_cnt=2, insns=ctypes.addressof(code),
                                                    license=ctypes.addressof(license)))
    try:
        if prog_fd < 0:
            return -prog_fd
        from ._sys.attrs import LinkCreateAttr

        attr = LinkCreateAttr(prog_fd=prog_fd, target_fd=map_fd, attach_type=AttachType.SK_MSG_VERDICT)
        return _close(bpf_errno(Cmd.LINK_CREATE, attr))
    finally:
        os.close(map_fd)
        if prog_fd >= 0:
            os.close(prog_fd)


def _memcg_probe() -> int:
    from ._sys.rlimit import memcg_accounting

    return 0 if memcg_accounting() else errno.EPERM


# ---- the matrix -----------------------------------------------------------------------------

FEATURES: dict[str, Feature] = {
    **{f"map_type:{t.name}": Feature(tr.since, _map_probe(t), f"{t.name} maps") for t, tr in MAP_TYPES.items()},
    **{f"program_type:{t.name}": Feature(tr.since, _program_probe(t), f"{t.name} programs")
       for t, tr in PROGRAM_TYPES.items()},
    "batch_ops": Feature((5, 6), _batch_probe, "batch map operations"),
    "mmapable_array": Feature((5, 5), _map_probe(MapType.ARRAY, MapFlags.MMAPABLE), "memory-mapped ARRAY maps"),
    "sockmap_link": Feature(ATTACH_TYPES[AttachType.SK_MSG_VERDICT].link_since, _sockmap_link_probe, "sockmap links"),
    "memcg_accounting": Feature((5, 11), _memcg_probe, "memory-cgroup accounting of BPF memory"),
}
"""Every feature pybpf can ask about. Other modules add rows with ``FEATURES[name] = Feature(...)``."""

_answers: dict[tuple[int, str], int] = {}


def _answer(name: str) -> int:
    """The feature's probe result (0: present, else an errno), cached per door."""
    key = (id(door()), name)
    if key not in _answers:
        try:
            feature = FEATURES[name]
        except KeyError:
            raise ValueError(f"unknown feature {name!r}") from None
        _answers[key] = feature.probe()
    return _answers[key]


def have(name: str) -> bool:
    """Whether the running kernel has the feature ``name`` (a row of ``FEATURES``)."""
    return _answer(name) == 0


def lacking(name: str, code: int = 0, what: str = "") -> str | None:
    """Why the kernel lacks feature ``name``, in words (None when it has it): the release that
    brought it, or that it refuses it although the process has the capabilities."""
    if name not in FEATURES or have(name):
        return None
    feature = FEATURES[name]
    what = what or feature.what
    running = release_text(kernel_version())
    if feature.since is not None and not kernel_has(feature.since):
        return f"{what} need Linux {release_text(feature.since)}; this is {running}"
    found = _answer(name)
    if found in (errno.EPERM, errno.EACCES):
        if not caps.can_bpf() or rlimit.refusal():
            return None  # the process is refused, not the feature: the error's hint says why
        return (f"this kernel ({running}) refuses {what} although the process has {', '.join(caps.names())} "
                f"(errno {found}: its configuration or a security policy)")
    return f"this kernel ({running}) lacks {what} (built without them, or refused: errno {found or code})"


def require(name: str, what: str = "") -> None:
    """Raise ``NotSupportedError`` saying why, when the kernel lacks feature ``name``."""
    why = lacking(name, what=what)
    if why is not None:
        raise NotSupportedError(_answer(name) or errno.EOPNOTSUPP, f"use {what or FEATURES[name].what}", message=why)


def have_map_type(map_type: MapType | int) -> bool:
    """Whether this kernel can create maps of ``map_type`` (by creating a tiny one). Linux 3.19+."""
    return have(f"map_type:{MapType(map_type).name}")


def have_program_type(prog_type: ProgramType | int) -> bool:
    """Whether this kernel loads programs of ``prog_type`` (a two-instruction program)."""
    return have(f"program_type:{ProgramType(prog_type).name}")


def have_map_flag(map_type: MapType | int, flag: MapFlags | int) -> bool:
    """Whether ``map_type`` accepts ``flag`` at creation (e.g. ARRAY with MMAPABLE)."""
    name = f"map_flag:{MapType(map_type).name}:{MapFlags(flag).name}"
    if name not in FEATURES:
        FEATURES[name] = Feature(None, _map_probe(MapType(map_type), int(flag)), f"{MapType(map_type).name} maps with {flag!r}")
    return have(name)


def have_batch_ops() -> bool:
    """Whether ``BPF_MAP_*_BATCH`` works on hash maps (Linux 5.6+)."""
    return have("batch_ops")


def have_helper(prog_type: ProgramType | int, helper: int) -> bool:
    """Whether programs of ``prog_type`` may call helper number ``helper`` (bpftool's probe: the
    verifier's log must not say "invalid func" or "unknown func"). Types that load only against a
    kernel BTF target (tracing, LSM, EXT, STRUCT_OPS) are not probed: False, as bpftool."""
    kind = ProgramType(prog_type)
    name = f"helper:{kind.name}:{int(helper)}"
    if name not in FEATURES:
        def probe() -> int:
            if PROGRAM_TYPES[kind].btf_target:  # loads need a kernel BTF target first: not probed (as bpftool)
                return errno.EOPNOTSUPP
            log = ctypes.create_string_buffer(4096)
            attach = int(PROGRAM_TYPES[kind].load_attach_type or 0)
            code = _load(kind, [0x85 | int(helper) << 32, 0x95], attach=attach, log=log)
            if b"invalid func " in log.value or b"unknown func " in log.value:
                return errno.EINVAL
            return code if code in (errno.EPERM, errno.EACCES) and not log.value else 0
        FEATURES[name] = Feature(None, probe, f"helper {int(helper)} in {kind.name} programs")
    return have(name)


def probe_all() -> dict[str, object]:
    """Every map type, program type and helper answer, shaped for comparing with bpftool's
    ``feature probe``: ``{"map_types": {name: bool}, "program_types": {...}, "helpers": {prog: [ids]}}``."""
    from .asm.helpers import Helper

    programs = {t.name: have_program_type(t) for t in PROGRAM_TYPES}
    helpers = {t.name: [h.name for h in Helper if h and have_helper(t, h)] for t in PROGRAM_TYPES if programs[t.name]}
    return {"map_types": {t.name: have_map_type(t) for t in MAP_TYPES}, "program_types": programs, "helpers": helpers}
