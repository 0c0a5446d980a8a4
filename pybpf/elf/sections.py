"""Program types by ELF section name, in the style of libbpf's ``section_defs``.

A name ending in ``+`` matches the name itself or ``name/anything``; one ending in ``/`` matches
any name with that prefix; any other name matches exactly. The first match wins, so longer
names come before their prefixes. ``sk_skb/verdict`` is here although libbpf 1.1 lacks it.
Sleepable (``.s``) and ``xdp.frags`` sections also set a load flag.
"""

from __future__ import annotations

import dataclasses
import functools

from .._sys.constants import AttachType as A
from .._sys.constants import ProgramType as P


SLEEPABLE = 1 << 4
"""``BPF_F_SLEEPABLE``: the program may sleep (``.s`` sections)."""
XDP_HAS_FRAGS = 1 << 5
"""``BPF_F_XDP_HAS_FRAGS``: the XDP program handles multi-buffer packets (``xdp.frags``)."""


@dataclasses.dataclass(frozen=True, slots=True)
class SectionDef:
    """What a section name says: program type, expected attach type (None: not set), load flags."""

    pattern: str
    type: P
    attach: A | None = None
    flags: int = 0

    def matches(self, name: str) -> bool:
        """Whether section ``name`` is of this kind."""
        if self.pattern.endswith("+"):
            stem = self.pattern[:-1]
            return name == stem or name.startswith(stem + "/")
        if self.pattern.endswith("/"):
            return name.startswith(self.pattern)
        return name == self.pattern


def _defs(*rows: tuple[str, P] | tuple[str, P, A | None] | tuple[str, P, A | None, int]) -> tuple[SectionDef, ...]:
    return tuple(SectionDef(*row) for row in rows)


SECTION_DEFS: tuple[SectionDef, ...] = _defs(
    ("socket", P.SOCKET_FILTER),
    ("sk_reuseport/migrate", P.SK_REUSEPORT, A.SK_REUSEPORT_SELECT_OR_MIGRATE),
    ("sk_reuseport", P.SK_REUSEPORT, A.SK_REUSEPORT_SELECT),
    ("kprobe+", P.KPROBE),
    ("uprobe+", P.KPROBE),
    ("uprobe.s+", P.KPROBE, None, SLEEPABLE),
    ("kretprobe+", P.KPROBE),
    ("uretprobe+", P.KPROBE),
    ("uretprobe.s+", P.KPROBE, None, SLEEPABLE),
    ("kprobe.multi+", P.KPROBE, A.TRACE_KPROBE_MULTI),
    ("kretprobe.multi+", P.KPROBE, A.TRACE_KPROBE_MULTI),
    ("uprobe.multi+", P.KPROBE, A.TRACE_UPROBE_MULTI),
    ("uretprobe.multi+", P.KPROBE, A.TRACE_UPROBE_MULTI),
    ("ksyscall+", P.KPROBE),
    ("kretsyscall+", P.KPROBE),
    ("usdt+", P.KPROBE),
    ("usdt.s+", P.KPROBE, None, SLEEPABLE),
    ("tc/ingress", P.SCHED_CLS, A.TCX_INGRESS),
    ("tc/egress", P.SCHED_CLS, A.TCX_EGRESS),
    ("tcx/ingress", P.SCHED_CLS, A.TCX_INGRESS),
    ("tcx/egress", P.SCHED_CLS, A.TCX_EGRESS),
    ("tc", P.SCHED_CLS),
    ("classifier", P.SCHED_CLS),
    ("action", P.SCHED_ACT),
    ("netkit/primary", P.SCHED_CLS, A.NETKIT_PRIMARY),
    ("netkit/peer", P.SCHED_CLS, A.NETKIT_PEER),
    ("tracepoint+", P.TRACEPOINT),
    ("tp+", P.TRACEPOINT),
    ("raw_tracepoint+", P.RAW_TRACEPOINT),
    ("raw_tp+", P.RAW_TRACEPOINT),
    ("raw_tracepoint.w+", P.RAW_TRACEPOINT_WRITABLE),
    ("raw_tp.w+", P.RAW_TRACEPOINT_WRITABLE),
    ("tp_btf+", P.TRACING, A.TRACE_RAW_TP),
    ("fentry+", P.TRACING, A.TRACE_FENTRY),
    ("fmod_ret+", P.TRACING, A.MODIFY_RETURN),
    ("fexit+", P.TRACING, A.TRACE_FEXIT),
    ("fentry.s+", P.TRACING, A.TRACE_FENTRY, SLEEPABLE),
    ("fmod_ret.s+", P.TRACING, A.MODIFY_RETURN, SLEEPABLE),
    ("fexit.s+", P.TRACING, A.TRACE_FEXIT, SLEEPABLE),
    ("freplace+", P.EXT),
    ("lsm+", P.LSM, A.LSM_MAC),
    ("lsm.s+", P.LSM, A.LSM_MAC, SLEEPABLE),
    ("lsm_cgroup+", P.LSM, A.LSM_CGROUP),
    ("iter+", P.TRACING, A.TRACE_ITER),
    ("iter.s+", P.TRACING, A.TRACE_ITER, SLEEPABLE),
    ("syscall", P.SYSCALL, None, SLEEPABLE),
    ("xdp.frags/devmap", P.XDP, A.XDP_DEVMAP, XDP_HAS_FRAGS),
    ("xdp/devmap", P.XDP, A.XDP_DEVMAP),
    ("xdp.frags/cpumap", P.XDP, A.XDP_CPUMAP, XDP_HAS_FRAGS),
    ("xdp/cpumap", P.XDP, A.XDP_CPUMAP),
    ("xdp.frags", P.XDP, A.XDP, XDP_HAS_FRAGS),
    ("xdp", P.XDP, A.XDP),
    ("perf_event", P.PERF_EVENT),
    ("lwt_in", P.LWT_IN),
    ("lwt_out", P.LWT_OUT),
    ("lwt_xmit", P.LWT_XMIT),
    ("lwt_seg6local", P.LWT_SEG6LOCAL),
    ("sockops", P.SOCK_OPS, A.CGROUP_SOCK_OPS),
    ("sk_skb/stream_parser", P.SK_SKB, A.SK_SKB_STREAM_PARSER),
    ("sk_skb/stream_verdict", P.SK_SKB, A.SK_SKB_STREAM_VERDICT),
    ("sk_skb/verdict", P.SK_SKB, A.SK_SKB_VERDICT),
    ("sk_skb", P.SK_SKB),
    ("sk_msg", P.SK_MSG, A.SK_MSG_VERDICT),
    ("lirc_mode2", P.LIRC_MODE2, A.LIRC_MODE2),
    ("flow_dissector", P.FLOW_DISSECTOR, A.FLOW_DISSECTOR),
    ("cgroup_skb/ingress", P.CGROUP_SKB, A.CGROUP_INET_INGRESS),
    ("cgroup_skb/egress", P.CGROUP_SKB, A.CGROUP_INET_EGRESS),
    ("cgroup/skb", P.CGROUP_SKB),
    ("cgroup/sock_create", P.CGROUP_SOCK, A.CGROUP_INET_SOCK_CREATE),
    ("cgroup/sock_release", P.CGROUP_SOCK, A.CGROUP_INET_SOCK_RELEASE),
    ("cgroup/sock", P.CGROUP_SOCK, A.CGROUP_INET_SOCK_CREATE),
    ("cgroup/post_bind4", P.CGROUP_SOCK, A.CGROUP_INET4_POST_BIND),
    ("cgroup/post_bind6", P.CGROUP_SOCK, A.CGROUP_INET6_POST_BIND),
    ("cgroup/bind4", P.CGROUP_SOCK_ADDR, A.CGROUP_INET4_BIND),
    ("cgroup/bind6", P.CGROUP_SOCK_ADDR, A.CGROUP_INET6_BIND),
    ("cgroup/connect4", P.CGROUP_SOCK_ADDR, A.CGROUP_INET4_CONNECT),
    ("cgroup/connect6", P.CGROUP_SOCK_ADDR, A.CGROUP_INET6_CONNECT),
    ("cgroup/connect_unix", P.CGROUP_SOCK_ADDR, A.CGROUP_UNIX_CONNECT),
    ("cgroup/sendmsg4", P.CGROUP_SOCK_ADDR, A.CGROUP_UDP4_SENDMSG),
    ("cgroup/sendmsg6", P.CGROUP_SOCK_ADDR, A.CGROUP_UDP6_SENDMSG),
    ("cgroup/sendmsg_unix", P.CGROUP_SOCK_ADDR, A.CGROUP_UNIX_SENDMSG),
    ("cgroup/recvmsg4", P.CGROUP_SOCK_ADDR, A.CGROUP_UDP4_RECVMSG),
    ("cgroup/recvmsg6", P.CGROUP_SOCK_ADDR, A.CGROUP_UDP6_RECVMSG),
    ("cgroup/recvmsg_unix", P.CGROUP_SOCK_ADDR, A.CGROUP_UNIX_RECVMSG),
    ("cgroup/getpeername4", P.CGROUP_SOCK_ADDR, A.CGROUP_INET4_GETPEERNAME),
    ("cgroup/getpeername6", P.CGROUP_SOCK_ADDR, A.CGROUP_INET6_GETPEERNAME),
    ("cgroup/getpeername_unix", P.CGROUP_SOCK_ADDR, A.CGROUP_UNIX_GETPEERNAME),
    ("cgroup/getsockname4", P.CGROUP_SOCK_ADDR, A.CGROUP_INET4_GETSOCKNAME),
    ("cgroup/getsockname6", P.CGROUP_SOCK_ADDR, A.CGROUP_INET6_GETSOCKNAME),
    ("cgroup/getsockname_unix", P.CGROUP_SOCK_ADDR, A.CGROUP_UNIX_GETSOCKNAME),
    ("cgroup/sysctl", P.CGROUP_SYSCTL, A.CGROUP_SYSCTL),
    ("cgroup/getsockopt", P.CGROUP_SOCKOPT, A.CGROUP_GETSOCKOPT),
    ("cgroup/setsockopt", P.CGROUP_SOCKOPT, A.CGROUP_SETSOCKOPT),
    ("cgroup/dev", P.CGROUP_DEVICE, A.CGROUP_DEVICE),
    ("struct_ops+", P.STRUCT_OPS),
    ("struct_ops.s+", P.STRUCT_OPS, None, SLEEPABLE),
    ("sk_lookup", P.SK_LOOKUP, A.SK_LOOKUP),
    ("netfilter", P.NETFILTER, A.NETFILTER),
)
"""Every section name pybpf knows, in matching order."""


@functools.lru_cache(maxsize=256)
def section_def(name: str) -> SectionDef | None:
    """The definition matching section ``name``, or None when the name says nothing known."""
    for candidate in SECTION_DEFS:
        if candidate.matches(name):
            return candidate
    return None
