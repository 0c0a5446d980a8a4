"""Attaching sk_lookup and flow_dissector programs to a network namespace with a link
(``BPF_LINK_CREATE``, Linux 5.7+; sk_lookup 5.9+)."""

from __future__ import annotations

import errno
import os
from typing import Any

from .._sys import commands
from .._sys.constants import AttachType, ProgramType
from .._sys.nsfs import is_netns
from ..errors import BPFError
from . import refusal
from .legacy import LegacyLink
from .link import Link

NETNS_ATTACH_TYPES = {ProgramType.SK_LOOKUP: AttachType.SK_LOOKUP, ProgramType.FLOW_DISSECTOR: AttachType.FLOW_DISSECTOR}
"""The program types a network namespace takes, and the attach type each is attached as."""
SK_LOOKUP_MAX_PROGS = 64
"""How many sk_lookup programs (links) one namespace takes."""


def open_netns(netns: str | os.PathLike[str] | int | None) -> tuple[int, str]:
    """``(fd, name)`` for a namespace path (``/proc/PID/ns/net``, ``/run/netns/NAME``), an fd
    (duplicated: the caller keeps its own) or None (the calling thread's); ValueError if it is
    not a network namespace."""
    if netns is None:
        path: str = "/proc/thread-self/ns/net"
        fd, name = os.open(path, os.O_RDONLY | os.O_CLOEXEC), "this thread's network namespace"
    elif isinstance(netns, bool) or not isinstance(netns, (str, bytes, os.PathLike, int)):
        raise TypeError(f"netns must be a namespace path, an fd or None, not {netns!r}")
    elif isinstance(netns, int):
        if netns < 0:
            raise ValueError(f"netns: fd {netns} is negative")
        fd, name = os.dup(netns), f"netns fd {netns}"
    else:
        path = os.fsdecode(os.fspath(netns))
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ValueError(f"netns: no namespace at {path!r}") from None
        name = path
    if not is_netns(fd):
        os.close(fd)
        raise ValueError(f"netns: {name!r} is not a network namespace")
    return fd, name


def netns_inode(fd: int) -> int:
    """The namespace's inode number, as link info reports it (``netns_ino``)."""
    return os.fstat(fd).st_ino


def attach_netns(prog: Any, netns: str | os.PathLike[str] | int | None = None) -> Link:
    """Attach a SK_LOOKUP or FLOW_DISSECTOR program to a network namespace with a link;
    closing the ``Link`` detaches."""
    kind = NETNS_ATTACH_TYPES.get(prog.type)
    if kind is None:
        raise ValueError(f"attach_netns takes SK_LOOKUP or FLOW_DISSECTOR programs, not {refusal.type_name(prog.type)}")
    fd, name = open_netns(netns)
    where = f"link {prog.name or 'program'!r} as {kind.name} to {name}"
    label = f"{prog.name or 'program'} {kind.name} on {name}"
    try:
        try:
            link_fd = commands.link_create(prog.fd, fd, kind, name=prog.name)
        except BPFError as err:
            if err.errno == errno.EINVAL and kind == AttachType.FLOW_DISSECTOR and netns is None \
                    and refusal.too_old(kind, err.errno, "", "link") is not None:
                return _flow_dissector_attach(prog, label)
            raise _explain(prog, fd, kind, err.errno or errno.EIO, where) from None
    finally:
        os.close(fd)
    return Link(link_fd, label)


def _flow_dissector_attach(prog: Any, label: str) -> Link:
    """``BPF_PROG_ATTACH`` of a flow dissector to the calling thread's namespace (before 5.7)."""
    where = f"attach {prog.name or 'program'!r} as FLOW_DISSECTOR"
    try:
        commands.prog_attach(0, prog.fd, AttachType.FLOW_DISSECTOR, name=prog.name)
    except BPFError as err:
        raise _explain(prog, -1, AttachType.FLOW_DISSECTOR, err.errno or errno.EIO, where) from None
    prog_fd = os.dup(prog.fd)

    def detach() -> None:
        commands.prog_detach(0, prog_fd, AttachType.FLOW_DISSECTOR, name=label)

    return LegacyLink(prog_fd, detach, label, "this kernel has no netns links (Linux 5.7); the flow dissector "
                      "was attached with BPF_PROG_ATTACH to the namespace of the thread that attached it",
                      attach_type=AttachType.FLOW_DISSECTOR)


def _explain(prog: Any, fd: int, kind: AttachType, code: int, where: str) -> BPFError:
    if (denied := refusal.permission(code, where)) is not None:
        return denied
    if code == errno.EINVAL:
        if (old := refusal.too_old(kind, code, where)) is not None:
            return old
        if reason := refusal.mismatch(prog, kind):
            return refusal.known(code, where, reason)
    if kind == AttachType.FLOW_DISSECTOR and code in (errno.EEXIST, errno.E2BIG):
        here = _attached(fd, kind) if fd >= 0 else []
        if here:
            return refusal.known(code, where, f"a flow dissector (program {here[0]}) is already attached to this "
                            "namespace: the kernel takes one per namespace")
        return refusal.known(code, where, "a flow dissector is attached in the root network namespace, or this is the "
                        "root namespace and another namespace has one: the kernel lets the root's dissector and "
                        "per-namespace dissectors exclude each other")
    if kind == AttachType.SK_LOOKUP and code == errno.E2BIG:
        return refusal.known(code, where, f"the namespace already has {SK_LOOKUP_MAX_PROGS} sk_lookup programs "
                        "(the kernel's limit)")
    return refusal.generic(code, where)


def _attached(fd: int, kind: AttachType) -> list[int]:
    try:
        return commands.prog_query(fd, kind)[1]
    except BPFError:
        return []


def netns_programs(netns: str | os.PathLike[str] | int | None = None) -> dict[AttachType, list[int]]:
    """The ids of the sk_lookup and flow_dissector programs attached to a namespace."""
    fd, _ = open_netns(netns)
    try:
        found: dict[AttachType, list[int]] = {}
        for kind in (AttachType.FLOW_DISSECTOR, AttachType.SK_LOOKUP):
            try:
                found[kind] = commands.prog_query(fd, kind)[1]
            except BPFError as err:
                if err.errno != errno.EINVAL:
                    raise
        return found
    finally:
        os.close(fd)
