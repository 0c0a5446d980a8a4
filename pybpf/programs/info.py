"""``ProgramInfo`` and ``LinkInfo``: what the kernel says about a program or a link, holding no fds."""

from __future__ import annotations

import ctypes
import dataclasses
from typing import Any

from .._sys.attrs import LinkInfoStruct, ProgInfoStruct
from .._sys.constants import AttachType, LinkType, ProgramType, known


@dataclasses.dataclass(frozen=True)
class ProgramInfo:
    """One program as the kernel reports it (``struct bpf_prog_info``)."""

    id: int
    type: ProgramType | int
    name: str
    tag: str
    map_ids: tuple[int, ...] = ()
    xlated_prog_len: int = 0
    jited_prog_len: int = 0
    load_time: int = 0
    created_by_uid: int = 0
    gpl_compatible: bool = False
    btf_id: int = 0
    run_time_ns: int = 0
    run_cnt: int = 0
    verified_insns: int = 0
    attach_btf_obj_id: int = 0
    attach_btf_id: int = 0

    @classmethod
    def from_struct(cls, raw: ProgInfoStruct, map_ids: list[int] | tuple[int, ...] = ()) -> ProgramInfo:
        """Convert the kernel struct (``map_ids`` come from a second call that has room for them)."""
        return cls(
            id=raw.id,
            type=known(ProgramType, raw.type),
            name=raw.name.decode(errors="replace"),
            tag=bytes(raw.tag).hex(),
            map_ids=tuple(map_ids),
            xlated_prog_len=raw.xlated_prog_len,
            jited_prog_len=raw.jited_prog_len,
            load_time=raw.load_time,
            created_by_uid=raw.created_by_uid,
            gpl_compatible=bool(raw.gpl_compatible),
            btf_id=raw.btf_id,
            run_time_ns=raw.run_time_ns,
            run_cnt=raw.run_cnt,
            verified_insns=raw.verified_insns,
            attach_btf_obj_id=raw.attach_btf_obj_id,
            attach_btf_id=raw.attach_btf_id,
        )


@dataclasses.dataclass(frozen=True)
class LinkInfo:
    """One link as the kernel reports it (``struct bpf_link_info``): the common head, plus the
    per-type part: the interface of an XDP, tcx or netkit link, the map of a sockmap or
    struct_ops link, the cgroup of a cgroup link, the namespace of a netns link, the BTF target of
    a tracing (fentry/fexit/...) link, and the attach type where the kernel reports one."""

    id: int
    type: LinkType | int
    prog_id: int
    ifindex: int | None = None
    map_id: int | None = None
    attach_type: AttachType | int | None = None
    cgroup_id: int | None = None
    netns_ino: int | None = None
    target_obj_id: int | None = None
    """TRACING links: the id of the BTF object (vmlinux's, a module's) or program holding the target."""
    target_btf_id: int | None = None
    """TRACING links: the BTF id of the function or tracepoint attached to."""

    @classmethod
    def from_struct(cls, raw: LinkInfoStruct) -> LinkInfo:
        """Convert the kernel struct, decoding the per-type part of the types pybpf attaches."""
        link_type = known(LinkType, raw.type)
        head: dict[str, Any] = dict(id=raw.id, type=link_type, prog_id=raw.prog_id)
        extra = bytes(raw.extra)
        u32 = (ctypes.c_uint32 * 4).from_buffer_copy(extra[:16])
        if link_type == LinkType.XDP:
            return cls(**head, ifindex=u32[0])
        if link_type == LinkType.SOCKMAP:
            return cls(**head, map_id=u32[0], attach_type=known(AttachType, u32[1]))
        if link_type in (LinkType.TCX, LinkType.NETKIT):
            return cls(**head, ifindex=u32[0], attach_type=known(AttachType, u32[1]))
        if link_type == LinkType.CGROUP:
            return cls(**head, cgroup_id=ctypes.c_uint64.from_buffer_copy(extra[:8]).value,
                       attach_type=known(AttachType, u32[2]))
        if link_type == LinkType.NETNS:
            return cls(**head, netns_ino=u32[0], attach_type=known(AttachType, u32[1]))
        if link_type == LinkType.STRUCT_OPS:
            return cls(**head, map_id=u32[0])
        if link_type == LinkType.TRACING:
            return cls(**head, attach_type=known(AttachType, u32[0]), target_obj_id=u32[1], target_btf_id=u32[2])
        return cls(**head)
