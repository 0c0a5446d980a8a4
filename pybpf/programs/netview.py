"""What is attached to the network of the calling thread's namespace: XDP programs and tc
programs per interface (tcx links and cls_bpf filters), and the flow dissector; the data behind
``pybpf net show``, gathered as ``bpftool net show`` does (rtnetlink and ``BPF_PROG_QUERY``)."""

from __future__ import annotations

import dataclasses
import errno

from .._sys import commands, netlink
from .._sys.constants import AttachType
from .._sys.netif import interface_index
from ..errors import BPFError
from .netns import netns_programs
from .program import Program
from .tc import have_tcx

XDP_MODES = {netlink.XDP_ATTACHED_DRV: "driver", netlink.XDP_ATTACHED_SKB: "generic", netlink.XDP_ATTACHED_HW: "offload"}


@dataclasses.dataclass(frozen=True)
class XdpAttachment:
    """The XDP program(s) of one interface: ``(mode, program id)`` pairs ("generic", "driver",
    "offload"); more than one when programs run in several modes at once (``multi``)."""

    devname: str
    ifindex: int
    programs: tuple[tuple[str, int], ...]
    multi: bool = False


@dataclasses.dataclass(frozen=True)
class TcAttachment:
    """One tc program of an interface: where (``kind``: "tcx/ingress", "clsact/egress", a qdisc
    kind, "root"), the program's name and id, and for tcx its link id and flags; for a cls_bpf
    filter the bpf actions it runs, ``(name, id)`` each."""

    devname: str
    ifindex: int
    kind: str
    name: str | None
    prog_id: int | None
    link_id: int | None = None
    prog_flags: int = 0
    link_flags: int = 0
    tcx: bool = False
    actions: tuple[tuple[str | None, int | None], ...] | None = None


@dataclasses.dataclass(frozen=True)
class NetAttachments:
    """Everything ``net_attachments`` found."""

    xdp: list[XdpAttachment]
    tc: list[TcAttachment]
    flow_dissector: list[int]


def _xdp(interface: netlink.Interface) -> XdpAttachment | None:
    mode = interface.xdp_attached
    if mode == netlink.XDP_ATTACHED_NONE:
        return None
    if mode == netlink.XDP_ATTACHED_MULTI:
        found = [(name, pid) for name, pid in (("generic", interface.xdp_skb_prog_id), ("driver", interface.xdp_drv_prog_id),
                                               ("offload", interface.xdp_hw_prog_id)) if pid]
        return XdpAttachment(interface.name, interface.index, tuple(found), multi=True)
    return XdpAttachment(interface.name, interface.index, ((XDP_MODES.get(mode, str(mode)), interface.xdp_prog_id),))


def _program_name(prog_id: int) -> str | None:
    """The program's name, None when it has none or is gone (bpftool then prints no name)."""
    try:
        with Program.from_id(prog_id) as prog:
            return prog.info().name or None
    except BPFError:
        return None


def _tcx(interface: netlink.Interface) -> list[TcAttachment]:
    found = []
    for kind, label in ((AttachType.TCX_INGRESS, "tcx/ingress"), (AttachType.TCX_EGRESS, "tcx/egress")):
        try:
            _, ids, flags, links, _ = commands.prog_query_full(interface.index, kind)
        except BPFError:
            continue
        for i, prog_id in enumerate(ids):
            found.append(TcAttachment(interface.name, interface.index, label, _program_name(prog_id), prog_id,
                                      links[i], flags[i], 0, tcx=True))
    return found


def _classic(nl: netlink.RtNetlink, interface: netlink.Interface) -> list[TcAttachment]:
    handles = [(c.handle, c.kind or "unknown") for c in netlink.classes(nl, interface.index)]
    handles += [(q.handle, q.kind or "unknown") for q in netlink.qdiscs(nl, interface.index)
                if q.kind != "clsact" and q.handle != 0]
    handles += [(netlink.TC_H_ROOT, "root"),
                (netlink.tc_handle(netlink.TC_H_CLSACT, netlink.TC_H_MIN_INGRESS), "clsact/ingress"),
                (netlink.tc_handle(netlink.TC_H_CLSACT, netlink.TC_H_MIN_EGRESS), "clsact/egress")]
    found = []
    for handle, kind in handles:
        for f in netlink.filters(nl, interface.index, handle):
            if f.kind == "bpf" and (f.bpf_name is not None or f.bpf_id is not None or f.actions):
                found.append(TcAttachment(interface.name, interface.index, kind, f.bpf_name, f.bpf_id,
                                          actions=f.actions or None))
    return found


def net_attachments(interface: str | int | None = None) -> NetAttachments:
    """The XDP and tc programs of every interface (or of ``interface``, name or index) of the
    calling thread's network namespace, and its flow dissector."""
    with netlink.RtNetlink() as nl:
        interfaces = netlink.interfaces(nl)
        if interface is not None:
            index = interface_index(interface)
            interfaces = [i for i in interfaces if i.index == index]
        xdp = [x for x in map(_xdp, interfaces) if x is not None]
        tcx = have_tcx()
        tc: list[TcAttachment] = []
        for each in interfaces:
            if tcx:
                tc += _tcx(each)
            tc += _classic(nl, each)
    try:
        dissector = netns_programs().get(AttachType.FLOW_DISSECTOR, [])
    except BPFError as err:
        if err.errno != errno.EINVAL:
            raise
        dissector = []
    return NetAttachments(xdp, tc, dissector[:1])
