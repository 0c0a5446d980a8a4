"""tracefs: where it is mounted (mounting it at ``/sys/kernel/tracing`` when it is not), tracepoint
ids, and the field layout of a tracepoint's record from its ``format`` file."""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import os
import re
import threading

from ..errors import BPFError, NotSupportedError, error_for
from .libc import libc

DEFAULT_MOUNT = "/sys/kernel/tracing"
"""Where tracefs is mounted when it is not mounted anywhere (the kernel creates this directory)."""
_DEBUGFS_TRACING = "/sys/kernel/debug/tracing"
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_lock = threading.Lock()
_mounted: str | None = None


def _mounts() -> list[tuple[str, str]]:
    """``(mount point, fs type)`` of every mount of this mount namespace."""
    found = []
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3:
                found.append((parts[1].replace("\\040", " "), parts[2]))
    return found


def tracefs_root() -> str:
    """The tracefs mount point, mounting tracefs at ``/sys/kernel/tracing`` when none is mounted."""
    global _mounted
    with _lock:
        if _mounted is not None and os.path.isdir(os.path.join(_mounted, "events")):
            return _mounted
        for point, fstype in _mounts():
            if fstype == "tracefs":
                _mounted = point
                return point
        for point, fstype in _mounts():  # debugfs mounts tracefs under tracing/ on its own
            if fstype == "debugfs" and point == "/sys/kernel/debug" and os.path.isdir(os.path.join(_DEBUGFS_TRACING, "events")):
                _mounted = _DEBUGFS_TRACING
                return _mounted
        _mount(DEFAULT_MOUNT)
        _mounted = DEFAULT_MOUNT
        return DEFAULT_MOUNT


def _mount(point: str) -> None:
    if not os.path.isdir(point):
        raise NotSupportedError(errno.ENOENT, "mount tracefs at", point,
                                message="the directory does not exist: the kernel was built without CONFIG_TRACING")
    if libc.mount(b"tracefs", os.fsencode(point), b"tracefs", ctypes.c_ulong(0), None) != 0:
        code = ctypes.get_errno()
        if code == errno.ENODEV:
            raise NotSupportedError(code, "mount tracefs at", point, message="the kernel has no tracefs (CONFIG_TRACING)")
        hint = "needs CAP_SYS_ADMIN to mount tracefs; or mount it yourself: mount -t tracefs tracefs /sys/kernel/tracing"
        raise error_for(code, "mount tracefs at", point, hint=hint)


def check_name(value: object, what: str) -> str:
    """A tracepoint category or name: letters, digits, ``_``, ``.``, ``-`` (no path separators)."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {value!r}")
    if not _NAME.match(value):
        raise ValueError(f"{what} {value!r}: expected letters, digits, '_', '.' or '-' (a tracefs event name)")
    return value


def event_dir(category: str, name: str) -> str:
    """The tracefs directory of tracepoint ``category:name`` (the names are checked first)."""
    check_name(category, "tracepoint category")
    check_name(name, "tracepoint name")
    return os.path.join(tracefs_root(), "events", category, name)


def tracepoint_id(category: str, name: str) -> int:
    """The perf id of tracepoint ``category:name``, read from ``events/<category>/<name>/id``."""
    path = os.path.join(event_dir(category, name), "id")
    try:
        with open(path) as f:
            return int(f.read().strip())
    except FileNotFoundError:
        raise BPFError(errno.ENOENT, "find tracepoint", f"{category}:{name}",
                       message=f"no such tracepoint: {path} does not exist") from None
    except ValueError:
        raise BPFError(errno.EINVAL, "find tracepoint", f"{category}:{name}", message=f"{path} does not hold a number") from None


@dataclasses.dataclass(frozen=True, slots=True)
class Field:
    """One field of a tracepoint record: its C declaration, byte offset and size, signedness."""

    decl: str
    name: str
    offset: int
    size: int
    signed: bool


_FIELD = re.compile(r"field:(?P<decl>[^;]*);\s*offset:(?P<offset>\d+);\s*size:(?P<size>\d+);\s*signed:(?P<signed>\d+);")


def _field_name(decl: str) -> str:
    """The name in a C declaration such as ``const char * filename`` or ``char comm[16]``."""
    head = decl.split("[", 1)[0].strip()
    return re.split(r"[\s*]+", head)[-1]


def tracepoint_fields(category: str, name: str) -> dict[str, Field]:
    """The fields of tracepoint ``category:name``'s record by name (from its ``format`` file)."""
    path = os.path.join(event_dir(category, name), "format")
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        raise BPFError(errno.ENOENT, "read tracepoint format", f"{category}:{name}",
                       message=f"no such tracepoint: {path} does not exist") from None
    fields: dict[str, Field] = {}
    for match in _FIELD.finditer(text):
        decl = match["decl"].strip()
        field = Field(decl, _field_name(decl), int(match["offset"]), int(match["size"]), match["signed"] == "1")
        fields[field.name] = field
    return fields
