"""``MapInfo`` records and ``maps()``: what the kernel says about maps, holding no fds."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from .._sys import commands
from .._sys.attrs import MapInfoStruct
from .._sys.constants import ALL_MAP_FLAGS, Cmd, MapFlags, MapType, known
from .._sys.syscall import close_fd


@dataclasses.dataclass(frozen=True)
class MapInfo:
    """One map as the kernel reports it (``struct bpf_map_info``)."""

    id: int
    type: MapType | int
    name: str
    key_size: int
    value_size: int
    max_entries: int
    flags: MapFlags
    map_extra: int = 0
    ifindex: int = 0
    btf_id: int = 0
    btf_key_type_id: int = 0
    btf_value_type_id: int = 0
    btf_vmlinux_value_type_id: int = 0

    @classmethod
    def from_struct(cls, raw: MapInfoStruct) -> MapInfo:
        """Convert the kernel struct."""
        map_type = known(MapType, raw.type)
        return cls(
            id=raw.id,
            type=map_type,
            name=raw.name.decode(errors="replace"),
            key_size=raw.key_size,
            value_size=raw.value_size,
            max_entries=raw.max_entries,
            flags=MapFlags(raw.map_flags & ALL_MAP_FLAGS),
            map_extra=raw.map_extra,
            ifindex=raw.ifindex,
            btf_id=raw.btf_id,
            btf_key_type_id=raw.btf_key_type_id,
            btf_value_type_id=raw.btf_value_type_id,
            btf_vmlinux_value_type_id=raw.btf_vmlinux_value_type_id,
        )


def maps() -> Iterator[MapInfo]:
    """Every map on the system (via ``BPF_MAP_GET_NEXT_ID``); maps gone meanwhile are skipped."""
    for fd in commands.each_fd(Cmd.MAP_GET_NEXT_ID, Cmd.MAP_GET_FD_BY_ID, "map"):
        try:
            info = MapInfo.from_struct(commands.map_info(fd))
        finally:
            close_fd(fd)
        yield info
