"""perf events at the kernel's edge: ``perf_event_open(2)``, ``struct perf_event_attr``, the
``PERF_EVENT_IOC_*`` ioctls, the layout of a perf ring's mmap'ed control page and records, and the
dynamic PMUs (kprobe, uprobe) found in ``/sys/bus/event_source/devices``.

Values from ``include/uapi/linux/perf_event.h`` (checked against Linux 6.1 and 6.18).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import os
import platform
import struct
from ctypes import c_int32, c_uint16, c_uint32, c_uint64

from ..errors import BPFError, NotSupportedError, error_for
from .libc import libc

_NR_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241, "arm64": 241, "riscv64": 241, "ppc64le": 319, "s390x": 331, "armv7l": 364}

# perf_event_attr.type
PERF_TYPE_HARDWARE = 0
PERF_TYPE_SOFTWARE = 1
PERF_TYPE_TRACEPOINT = 2

# perf_event_attr.config of PERF_TYPE_SOFTWARE
PERF_COUNT_SW_CPU_CLOCK = 0
PERF_COUNT_SW_TASK_CLOCK = 1
PERF_COUNT_SW_BPF_OUTPUT = 10

# perf_event_attr.sample_type
PERF_SAMPLE_RAW = 1 << 10

# perf_event_attr flag bits (the bitfield after read_format)
FLAG_DISABLED = 1 << 0
FLAG_FREQ = 1 << 10
FLAG_WATERMARK = 1 << 14

PERF_FLAG_FD_CLOEXEC = 1 << 3

# ioctls: _IO('$', n) and _IOW('$', n, __u32)
PERF_EVENT_IOC_ENABLE = 0x2400
PERF_EVENT_IOC_DISABLE = 0x2401
PERF_EVENT_IOC_SET_BPF = 0x40042408

# struct perf_event_header.type
PERF_RECORD_LOST = 2
PERF_RECORD_SAMPLE = 9

HEADER = struct.Struct("=IHH")
"""``struct perf_event_header``: type, misc, size (of the whole record, header included)."""
LOST = struct.Struct("=QQ")
"""The body of ``PERF_RECORD_LOST``: the event id and the count of records lost."""
RAW_SIZE = struct.Struct("=I")
"""A ``PERF_SAMPLE_RAW`` sample starts with the u32 size of the raw data that follows."""

DATA_HEAD_OFFSET = 1024
"""Offset of ``data_head`` (u64, written by the kernel) in ``struct perf_event_mmap_page``."""
DATA_TAIL_OFFSET = 1032
"""Offset of ``data_tail`` (u64, written by the reader) in ``struct perf_event_mmap_page``."""

PMU_DEVICES = "/sys/bus/event_source/devices"
"""Where the kernel lists its performance monitoring units (each with ``type`` and ``format/``)."""


class PerfEventAttr(ctypes.Structure):
    """``struct perf_event_attr`` up to ``config3`` (``PERF_ATTR_SIZE_VER8``); older kernels accept
    the larger size because the fields they do not know are zero."""

    _fields_ = [
        ("type", c_uint32),
        ("size", c_uint32),
        ("config", c_uint64),
        ("sample_period", c_uint64),  # also sample_freq
        ("sample_type", c_uint64),
        ("read_format", c_uint64),
        ("flags", c_uint64),
        ("wakeup_events", c_uint32),  # also wakeup_watermark
        ("bp_type", c_uint32),
        ("config1", c_uint64),  # kprobe_func, uprobe_path
        ("config2", c_uint64),  # kprobe_addr, probe_offset
        ("branch_sample_type", c_uint64),
        ("sample_regs_user", c_uint64),
        ("sample_stack_user", c_uint32),
        ("clockid", c_int32),
        ("sample_regs_intr", c_uint64),
        ("aux_watermark", c_uint32),
        ("sample_max_stack", c_uint16),
        ("_reserved_2", c_uint16),
        ("aux_sample_size", c_uint32),
        ("_reserved_3", c_uint32),
        ("sig_data", c_uint64),
        ("config3", c_uint64),
    ]


def _syscall() -> int:
    try:
        return _NR_PERF_EVENT_OPEN[platform.machine()]
    except KeyError:  # pragma: no cover - depends on the machine
        raise NotSupportedError(errno.ENOSYS, "perf_event_open", message=f"unknown syscall number on {platform.machine()!r}") from None


def perf_event_open(attr: PerfEventAttr, pid: int, cpu: int, op: str, name: str = "", group_fd: int = -1) -> int:
    """``perf_event_open(2)`` with close-on-exec; returns the event fd or raises the typed error."""
    attr.size = ctypes.sizeof(attr)
    fd = libc.syscall(_syscall(), ctypes.byref(attr), pid, cpu, group_fd, PERF_FLAG_FD_CLOEXEC)
    if fd < 0:
        code = ctypes.get_errno()
        raise error_for(code, op, name, hint=_perf_hint(code))
    return int(fd)


def perf_event_open_errno(attr: PerfEventAttr, pid: int, cpu: int) -> int:
    """``perf_event_open(2)``: the fd, or ``-errno`` (for callers that expect some failures)."""
    attr.size = ctypes.sizeof(attr)
    fd = libc.syscall(_syscall(), ctypes.byref(attr), pid, cpu, -1, PERF_FLAG_FD_CLOEXEC)
    return int(fd) if fd >= 0 else -ctypes.get_errno()


def _perf_hint(code: int) -> str:
    if code in (errno.EACCES, errno.EPERM):
        return "needs CAP_PERFMON (or CAP_SYS_ADMIN), or a lower /proc/sys/kernel/perf_event_paranoid"
    return ""


def ioctl(fd: int, request: int, arg: int, op: str, name: str = "") -> None:
    """One ``PERF_EVENT_IOC_*`` on an event fd; a failure is the typed error for its errno."""
    try:
        fcntl.ioctl(fd, request, arg)
    except OSError as err:
        raise error_for(err.errno or errno.EINVAL, op, name) from None


def set_bpf(fd: int, prog_fd: int, name: str = "") -> None:
    """``PERF_EVENT_IOC_SET_BPF``: run ``prog_fd`` whenever the event fires (before perf links, 5.15)."""
    ioctl(fd, PERF_EVENT_IOC_SET_BPF, prog_fd, "attach program to perf event", name)


def enable(fd: int, name: str = "") -> None:
    """``PERF_EVENT_IOC_ENABLE``."""
    ioctl(fd, PERF_EVENT_IOC_ENABLE, 0, "enable perf event", name)


def disable(fd: int) -> None:
    """``PERF_EVENT_IOC_DISABLE``, ignoring failure (used while tearing down)."""
    try:
        fcntl.ioctl(fd, PERF_EVENT_IOC_DISABLE, 0)
    except OSError:
        pass


@functools.cache
def pmu_type(pmu: str) -> int | None:
    """The ``type`` number of a dynamic PMU (``kprobe``, ``uprobe``), or None if the kernel has none."""
    try:
        with open(f"{PMU_DEVICES}/{pmu}/type") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


@functools.cache
def retprobe_bit(pmu: str) -> int:
    """The ``config`` bit that makes a kprobe/uprobe a return probe (``format/retprobe``: ``config:N``)."""
    try:
        with open(f"{PMU_DEVICES}/{pmu}/format/retprobe") as f:
            text = f.read().strip()
    except OSError:
        return 0
    if not text.startswith("config:"):
        raise BPFError(errno.EINVAL, f"read {PMU_DEVICES}/{pmu}/format/retprobe", message=f"unexpected format {text!r}")
    return int(text.removeprefix("config:"))


FD_TYPES = ("raw_tracepoint", "tracepoint", "kprobe", "kretprobe", "uprobe", "uretprobe")
"""``enum bpf_task_fd_type``, as bpftool names them."""


def task_fd_query(pid: int, fd: int) -> tuple[int, str, str, int, int] | None:
    """``BPF_TASK_FD_QUERY``: ``(prog_id, fd type, name, probe offset, probe address)`` of process
    ``pid``'s fd ``fd`` when it is a perf event or raw tracepoint with a program; else None."""
    from .attrs import TaskFdQueryAttr
    from .constants import Cmd
    from .syscall import bpf_errno

    buf = ctypes.create_string_buffer(4096)
    attr = TaskFdQueryAttr(pid=pid, fd=fd, buf_len=len(buf), buf=ctypes.addressof(buf))
    if bpf_errno(Cmd.TASK_FD_QUERY, attr) < 0:
        return None
    kind = FD_TYPES[attr.fd_type] if attr.fd_type < len(FD_TYPES) else f"type {attr.fd_type}"
    return attr.prog_id, kind, buf.value.decode(errors="replace"), attr.probe_offset, attr.probe_addr


def close_quietly(fd: int) -> None:
    """Close an fd on an error path."""
    try:
        os.close(fd)
    except OSError:
        pass
