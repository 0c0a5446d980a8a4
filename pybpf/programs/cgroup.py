"""Attaching programs to a cgroup v2 directory: a kernel link (``BPF_LINK_CREATE``, Linux 5.7+),
or ``BPF_PROG_ATTACH`` with ``BPF_F_ALLOW_MULTI`` where links are missing or flags are asked
for; and what is attached where, as ``bpftool cgroup show`` reports it."""

from __future__ import annotations

import dataclasses
import enum
import errno
import os
from collections.abc import Iterator
from typing import Any

from .._sys import commands
from .._sys.cgroupfs import cgroup2_root, is_cgroup2
from .._sys.constants import AttachType
from .._sys.traits import ATTACH_TYPES
from ..errors import BPFError
from . import refusal
from .legacy import LegacyLink
from .link import Link

BPF_F_QUERY_EFFECTIVE = 1 << 0
BPF_F_REPLACE = 1 << 2
MAX_PROGS = 64
"""``BPF_CGROUP_MAX_PROGS``: programs one cgroup takes per attach type."""


CGROUP_ATTACH_TYPES: tuple[AttachType, ...] = tuple(sorted(t for t, row in ATTACH_TYPES.items() if row.target == "cgroup"))
"""Every cgroup attach type, in the kernel's numbering (the order ``cgroup show`` queries)."""


class CgroupFlags(enum.IntFlag):
    """``attach_flags`` of ``BPF_PROG_ATTACH`` to a cgroup: none (exclusive), override or multi."""

    NONE = 0
    ALLOW_OVERRIDE = 1 << 0
    ALLOW_MULTI = 1 << 1


def _attach_type(value: Any) -> AttachType:
    try:
        kind = AttachType(value)
    except ValueError:
        raise ValueError(f"attach_type: unknown attach type {value!r}") from None
    if kind not in CGROUP_ATTACH_TYPES:
        raise ValueError(f"attach_type: {kind.name} is not a cgroup attach type "
                         f"(those are {', '.join(t.name for t in CGROUP_ATTACH_TYPES)})")
    return kind


def open_cgroup(cgroup: str | os.PathLike[str] | int, what: str = "cgroup") -> tuple[int, str]:
    """``(fd, name)`` for a cgroup v2 directory path or fd (the fd is new: a dup of an fd
    given); ValueError if it is not a cgroup v2 directory."""
    if isinstance(cgroup, bool) or not isinstance(cgroup, (str, bytes, os.PathLike, int)):
        raise TypeError(f"{what} must be a cgroup v2 directory path or an open fd, not {cgroup!r}")
    if isinstance(cgroup, int):
        if cgroup < 0:
            raise ValueError(f"{what}: fd {cgroup} is negative")
        fd, name = os.dup(cgroup), f"fd {cgroup}"
    else:
        name = os.fsdecode(os.fspath(cgroup))
        try:
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except NotADirectoryError:
            raise ValueError(f"{what}: {name!r} is not a directory") from None
        except FileNotFoundError:
            raise ValueError(f"{what}: no cgroup at {name!r}") from None
    try:
        if not is_cgroup2(fd):
            raise ValueError(f"{what}: {name!r} is not a cgroup v2 directory (cgroup v2 is mounted at "
                             f"{_root_or_none()})")
    except BaseException:
        os.close(fd)
        raise
    return fd, name


def _root_or_none() -> str:
    try:
        return cgroup2_root()
    except FileNotFoundError:
        return "no place: it is not mounted"


def attach_cgroup(prog: Any, cgroup: str | os.PathLike[str] | int, attach_type: AttachType | int,
                  flags: CgroupFlags | int | None = None) -> Link:
    """Attach ``prog`` to ``cgroup`` at ``attach_type``; the returned ``Link`` detaches on close.

    Without ``flags``, a kernel link (pinnable; gone with the last fd, also on SIGKILL), or on
    kernels without cgroup links ``BPF_PROG_ATTACH`` with ``BPF_F_ALLOW_MULTI``. With ``flags``
    (``CgroupFlags``: NONE is exclusive), always ``BPF_PROG_ATTACH`` with them. A Link made by
    ``BPF_PROG_ATTACH`` cannot be pinned and its attachment outlives a killed process.
    """
    kind = _attach_type(attach_type)
    if flags is not None:
        if isinstance(flags, bool) or not isinstance(flags, int) or flags & ~int(CgroupFlags.ALLOW_MULTI | CgroupFlags.ALLOW_OVERRIDE):
            raise ValueError(f"flags must be CgroupFlags (NONE, ALLOW_OVERRIDE or ALLOW_MULTI), not {flags!r}")
        if flags == CgroupFlags.ALLOW_MULTI | CgroupFlags.ALLOW_OVERRIDE:
            raise ValueError("flags: ALLOW_OVERRIDE and ALLOW_MULTI exclude each other")
    fd, name = open_cgroup(cgroup)
    label = f"{prog.name or 'program'} {kind.name} on {name}"
    try:
        if flags is None:
            try:
                link_fd = commands.link_create(prog.fd, fd, kind, name=prog.name)
            except BPFError as err:
                if err.errno != errno.EINVAL or refusal.too_old(kind, err.errno, "") is not None:
                    raise _explain(prog, fd, name, kind, err.errno or errno.EIO, CgroupFlags.ALLOW_MULTI, "link") from None
                reason = (f"this kernel ({refusal.this_release()}) has no cgroup links (they came with Linux 5.7)"
                          if refusal.too_old(kind, err.errno, "", "link") else
                          "the kernel refused a cgroup link (EINVAL) and took BPF_PROG_ATTACH")
                return _prog_attach(prog, fd, name, kind, CgroupFlags.ALLOW_MULTI, label, reason)
            os.close(fd)
            return Link(link_fd, label)
        reason = f"attached with BPF_PROG_ATTACH {_flags_word(flags)}, which makes no kernel link"
        return _prog_attach(prog, fd, name, kind, CgroupFlags(flags), label, reason)
    except BaseException:
        try:
            os.close(fd)
        except OSError:
            pass
        raise


def _prog_attach(prog: Any, fd: int, name: str, kind: AttachType, flags: CgroupFlags, label: str, reason: str) -> Link:
    """``BPF_PROG_ATTACH`` and a ``LegacyLink`` that owns ``fd`` and a dup of the program's fd."""
    try:
        commands.prog_attach(fd, prog.fd, kind, int(flags), name=prog.name)
    except BPFError as err:
        raise _explain(prog, fd, name, kind, err.errno or errno.EIO, flags, "attach") from None
    prog_fd = os.dup(prog.fd)

    def detach() -> None:
        commands.prog_detach(fd, prog_fd, kind, name=label)

    return LegacyLink(prog_fd, detach, label, reason, keep=(fd,), attach_type=kind)


def _explain(prog: Any, fd: int, name: str, kind: AttachType, code: int, flags: CgroupFlags, op: str) -> BPFError:
    """The kernel's refusal to attach at a cgroup, in words."""
    where = f"{'link' if op == 'link' else 'attach'} {prog.name or 'program'!r} as {kind.name} to cgroup {name}"
    if (denied := refusal.permission(code, where)) is not None:
        return denied
    if code == errno.EINVAL:
        if (old := refusal.too_old(kind, code, where)) is not None:
            return old
        if reason := refusal.mismatch(prog, kind):
            return refusal.known(code, where, reason)
        if op == "attach" and _attached_here(fd, kind, prog):
            return refusal.known(code, where, f"this program is already attached to the cgroup as {kind.name}")
    if code == errno.EPERM:
        if reason := _exclusive_reason(fd, name, kind, flags):
            return refusal.known(code, where, reason)
    if code == errno.EEXIST:
        return refusal.known(code, where, f"this program is already attached to the cgroup as {kind.name}")
    if code == errno.E2BIG:
        return refusal.known(code, where, f"the cgroup already has {MAX_PROGS} programs as {kind.name} (the kernel's limit)")
    return refusal.generic(code, where)


def _attached_here(fd: int, kind: AttachType, prog: Any) -> bool:
    try:
        return prog.id in commands.prog_query_full(fd, kind)[1]
    except BPFError:
        return False


def _flags_word(flags: int) -> str:
    return {0: "exclusively (no flags)", 1: "with BPF_F_ALLOW_OVERRIDE", 2: "with BPF_F_ALLOW_MULTI"}.get(flags, f"with flags {flags:#x}")


def _exclusive_reason(fd: int, name: str, kind: AttachType, flags: CgroupFlags) -> str:
    """Why EPERM: a program attached with other flags here, or an ancestor that forbids programs below."""
    try:
        here_flags, ids, *_ = commands.prog_query_full(fd, kind)
    except BPFError:
        return ""
    if ids and here_flags != flags:
        return (f"program {ids[0]} is attached here {_flags_word(here_flags)}; the kernel takes no program "
                f"{_flags_word(flags)} beside it (links attach with BPF_F_ALLOW_MULTI)")
    path = name
    for _ in range(256):
        parent = os.path.dirname(path.rstrip("/"))
        if not parent or parent == path or not os.path.isdir(parent):
            break
        path = parent
        try:
            up = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            break
        try:
            if not is_cgroup2(up):
                break
            up_flags, up_ids, *_ = commands.prog_query_full(up, kind)
        except (BPFError, OSError):
            break
        finally:
            os.close(up)
        if up_flags & CgroupFlags.ALLOW_MULTI:
            break
        if up_ids:
            if not up_flags & CgroupFlags.ALLOW_OVERRIDE:
                return (f"the ancestor cgroup {path} has program {up_ids[0]} attached as {kind.name} exclusively "
                        "(neither BPF_F_ALLOW_MULTI nor BPF_F_ALLOW_OVERRIDE), which forbids programs below it")
            break
    return ""


# ---- what is attached where ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CgroupProgram:
    """One program attached to a cgroup: its id, attach type and attach flags (0, override, multi)."""

    id: int
    attach_type: AttachType | int
    attach_flags: int
    link_id: int = 0


def cgroup_programs(cgroup: str | os.PathLike[str] | int, effective: bool = False,
                    attach_types: tuple[AttachType | int, ...] | None = None) -> list[CgroupProgram]:
    """The programs attached to ``cgroup`` (or, with ``effective``, that run for it, inherited
    ones included), per attach type in the kernel's numbering order."""
    fd, _ = open_cgroup(cgroup)
    try:
        return list(_query(fd, effective, attach_types))
    finally:
        os.close(fd)


def _query(fd: int, effective: bool, attach_types: tuple[AttachType | int, ...] | None) -> Iterator[CgroupProgram]:
    kinds = attach_types if attach_types is not None else tuple(sorted(CGROUP_ATTACH_TYPES))
    for kind in kinds:
        try:
            flags, ids, per_prog, links, _ = commands.prog_query_full(
                fd, kind, BPF_F_QUERY_EFFECTIVE if effective else 0, max_progs=1024)
        except BPFError as err:
            if err.errno == errno.EINVAL:  # a type this kernel predates
                continue
            raise
        for index, prog_id in enumerate(ids):
            yield CgroupProgram(prog_id, _enum(kind), per_prog[index] or flags, links[index])


def _enum(value: int) -> AttachType | int:
    try:
        return AttachType(value)
    except ValueError:
        return value


def walk_cgroups(root: str | os.PathLike[str] | None = None) -> Iterator[tuple[str, int]]:
    """Every cgroup directory under ``root`` (default: the cgroup v2 mount), pre-order in
    directory order, staying on one file system: ``(path, depth)``."""
    top = os.fsdecode(os.fspath(root)) if root is not None else cgroup2_root()
    device = os.stat(top).st_dev
    stack: list[tuple[str, int]] = [(top, 0)]
    while stack:
        path, depth = stack.pop()
        yield path, depth
        try:
            entries = [e for e in os.scandir(path) if e.is_dir(follow_symlinks=False)]
        except OSError:
            continue
        children = [(e.path, depth + 1) for e in entries if e.stat(follow_symlinks=False).st_dev == device]
        stack.extend(reversed(children))
