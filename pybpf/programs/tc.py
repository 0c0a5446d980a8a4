"""Attaching tc (SCHED_CLS) programs to an interface: a tcx link where the kernel has them
(Linux 6.6+), otherwise a clsact qdisc and a direct-action bpf filter over rtnetlink."""

from __future__ import annotations

import errno
import os
from typing import Any

from .. import features
from .._sys import commands, netlink
from .._sys.attrs import ProgQueryAttr
from .._sys.constants import Cmd
from .._sys.syscall import bpf_errno
from .._sys.netif import interface_index
from .._sys.constants import AttachType, ProgramType
from ..errors import BPFError, NotSupportedError
from . import refusal
from .legacy import LegacyLink
from .link import Link

DIRECTIONS = {"ingress": AttachType.TCX_INGRESS, "egress": AttachType.TCX_EGRESS}
_PARENTS = {"ingress": netlink.TC_H_MIN_INGRESS, "egress": netlink.TC_H_MIN_EGRESS}
MECHANISMS = ("auto", "tcx", "netlink")


def _tcx_probe() -> int:
    """``BPF_PROG_QUERY`` of TCX_INGRESS on the loopback interface (index 1 in every namespace):
    0 from Linux 6.6, EINVAL before."""
    ret = bpf_errno(Cmd.PROG_QUERY, ProgQueryAttr(target_fd=1, attach_type=AttachType.TCX_INGRESS))
    return -ret if ret < 0 else 0


features.FEATURES.setdefault("tcx", features.Feature((6, 6), _tcx_probe, "tcx links"))


def have_tcx() -> bool:
    """Whether this kernel has tcx (Linux 6.6+)."""
    return features.have("tcx")


def _check(prog: Any, direction: str, mechanism: str, priority: int | None) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be 'ingress' or 'egress', not {direction!r}")
    if mechanism not in MECHANISMS:
        raise ValueError(f"mechanism must be one of {', '.join(MECHANISMS)}, not {mechanism!r}")
    if priority is not None:
        if isinstance(priority, bool) or not isinstance(priority, int) or not 1 <= priority <= 0xFFFF:
            raise ValueError(f"priority must be an int in 1..65535, not {priority!r}")
        if mechanism == "tcx":
            raise ValueError("priority orders netlink filters; tcx links have no priority")
    if prog.type not in (ProgramType.SCHED_CLS, ProgramType.SCHED_ACT):
        raise ValueError(f"attach_tc takes SCHED_CLS programs, not {refusal.type_name(prog.type)}")


def attach_tc(prog: Any, interface: str | int, direction: str = "ingress", *, mechanism: str = "auto",
              priority: int | None = None) -> Link:
    """Attach ``prog`` to ``interface`` (name or index in the calling thread's namespace) on
    ``direction``; closing the returned ``Link`` detaches.

    ``mechanism`` "auto" takes a tcx link when the kernel has tcx and no ``priority`` is asked
    for, else a netlink filter; "tcx" or "netlink" insist. A netlink filter's Link cannot be
    pinned, and the filter outlives a killed process.
    """
    _check(prog, direction, mechanism, priority)
    ifindex = interface_index(interface)
    if mechanism == "tcx" or (mechanism == "auto" and priority is None and have_tcx()):
        return _attach_tcx(prog, ifindex, interface, direction)
    return _attach_netlink(prog, ifindex, interface, direction, priority or 0)


def _attach_tcx(prog: Any, ifindex: int, interface: str | int, direction: str) -> Link:
    kind = DIRECTIONS[direction]
    where = f"link {prog.name or 'program'!r} to tcx {direction} of {interface!r}"
    try:
        link_fd = commands.link_create(prog.fd, ifindex, kind, name=prog.name)
    except BPFError as err:
        code = err.errno or errno.EIO
        if (denied := refusal.permission(code, where)) is not None:
            raise denied from None
        if code == errno.EINVAL and not have_tcx():
            raise refusal.known(code, where, features.lacking("tcx") or "this kernel has no tcx", NotSupportedError) from None
        if code == errno.ENODEV:
            raise refusal.known(code, where, f"no interface with index {ifindex} in this network namespace") from None
        if code == errno.EINVAL and (reason := refusal.mismatch(prog, kind)):
            raise refusal.known(code, where, reason) from None
        raise refusal.generic(code, where) from None
    return Link(link_fd, f"{prog.name or 'tc'} tcx/{direction} on {interface}")


def _describe(found: netlink.TcObject) -> str:
    what = f"{found.kind} filter"
    if found.bpf_name or found.bpf_id:
        what += f" {found.bpf_name!r} (program {found.bpf_id})"
    return f"{what} with priority {found.priority} handle {found.handle:#x}"


def _attach_netlink(prog: Any, ifindex: int, interface: str | int, direction: str, priority: int) -> Link:
    where = f"attach {prog.name or 'program'!r} to tc {direction} of {interface!r}"
    parent = netlink.tc_handle(netlink.CLSACT_HANDLE, _PARENTS[direction])
    nl = netlink.RtNetlink()
    try:
        created = _ensure_clsact(nl, ifindex, direction, where)
        try:
            existing = [f for f in netlink.filters(nl, ifindex, parent) if f.handle]  # not the chain heads
            if priority:
                taken = [f for f in existing if f.priority == priority]
                if taken:
                    raise refusal.known(errno.EEXIST, where, f"priority {priority} is taken by the {_describe(taken[0])}; "
                                   "choose another priority or remove that filter")
            elif existing and min(f.priority for f in existing) <= 1:
                first = min(existing, key=lambda f: f.priority)
                raise refusal.known(errno.EEXIST, where, f"the {_describe(first)} runs first and nothing can be put before "
                               "it; pass a priority to run after it, or remove it")
            made = netlink.add_bpf_filter(nl, ifindex, parent, priority, prog.fd, prog.name or "pybpf")
        except BaseException:
            if created:
                _quietly(netlink.delete_clsact, nl, ifindex)
            raise
    except netlink.NetlinkError as err:
        nl.close()
        raise _netlink_error(prog, err, where) from None
    except BaseException:
        nl.close()
        raise
    prog_fd = os.dup(prog.fd)

    def detach() -> None:
        try:
            netlink.delete_filter(nl, ifindex, parent, made.priority, made.protocol, made.handle)
        except netlink.NetlinkError as err:
            if err.errno not in (errno.ENOENT, errno.ENODEV, errno.EINVAL):
                raise refusal.known(err.errno or errno.EIO, f"detach tc filter from {interface!r}", err.message or os.strerror(err.errno or errno.EIO)) from None
        if created and not _has_filters(nl, ifindex):
            _quietly(netlink.delete_clsact, nl, ifindex)

    name = f"{prog.name or 'tc'} clsact/{direction} on {interface} (priority {made.priority} handle {made.handle:#x})"
    return LegacyLink(prog_fd, detach, name, "a tc filter made over rtnetlink is no kernel link "
                      "(tcx links need Linux 6.6)", keep=(nl,))


def _ensure_clsact(nl: netlink.RtNetlink, ifindex: int, direction: str, where: str) -> bool:
    """Make sure a clsact qdisc is there; True if this call created it."""
    if netlink.add_clsact(nl, ifindex):
        return True
    for qdisc in netlink.qdiscs(nl, ifindex):
        if qdisc.parent == netlink.TC_H_CLSACT and qdisc.kind == "ingress" and direction == "egress":
            raise refusal.known(errno.EEXIST, where, "the interface has an 'ingress' qdisc, which has no egress hook; "
                           "replace it with clsact")
    return False


def _has_filters(nl: netlink.RtNetlink, ifindex: int) -> bool:
    return any(netlink.filters(nl, ifindex, netlink.tc_handle(netlink.CLSACT_HANDLE, minor))
               for minor in _PARENTS.values())


def _quietly(fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except OSError:
        pass


def _netlink_error(prog: Any, err: netlink.NetlinkError, where: str) -> BPFError:
    code = err.errno or errno.EIO
    if (denied := refusal.permission(code, where)) is not None:
        return denied
    if code == errno.ENODEV:
        return refusal.known(code, where, "the interface is gone")
    message = err.message or os.strerror(code)
    if code == errno.EINVAL and prog.type not in (ProgramType.SCHED_CLS, ProgramType.SCHED_ACT):
        message = f"tc takes SCHED_CLS programs, not {refusal.type_name(prog.type)}"
    return refusal.generic(code, where) if not err.message and code != errno.EINVAL else refusal.known(code, where, message)
