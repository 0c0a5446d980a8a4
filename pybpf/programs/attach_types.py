"""What each attach type takes and since when: one row per type, the facts behind the attach
methods' checks and their error messages.

# moves to _sys/traits.py (ATTACH_TYPES) when the house lands
"""

from __future__ import annotations

import dataclasses
import enum

from .._sys.constants import AttachType, ProgramType


class Target(enum.Enum):
    """What a program of an attach type is attached to."""

    CGROUP = "cgroup"
    NETNS = "network namespace"
    INTERFACE = "network interface"
    SOCKET_MAP = "socket map"
    REUSEPORT_GROUP = "SO_REUSEPORT group"
    TRACING = "kernel function or event"
    OTHER = "other"


@dataclasses.dataclass(frozen=True)
class AttachTraits:
    """One attach type: the program type it takes, its target, the release that brought it,
    the release from which ``BPF_LINK_CREATE`` works for it (None: never), and whether the
    program must be loaded with this attach type as ``expected_attach_type``."""

    program_type: ProgramType
    target: Target
    since: tuple[int, int]
    link_since: tuple[int, int] | None
    expected_at_load: bool = False


def _cgroup(program_type: ProgramType, since: tuple[int, int], expected: bool = False) -> AttachTraits:
    return AttachTraits(program_type, Target.CGROUP, since, (5, 7), expected)


_A, _P = AttachType, ProgramType

ATTACH_TYPES: dict[AttachType, AttachTraits] = {
    _A.CGROUP_INET_INGRESS: _cgroup(_P.CGROUP_SKB, (4, 10)),
    _A.CGROUP_INET_EGRESS: _cgroup(_P.CGROUP_SKB, (4, 10)),
    _A.CGROUP_INET_SOCK_CREATE: _cgroup(_P.CGROUP_SOCK, (4, 10)),
    _A.CGROUP_INET_SOCK_RELEASE: _cgroup(_P.CGROUP_SOCK, (5, 9), True),
    _A.CGROUP_INET4_POST_BIND: _cgroup(_P.CGROUP_SOCK, (4, 17), True),
    _A.CGROUP_INET6_POST_BIND: _cgroup(_P.CGROUP_SOCK, (4, 17), True),
    _A.CGROUP_SOCK_OPS: _cgroup(_P.SOCK_OPS, (4, 13)),
    _A.CGROUP_DEVICE: _cgroup(_P.CGROUP_DEVICE, (4, 15)),
    _A.CGROUP_INET4_BIND: _cgroup(_P.CGROUP_SOCK_ADDR, (4, 17), True),
    _A.CGROUP_INET6_BIND: _cgroup(_P.CGROUP_SOCK_ADDR, (4, 17), True),
    _A.CGROUP_INET4_CONNECT: _cgroup(_P.CGROUP_SOCK_ADDR, (4, 17), True),
    _A.CGROUP_INET6_CONNECT: _cgroup(_P.CGROUP_SOCK_ADDR, (4, 17), True),
    _A.CGROUP_UDP4_SENDMSG: _cgroup(_P.CGROUP_SOCK_ADDR, (4, 18), True),
    _A.CGROUP_UDP6_SENDMSG: _cgroup(_P.CGROUP_SOCK_ADDR, (4, 18), True),
    _A.CGROUP_UDP4_RECVMSG: _cgroup(_P.CGROUP_SOCK_ADDR, (5, 2), True),
    _A.CGROUP_UDP6_RECVMSG: _cgroup(_P.CGROUP_SOCK_ADDR, (5, 2), True),
    _A.CGROUP_INET4_GETPEERNAME: _cgroup(_P.CGROUP_SOCK_ADDR, (5, 8), True),
    _A.CGROUP_INET6_GETPEERNAME: _cgroup(_P.CGROUP_SOCK_ADDR, (5, 8), True),
    _A.CGROUP_INET4_GETSOCKNAME: _cgroup(_P.CGROUP_SOCK_ADDR, (5, 8), True),
    _A.CGROUP_INET6_GETSOCKNAME: _cgroup(_P.CGROUP_SOCK_ADDR, (5, 8), True),
    _A.CGROUP_UNIX_CONNECT: _cgroup(_P.CGROUP_SOCK_ADDR, (6, 7), True),
    _A.CGROUP_UNIX_SENDMSG: _cgroup(_P.CGROUP_SOCK_ADDR, (6, 7), True),
    _A.CGROUP_UNIX_RECVMSG: _cgroup(_P.CGROUP_SOCK_ADDR, (6, 7), True),
    _A.CGROUP_UNIX_GETPEERNAME: _cgroup(_P.CGROUP_SOCK_ADDR, (6, 7), True),
    _A.CGROUP_UNIX_GETSOCKNAME: _cgroup(_P.CGROUP_SOCK_ADDR, (6, 7), True),
    _A.CGROUP_SYSCTL: _cgroup(_P.CGROUP_SYSCTL, (5, 2)),
    _A.CGROUP_GETSOCKOPT: _cgroup(_P.CGROUP_SOCKOPT, (5, 3), True),
    _A.CGROUP_SETSOCKOPT: _cgroup(_P.CGROUP_SOCKOPT, (5, 3), True),
    _A.FLOW_DISSECTOR: AttachTraits(_P.FLOW_DISSECTOR, Target.NETNS, (4, 20), (5, 7)),
    _A.SK_LOOKUP: AttachTraits(_P.SK_LOOKUP, Target.NETNS, (5, 9), (5, 9), True),
    _A.TCX_INGRESS: AttachTraits(_P.SCHED_CLS, Target.INTERFACE, (6, 6), (6, 6)),
    _A.TCX_EGRESS: AttachTraits(_P.SCHED_CLS, Target.INTERFACE, (6, 6), (6, 6)),
    _A.XDP: AttachTraits(_P.XDP, Target.INTERFACE, (4, 8), (5, 9)),
    _A.SK_MSG_VERDICT: AttachTraits(_P.SK_MSG, Target.SOCKET_MAP, (4, 17), (6, 10)),
    _A.SK_SKB_STREAM_PARSER: AttachTraits(_P.SK_SKB, Target.SOCKET_MAP, (4, 14), (6, 10)),
    _A.SK_SKB_STREAM_VERDICT: AttachTraits(_P.SK_SKB, Target.SOCKET_MAP, (4, 14), (6, 10)),
    _A.SK_SKB_VERDICT: AttachTraits(_P.SK_SKB, Target.SOCKET_MAP, (5, 13), (6, 10)),
    _A.SK_REUSEPORT_SELECT: AttachTraits(_P.SK_REUSEPORT, Target.REUSEPORT_GROUP, (4, 19), None, True),
    _A.SK_REUSEPORT_SELECT_OR_MIGRATE: AttachTraits(_P.SK_REUSEPORT, Target.REUSEPORT_GROUP, (5, 14), None, True),
}
"""The attach types pybpf attaches through ``attach_cgroup``, ``attach_netns``, ``attach_tc``,
``attach_xdp``, ``attach``/``link`` (socket maps) and ``attach_reuseport``."""

CGROUP_ATTACH_TYPES: tuple[AttachType, ...] = tuple(t for t, row in ATTACH_TYPES.items() if row.target is Target.CGROUP)
"""Every cgroup attach type, in ``enum bpf_attach_type`` order (the order ``cgroup show`` queries)."""

TC_LEGACY_SINCE = (4, 1)
"""cls_bpf with direct action (``TCA_BPF_FLAG_ACT_DIRECT``) on a clsact qdisc: Linux 4.1/4.5."""


def traits(attach_type: AttachType) -> AttachTraits | None:
    """The row for ``attach_type``, or None for a type pybpf does not attach itself."""
    return ATTACH_TYPES.get(attach_type)


def release(version: tuple[int, int]) -> str:
    """``(6, 6)`` -> ``"Linux 6.6"``."""
    return f"Linux {version[0]}.{version[1]}"
