"""What the kernel's ABI says about each map type, program type and attach type: one row each.

Everything else asks these tables: ``MapSpec.validate`` (sizes, flags), ``Map`` (how an errno
reads, which operations apply), map creation (BTF), ``pybpf.features`` (releases and probes),
attaching (which program type and target an attach type takes). Adding a type is adding a row.
Releases are the upstream Linux release that brought the type (from the kernel's history).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from .constants import AttachType, MapFlags, MapType, ProgramType

Release = tuple[int, int]


class MapTraits(NamedTuple):
    """The kernel's rules and behaviour for one map type."""

    since: Release
    key_sizes: tuple[int, ...] | None = None
    """Allowed key sizes; None: any positive size (0 when ``keyless``)."""
    value_sizes: tuple[int, ...] | None = None
    """Allowed value sizes; None: any positive size (0 when ``value_optional``)."""
    keyless: bool = False
    """No keys (key size 0): QUEUE, STACK, BLOOM_FILTER, ring buffers, ARENA."""
    no_value: bool = False
    """Value size 0: ring buffers and ARENA."""
    percpu: bool = False
    """Values are one per possible CPU."""
    indexed: bool = False
    """Keys are indices below ``max_entries``: E2BIG means out of range, not full."""
    deletable: bool = True
    """Elements can be deleted (ARRAY slots cannot: EINVAL)."""
    batch: bool = False
    """``BPF_MAP_LOOKUP_BATCH``/``UPDATE_BATCH`` work (Linux 5.6+)."""
    batch_delete: bool = False
    """``BPF_MAP_LOOKUP_AND_DELETE_BATCH``/``DELETE_BATCH`` work."""
    btf_types: bool = False
    """The kernel takes BTF key/value types (others refuse them, often with ENOTSUPP)."""
    needs_btf: bool = False
    """The map cannot be created without BTF key/value types."""
    storage: bool = False
    """``max_entries`` must be 0 (the kernel sizes it per object)."""
    fd_values: bool = False
    """Values are written as fds (maps, programs, sockets, devices, ...)."""
    hash_key_limit: bool = False
    """Keys live on the BPF stack: at most 512 bytes."""
    lru: bool = False
    """An LRU hash: always preallocated; NO_COMMON_LRU applies."""
    preallocated: bool = False
    """Always preallocated: NO_PREALLOC is refused."""
    needs_no_prealloc: bool = False
    """Must be created with NO_PREALLOC."""
    mmapable: bool = False
    """Takes the MMAPABLE flag."""
    ring: bool = False
    """``max_entries`` is a byte size: a power of 2 and a multiple of the page size."""
    probe: dict[str, int] = {}  # read only: the rows share the empty default
    """Fields of the smallest ``BPF_MAP_CREATE`` attr that creates one (as libbpf's probe)."""


_HASH = MapTraits((3, 19), hash_key_limit=True, batch=True, batch_delete=True, btf_types=True)
_LOCAL_STORAGE = MapTraits(
    (5, 2), key_sizes=(4,), storage=True, needs_btf=True, btf_types=True, needs_no_prealloc=True,
    probe=dict(key_size=4, value_size=8, max_entries=0, map_flags=MapFlags.NO_PREALLOC),
)
_CGROUP_STORAGE = MapTraits((4, 19), key_sizes=(8, 12), storage=True, btf_types=True,
                            probe=dict(key_size=8, value_size=8, max_entries=0))
_SOCKETS = MapTraits((4, 14), value_sizes=(4, 8), fd_values=True)
_QUEUE = MapTraits((4, 20), keyless=True, probe=dict(key_size=0, value_size=4, max_entries=1))
_RING = MapTraits((5, 8), keyless=True, no_value=True, ring=True, probe=dict(key_size=0, value_size=0, max_entries=4096))

MAP_TYPES: dict[MapType, MapTraits] = {
    MapType.HASH: _HASH,
    MapType.ARRAY: MapTraits((3, 19), key_sizes=(4,), indexed=True, deletable=False, batch=True, btf_types=True,
                             preallocated=True, mmapable=True),
    MapType.PROG_ARRAY: MapTraits((4, 2), key_sizes=(4,), value_sizes=(4,), indexed=True, fd_values=True),
    MapType.PERF_EVENT_ARRAY: MapTraits((4, 3), key_sizes=(4,), value_sizes=(4,), indexed=True, fd_values=True),
    MapType.PERCPU_HASH: _HASH._replace(since=(4, 6), percpu=True),
    MapType.PERCPU_ARRAY: MapTraits((4, 6), key_sizes=(4,), percpu=True, indexed=True, deletable=False, batch=True,
                                    btf_types=True, preallocated=True),
    MapType.STACK_TRACE: MapTraits((4, 6), key_sizes=(4,), probe=dict(key_size=4, value_size=8, max_entries=1)),
    MapType.CGROUP_ARRAY: MapTraits((4, 8), key_sizes=(4,), value_sizes=(4,), indexed=True, fd_values=True),
    MapType.LRU_HASH: _HASH._replace(since=(4, 10), lru=True, preallocated=True),
    MapType.LRU_PERCPU_HASH: _HASH._replace(since=(4, 10), percpu=True, lru=True, preallocated=True),
    MapType.LPM_TRIE: MapTraits((4, 11), btf_types=True, needs_no_prealloc=True,
                                probe=dict(key_size=8, value_size=8, max_entries=1, map_flags=MapFlags.NO_PREALLOC)),
    MapType.ARRAY_OF_MAPS: MapTraits((4, 12), key_sizes=(4,), value_sizes=(4,), indexed=True, fd_values=True),
    MapType.HASH_OF_MAPS: MapTraits((4, 12), value_sizes=(4,), fd_values=True),
    MapType.DEVMAP: MapTraits((4, 14), key_sizes=(4,), value_sizes=(4, 8), indexed=True, fd_values=True),
    MapType.SOCKMAP: _SOCKETS._replace(key_sizes=(4,), indexed=True),
    MapType.CPUMAP: MapTraits((4, 15), key_sizes=(4,), value_sizes=(4, 8), indexed=True),
    MapType.XSKMAP: MapTraits((4, 18), key_sizes=(4,), value_sizes=(4,), indexed=True, fd_values=True),
    MapType.SOCKHASH: _SOCKETS._replace(since=(4, 18)),
    MapType.CGROUP_STORAGE: _CGROUP_STORAGE,
    MapType.REUSEPORT_SOCKARRAY: _SOCKETS._replace(since=(4, 19), key_sizes=(4,), indexed=True),
    MapType.PERCPU_CGROUP_STORAGE: _CGROUP_STORAGE._replace(since=(4, 20), percpu=True),
    MapType.QUEUE: _QUEUE,
    MapType.STACK: _QUEUE,
    MapType.SK_STORAGE: _LOCAL_STORAGE,
    MapType.DEVMAP_HASH: MapTraits((5, 4), key_sizes=(4,), value_sizes=(4, 8), fd_values=True),
    MapType.STRUCT_OPS: MapTraits((5, 6), key_sizes=(4,)),
    MapType.RINGBUF: _RING,
    MapType.INODE_STORAGE: _LOCAL_STORAGE._replace(since=(5, 10)),
    MapType.TASK_STORAGE: _LOCAL_STORAGE._replace(since=(5, 11)),
    MapType.BLOOM_FILTER: MapTraits((5, 16), keyless=True, btf_types=True,
                                    probe=dict(key_size=0, value_size=4, max_entries=1)),
    MapType.USER_RINGBUF: _RING._replace(since=(6, 1)),
    MapType.CGRP_STORAGE: _LOCAL_STORAGE._replace(since=(6, 2)),
    MapType.ARENA: MapTraits((6, 9), keyless=True, no_value=True, mmapable=True,
                             probe=dict(key_size=0, value_size=0, max_entries=1, map_flags=MapFlags.MMAPABLE)),
}
"""Every map type this library knows, with the kernel's rules for it."""


class ProgramTraits(NamedTuple):
    """The kernel's rules for one program type."""

    since: Release
    load_attach_type: AttachType | None = None
    """An ``expected_attach_type`` the kernel requires at load (a typical one, for probes)."""
    btf_target: bool = False
    """Loads against a kernel BTF id (``attach_btf_id``): tracing, LSM, EXT, STRUCT_OPS."""
    test_run: bool = False
    """``BPF_PROG_TEST_RUN`` runs it."""
    test_run_repeat: bool = True
    """``repeat`` may be non-zero in a test run (raw tracepoint runs refuse any repeat but 0)."""


PROGRAM_TYPES: dict[ProgramType, ProgramTraits] = {
    ProgramType.SOCKET_FILTER: ProgramTraits((3, 19), test_run=True),
    ProgramType.KPROBE: ProgramTraits((4, 1)),
    ProgramType.SCHED_CLS: ProgramTraits((4, 1), test_run=True),
    ProgramType.SCHED_ACT: ProgramTraits((4, 1), test_run=True),
    ProgramType.TRACEPOINT: ProgramTraits((4, 7)),
    ProgramType.XDP: ProgramTraits((4, 8), test_run=True),
    ProgramType.PERF_EVENT: ProgramTraits((4, 9)),
    ProgramType.CGROUP_SKB: ProgramTraits((4, 10), test_run=True),
    ProgramType.CGROUP_SOCK: ProgramTraits((4, 10)),
    ProgramType.LWT_IN: ProgramTraits((4, 10), test_run=True),
    ProgramType.LWT_OUT: ProgramTraits((4, 10), test_run=True),
    ProgramType.LWT_XMIT: ProgramTraits((4, 10), test_run=True),
    ProgramType.SOCK_OPS: ProgramTraits((4, 13)),
    ProgramType.SK_SKB: ProgramTraits((4, 14)),
    ProgramType.CGROUP_DEVICE: ProgramTraits((4, 15)),
    ProgramType.SK_MSG: ProgramTraits((4, 17)),
    ProgramType.RAW_TRACEPOINT: ProgramTraits((4, 17), test_run=True, test_run_repeat=False),
    ProgramType.CGROUP_SOCK_ADDR: ProgramTraits((4, 17), load_attach_type=AttachType.CGROUP_INET4_CONNECT),
    ProgramType.LWT_SEG6LOCAL: ProgramTraits((4, 18)),
    ProgramType.LIRC_MODE2: ProgramTraits((4, 18), load_attach_type=AttachType.LIRC_MODE2),
    ProgramType.SK_REUSEPORT: ProgramTraits((4, 19)),
    ProgramType.FLOW_DISSECTOR: ProgramTraits((4, 20), test_run=True),
    ProgramType.CGROUP_SYSCTL: ProgramTraits((5, 2)),
    ProgramType.RAW_TRACEPOINT_WRITABLE: ProgramTraits((5, 2)),
    ProgramType.CGROUP_SOCKOPT: ProgramTraits((5, 3), load_attach_type=AttachType.CGROUP_GETSOCKOPT),
    ProgramType.TRACING: ProgramTraits((5, 5), load_attach_type=AttachType.TRACE_FENTRY, btf_target=True, test_run=True),
    ProgramType.STRUCT_OPS: ProgramTraits((5, 6), btf_target=True),
    ProgramType.EXT: ProgramTraits((5, 6), btf_target=True),
    ProgramType.LSM: ProgramTraits((5, 7), load_attach_type=AttachType.LSM_MAC, btf_target=True),
    ProgramType.SK_LOOKUP: ProgramTraits((5, 9), load_attach_type=AttachType.SK_LOOKUP, test_run=True),
    ProgramType.SYSCALL: ProgramTraits((5, 14), test_run=True, test_run_repeat=False),
    ProgramType.NETFILTER: ProgramTraits((6, 4), load_attach_type=AttachType.NETFILTER, test_run=True),
}
"""Every program type this library knows, with the kernel's rules for it."""


Target = Literal["map", "cgroup", "netns", "ifindex", "socket", "btf", "perf_event", "tracepoint", "none"]


class AttachTraits(NamedTuple):
    """Where one attach type attaches and what the kernel lets attach there."""

    program_types: tuple[ProgramType, ...]
    target: Target
    """What the program attaches to: a map fd, a cgroup fd, a netns fd, an interface, ..."""
    since: Release
    """The release that brought the attach type (``BPF_PROG_ATTACH`` or its first way in)."""
    link_since: Release | None = None
    """The release whose ``BPF_LINK_CREATE`` takes this attach type; None: never."""
    exclusive_with: AttachType | None = None
    """An attach type that cannot share a target with this one."""
    expected_at_load: bool = False
    """The program must be loaded with this attach type as ``expected_attach_type``."""


def _cgroup(since: Release, *types: ProgramType, expected: bool = False) -> AttachTraits:
    return AttachTraits(types, "cgroup", since, link_since=max(since, (5, 7)), expected_at_load=expected)


_SKB, _SOCK, _ADDR = ProgramType.CGROUP_SKB, ProgramType.CGROUP_SOCK, ProgramType.CGROUP_SOCK_ADDR

ATTACH_TYPES: dict[AttachType, AttachTraits] = {
    AttachType.CGROUP_INET_INGRESS: _cgroup((4, 10), _SKB),
    AttachType.CGROUP_INET_EGRESS: _cgroup((4, 10), _SKB),
    AttachType.CGROUP_INET_SOCK_CREATE: _cgroup((4, 10), _SOCK),
    AttachType.CGROUP_SOCK_OPS: _cgroup((4, 13), ProgramType.SOCK_OPS),
    AttachType.SK_SKB_STREAM_PARSER: AttachTraits((ProgramType.SK_SKB,), "map", (4, 14), link_since=(6, 10)),
    AttachType.SK_SKB_STREAM_VERDICT: AttachTraits((ProgramType.SK_SKB,), "map", (4, 14), link_since=(6, 10),
                                                   exclusive_with=AttachType.SK_SKB_VERDICT),
    AttachType.CGROUP_DEVICE: _cgroup((4, 15), ProgramType.CGROUP_DEVICE),
    AttachType.SK_MSG_VERDICT: AttachTraits((ProgramType.SK_MSG,), "map", (4, 17), link_since=(6, 10)),
    AttachType.CGROUP_INET4_BIND: _cgroup((4, 17), _ADDR, expected=True),
    AttachType.CGROUP_INET6_BIND: _cgroup((4, 17), _ADDR, expected=True),
    AttachType.CGROUP_INET4_CONNECT: _cgroup((4, 17), _ADDR, expected=True),
    AttachType.CGROUP_INET6_CONNECT: _cgroup((4, 17), _ADDR, expected=True),
    AttachType.CGROUP_INET4_POST_BIND: _cgroup((4, 17), _SOCK, expected=True),
    AttachType.CGROUP_INET6_POST_BIND: _cgroup((4, 17), _SOCK, expected=True),
    AttachType.CGROUP_UDP4_SENDMSG: _cgroup((4, 18), _ADDR, expected=True),
    AttachType.CGROUP_UDP6_SENDMSG: _cgroup((4, 18), _ADDR, expected=True),
    AttachType.LIRC_MODE2: AttachTraits((ProgramType.LIRC_MODE2,), "none", (4, 18)),
    AttachType.FLOW_DISSECTOR: AttachTraits((ProgramType.FLOW_DISSECTOR,), "netns", (4, 20), link_since=(5, 8)),
    AttachType.CGROUP_SYSCTL: _cgroup((5, 2), ProgramType.CGROUP_SYSCTL),
    AttachType.CGROUP_UDP4_RECVMSG: _cgroup((5, 2), _ADDR, expected=True),
    AttachType.CGROUP_UDP6_RECVMSG: _cgroup((5, 2), _ADDR, expected=True),
    AttachType.CGROUP_GETSOCKOPT: _cgroup((5, 3), ProgramType.CGROUP_SOCKOPT, expected=True),
    AttachType.CGROUP_SETSOCKOPT: _cgroup((5, 3), ProgramType.CGROUP_SOCKOPT, expected=True),
    AttachType.TRACE_RAW_TP: AttachTraits((ProgramType.TRACING,), "btf", (5, 5), link_since=(5, 5)),
    AttachType.TRACE_FENTRY: AttachTraits((ProgramType.TRACING,), "btf", (5, 5), link_since=(5, 5)),
    AttachType.TRACE_FEXIT: AttachTraits((ProgramType.TRACING,), "btf", (5, 5), link_since=(5, 5)),
    AttachType.MODIFY_RETURN: AttachTraits((ProgramType.TRACING,), "btf", (5, 7), link_since=(5, 7)),
    AttachType.LSM_MAC: AttachTraits((ProgramType.LSM,), "btf", (5, 7), link_since=(5, 7)),
    AttachType.TRACE_ITER: AttachTraits((ProgramType.TRACING,), "btf", (5, 8), link_since=(5, 8)),
    AttachType.CGROUP_INET4_GETPEERNAME: _cgroup((5, 8), _ADDR, expected=True),
    AttachType.CGROUP_INET6_GETPEERNAME: _cgroup((5, 8), _ADDR, expected=True),
    AttachType.CGROUP_INET4_GETSOCKNAME: _cgroup((5, 8), _ADDR, expected=True),
    AttachType.CGROUP_INET6_GETSOCKNAME: _cgroup((5, 8), _ADDR, expected=True),
    AttachType.XDP_DEVMAP: AttachTraits((ProgramType.XDP,), "none", (5, 8)),
    AttachType.CGROUP_INET_SOCK_RELEASE: _cgroup((5, 9), _SOCK, expected=True),
    AttachType.XDP_CPUMAP: AttachTraits((ProgramType.XDP,), "none", (5, 9)),
    AttachType.SK_LOOKUP: AttachTraits((ProgramType.SK_LOOKUP,), "netns", (5, 9), link_since=(5, 9), expected_at_load=True),
    AttachType.XDP: AttachTraits((ProgramType.XDP,), "ifindex", (5, 9), link_since=(5, 9)),
    AttachType.SK_SKB_VERDICT: AttachTraits((ProgramType.SK_SKB,), "map", (5, 13), link_since=(6, 10),
                                            exclusive_with=AttachType.SK_SKB_STREAM_VERDICT),
    AttachType.SK_REUSEPORT_SELECT: AttachTraits((ProgramType.SK_REUSEPORT,), "socket", (5, 14)),
    AttachType.SK_REUSEPORT_SELECT_OR_MIGRATE: AttachTraits((ProgramType.SK_REUSEPORT,), "socket", (5, 14)),
    AttachType.PERF_EVENT: AttachTraits((ProgramType.PERF_EVENT, ProgramType.KPROBE, ProgramType.TRACEPOINT),
                                        "perf_event", (5, 15), link_since=(5, 15)),
    AttachType.TRACE_KPROBE_MULTI: AttachTraits((ProgramType.KPROBE,), "none", (5, 18), link_since=(5, 18)),
    AttachType.LSM_CGROUP: AttachTraits((ProgramType.LSM,), "cgroup", (6, 0), link_since=(6, 0)),
    AttachType.STRUCT_OPS: AttachTraits((ProgramType.STRUCT_OPS,), "map", (6, 4), link_since=(6, 4)),
    AttachType.NETFILTER: AttachTraits((ProgramType.NETFILTER,), "none", (6, 4), link_since=(6, 4)),
    AttachType.TCX_INGRESS: AttachTraits((ProgramType.SCHED_CLS,), "ifindex", (6, 6), link_since=(6, 6)),
    AttachType.TCX_EGRESS: AttachTraits((ProgramType.SCHED_CLS,), "ifindex", (6, 6), link_since=(6, 6)),
    AttachType.TRACE_UPROBE_MULTI: AttachTraits((ProgramType.KPROBE,), "none", (6, 6), link_since=(6, 6)),
    AttachType.CGROUP_UNIX_CONNECT: _cgroup((6, 7), _ADDR, expected=True),
    AttachType.CGROUP_UNIX_SENDMSG: _cgroup((6, 7), _ADDR, expected=True),
    AttachType.CGROUP_UNIX_RECVMSG: _cgroup((6, 7), _ADDR, expected=True),
    AttachType.CGROUP_UNIX_GETPEERNAME: _cgroup((6, 7), _ADDR, expected=True),
    AttachType.CGROUP_UNIX_GETSOCKNAME: _cgroup((6, 7), _ADDR, expected=True),
    AttachType.NETKIT_PRIMARY: AttachTraits((ProgramType.SCHED_CLS,), "ifindex", (6, 7), link_since=(6, 7)),
    AttachType.NETKIT_PEER: AttachTraits((ProgramType.SCHED_CLS,), "ifindex", (6, 7), link_since=(6, 7)),
    AttachType.TRACE_KPROBE_SESSION: AttachTraits((ProgramType.KPROBE,), "none", (6, 10), link_since=(6, 10)),
    AttachType.TRACE_UPROBE_SESSION: AttachTraits((ProgramType.KPROBE,), "none", (6, 13), link_since=(6, 13)),
}
"""Every attach type this library knows: program types, target and releases."""


def map_traits(map_type: int) -> MapTraits | None:
    """The row of ``map_type``, or None for a type this library does not know."""
    return MAP_TYPES.get(MapType(map_type)) if map_type in MapType._value2member_map_ else None


def map_type_name(value: int) -> str:
    """``MapType`` name of ``value``, or ``type N`` for a type this library does not know."""
    return MapType(value).name if value in MapType._value2member_map_ else f"type {value}"


def program_type_name(value: int) -> str:
    """``ProgramType`` name of ``value``, or ``type N``."""
    return ProgramType(value).name if value in ProgramType._value2member_map_ else f"type {value}"


def attach_type_name(value: int) -> str:
    """``AttachType`` name of ``value``, or ``attach type N``."""
    return AttachType(value).name if value in AttachType._value2member_map_ else f"attach type {value}"


class EventSourceTraits(NamedTuple):
    """An attach point reached through a perf event or ``BPF_RAW_TRACEPOINT_OPEN`` rather than an
    attach type of its own: the program types it takes, since when, and what the kernel needs."""

    program_types: tuple[ProgramType, ...]
    since: Release
    link_since: Release
    """The release from which it is a BPF link (perf events: ``ATTACH_TYPES[PERF_EVENT]``)."""
    mechanism: str


_PERF_LINK = (5, 15)
EVENT_SOURCES: dict[str, EventSourceTraits] = {
    "tracepoint": EventSourceTraits((ProgramType.TRACEPOINT,), (4, 7), _PERF_LINK, "perf_event_open(PERF_TYPE_TRACEPOINT)"),
    "kprobe": EventSourceTraits((ProgramType.KPROBE,), (4, 17), _PERF_LINK, "the kprobe PMU (CONFIG_KPROBES)"),
    "uprobe": EventSourceTraits((ProgramType.KPROBE,), (4, 17), _PERF_LINK, "the uprobe PMU (CONFIG_UPROBES)"),
    "perf_event": EventSourceTraits((ProgramType.PERF_EVENT, ProgramType.TRACEPOINT, ProgramType.KPROBE), (4, 9),
                                    _PERF_LINK, "a perf event fd"),
    "raw_tracepoint": EventSourceTraits((ProgramType.RAW_TRACEPOINT, ProgramType.RAW_TRACEPOINT_WRITABLE), (4, 17), (5, 7),
                                        "BPF_RAW_TRACEPOINT_OPEN"),
}
"""Tracing attach points without an attach type: tracepoints, kprobes, uprobes, perf events, raw
tracepoints. Before ``link_since`` a perf event's program is set with ``PERF_EVENT_IOC_SET_BPF``."""

BTF_TARGETS: dict[AttachType, tuple[str, str]] = {
    AttachType.TRACE_FENTRY: ("", "FUNC"),
    AttachType.TRACE_FEXIT: ("", "FUNC"),
    AttachType.MODIFY_RETURN: ("", "FUNC"),
    AttachType.TRACE_RAW_TP: ("btf_trace_", "TYPEDEF"),
    AttachType.LSM_MAC: ("bpf_lsm_", "FUNC"),
}
"""BTF-typed attach types: the prefix of their target's name in vmlinux BTF and the target's kind
(``fentry/do_unlinkat`` loads against FUNC ``do_unlinkat``, ``tp_btf/sched_switch`` against
TYPEDEF ``btf_trace_sched_switch``)."""
