"""RLIMIT_MEMLOCK on kernels before Linux 5.11, which charge BPF maps and programs to it (64 KiB
by default) instead of the memory cgroup.

As libbpf does, pybpf raises the limit only where it matters: when a create or load fails with
EPERM, it probes whether the kernel accounts BPF memory to the memory cgroup; if not, it lifts
RLIMIT_MEMLOCK to infinity once and the call is retried. ``remove_memlock_limit()`` does it up
front (cilium/ebpf's ``rlimit.RemoveMemlock``).
"""

from __future__ import annotations

import ctypes
import errno
import resource
import threading

from .attrs import ProgLoadAttr
from .constants import Cmd, ProgramType

_KTIME_GET_COARSE_NS = 160
"""A helper that arrived in 5.11 together with memory-cgroup accounting (libbpf's probe)."""

_lock = threading.Lock()
_state: dict[str, object] = {}


def memcg_accounting() -> bool:
    """Whether BPF memory is charged to the memory cgroup (Linux 5.11+), not to RLIMIT_MEMLOCK:
    probed as libbpf does; a process that cannot load the probe goes by the release."""
    if "memcg" not in _state:
        from .kernel import kernel_has

        if kernel_has((5, 11)):
            _state["memcg"] = True
            return True
        from .syscall import KERNEL, NR_BPF

        code = (ctypes.c_uint64 * 2)(0x85 | _KTIME_GET_COARSE_NS << 32, 0x95)  # call helper; exit
        license = ctypes.create_string_buffer(b"GPL")
        attr = ProgLoadAttr(prog_type=ProgramType.SOCKET_FILTER, insn_cnt=2, insns=ctypes.addressof(code),
                            license=ctypes.addressof(license))
        fd = KERNEL.raw(NR_BPF, Cmd.PROG_LOAD, ctypes.byref(attr), ctypes.sizeof(attr))
        if fd >= 0:
            import os

            os.close(fd)
        _state["memcg"] = fd >= 0
    return bool(_state["memcg"])


def lift() -> bool:
    """After an EPERM from a create or load: lift RLIMIT_MEMLOCK if the kernel charges it and it was
    not lifted yet. True when the call is worth retrying."""
    with _lock:
        if "lifted" in _state:
            return False
        _state["lifted"] = True
        if memcg_accounting():
            return False
        soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        if soft == resource.RLIM_INFINITY:
            return False
        try:
            resource.setrlimit(resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        except (OSError, ValueError) as err:
            _state["refused"] = (
                f"this kernel charges BPF memory to RLIMIT_MEMLOCK (before Linux 5.11), which is {_size(soft)} "
                f"and could not be raised ({getattr(err, 'strerror', err)}): raise it (ulimit -l, or CAP_SYS_RESOURCE)"
            )
            return False
        return True


def refusal() -> str:
    """Why RLIMIT_MEMLOCK still refuses BPF memory, or ``""`` when it does not."""
    return str(_state.get("refused", ""))


def remove_memlock_limit() -> None:
    """Lift RLIMIT_MEMLOCK to infinity where the kernel charges BPF memory to it (before Linux 5.11);
    does nothing on newer kernels. ``PermissionError`` when the process may not raise it."""
    if memcg_accounting():
        return
    try:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    except (OSError, ValueError) as err:
        raise PermissionError(errno.EPERM, f"cannot raise RLIMIT_MEMLOCK: {err}") from None


def _size(limit: int) -> str:
    return "unlimited" if limit == resource.RLIM_INFINITY else f"{limit // 1024} KiB"
