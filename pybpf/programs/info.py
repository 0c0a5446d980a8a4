"""``ProgramInfo`` and ``LinkInfo``: what the kernel says about a program or a link, holding no fds."""

from __future__ import annotations

import ctypes
import dataclasses

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
        )


@dataclasses.dataclass(frozen=True)
class LinkInfo:
    """One link as the kernel reports it (``struct bpf_link_info``): the common head, plus the
    interface of an XDP link, the map and attach type of a sockmap link, and the attach type and
    BTF target of a tracing (fentry/fexit/...) link."""

    id: int
    type: LinkType | int
    prog_id: int
    ifindex: int | None = None
    map_id: int | None = None
    attach_type: AttachType | int | None = None
    target_obj_id: int | None = None
    """TRACING links: the id of the BTF object (vmlinux's, a module's) or program holding the target."""
    target_btf_id: int | None = None
    """TRACING links: the BTF id of the function or tracepoint attached to."""

    @classmethod
    def from_struct(cls, raw: LinkInfoStruct) -> LinkInfo:
        """Convert the kernel struct, decoding the per-type part for XDP and SOCKMAP links."""
        link_type = known(LinkType, raw.type)
        head = dict(id=raw.id, type=link_type, prog_id=raw.prog_id)
        first, second = (ctypes.c_uint32 * 2).from_buffer_copy(raw.extra)
        if link_type == LinkType.XDP:
            return cls(**head, ifindex=first)
        if link_type == LinkType.SOCKMAP:
            return cls(**head, map_id=first, attach_type=known(AttachType, second))
        if link_type == LinkType.TRACING:
            third = (ctypes.c_uint32 * 3).from_buffer_copy(raw.extra)[2]
            return cls(**head, attach_type=known(AttachType, first), target_obj_id=second, target_btf_id=third)
        return cls(**head)
