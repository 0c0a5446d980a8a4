"""Programs: ``ProgramSpec`` (plain data), ``Program`` (owns an fd), ``Link``, attach helpers and
ready-made programs assembled without a compiler (each returns a loaded ``Program``)."""

from .attach import XdpMode, query
from .cgroup import CgroupFlags, CgroupProgram, cgroup_programs
from .info import LinkInfo, ProgramInfo
from .link import Link
from .program import Program, TestRun, loaded_programs
from .ready import (
    reuseport_hash,
    reuseport_select,
    sk_msg_drop,
    sk_msg_pass,
    sk_msg_redirect,
    sk_skb_drop,
    sk_skb_parser,
    sk_skb_pass,
    sk_skb_redirect,
    splice_pair,
    splice_verdict,
    xsk_redirect,
)
from .ready_proxy import SpliceFlow, splice_bounded_verdict
from .ready_reuseport import reuseport_migrate
from .ready_sockets import BindingKey, DispatchMetrics, SockTuple, sk_lookup_dispatch, sk_msg_to_peer, sockops_insert
from .sockfilter import detach_socket
from .spec import ProgramSpec
from .stats import StatsHandle, enable_stats
from .tracing import (
    PerfAttachment,
    PerfEvent,
    PerfEventLink,
    PerfLink,
    attach_cpu_clock,
    perf_attachments,
    section_attach,
    tracepoint_fields,
)

__all__ = [
    "Link",
    "LinkInfo",
    "PerfAttachment",
    "PerfEvent",
    "PerfEventLink",
    "PerfLink",
    "Program",
    "ProgramInfo",
    "ProgramSpec",
    "StatsHandle",
    "TestRun",
    "XdpMode",
    "attach_cpu_clock",
    "enable_stats",
    "loaded_programs",
    "perf_attachments",
    "query",
    "reuseport_hash",
    "reuseport_select",
    "section_attach",
    "sk_msg_drop",
    "sk_msg_pass",
    "sk_msg_redirect",
    "sk_skb_drop",
    "sk_skb_parser",
    "sk_skb_pass",
    "sk_skb_redirect",
    "splice_pair",
    "splice_verdict",
    "tracepoint_fields",
    "xsk_redirect",
    "SpliceFlow",
    "splice_bounded_verdict",
    "reuseport_migrate",
    "CgroupFlags",
    "CgroupProgram",
    "cgroup_programs",
    "detach_socket",
    "BindingKey",
    "DispatchMetrics",
    "SockTuple",
    "sk_lookup_dispatch",
    "sk_msg_to_peer",
    "sockops_insert",
]
