"""``bpf(2)`` commands as plain functions: fds and ids in, fds, ids and info structs out.

These raise the generic typed error for an errno (``error_for``); callers that know what an
errno means for their object (a map type, a program) catch ``BPFError`` and say more.
Per-element map operations are not here: ``Map`` drives them with prebuilt attrs.
"""

from __future__ import annotations

import ctypes
import errno
import os
from typing import Iterator

from ..errors import BPFError, error_for
from . import bpffs
from .attrs import (
    GetIdAttr,
    InfoAttr,
    LinkCreateAttr,
    LinkDetachAttr,
    LinkUpdateAttr,
    MapCreateAttr,
    MapElemAttr,
    MapInfoStruct,
    ObjAttr,
    ProgAttachAttr,
    ProgInfoStruct,
    ProgQueryAttr,
    check_uint,
)
from .constants import Cmd
from .syscall import bpf, door

_KINDS = {"anon_inode:bpf-map": "map", "anon_inode:bpf-prog": "program", "anon_inode:bpf_link": "link",
          "anon_inode:bpf-link": "link", "anon_inode:btf": "BTF", "anon_inode:bpf-btf": "BTF"}
"""What ``/proc/self/fd/N`` names a BPF fd: the kernel's own word for its kind (a link made here is
``bpf_link``, one opened from a pin ``bpf-link``)."""


def map_create(attr: MapCreateAttr, name: str = "") -> int:
    """``BPF_MAP_CREATE`` with a filled attr; returns the new map fd."""
    return bpf(Cmd.MAP_CREATE, attr, "create map", name)


def map_freeze(fd: int, name: str = "") -> None:
    """``BPF_MAP_FREEZE``: make the map read-only for user space from now on."""
    bpf(Cmd.MAP_FREEZE, MapElemAttr(map_fd=fd), "freeze map", name)


def map_next_key(fd: int, key: bytes | None, key_size: int, name: str = "") -> bytes | None:
    """``BPF_MAP_GET_NEXT_KEY``: the key after ``key`` (the first key for None), None past the
    last. A plain walk for tools (``map dump``); ``Map`` iterates with prebuilt buffers."""
    out = ctypes.create_string_buffer(key_size)
    current = None if key is None else ctypes.create_string_buffer(key, key_size)
    attr = MapElemAttr(map_fd=fd, key=0 if current is None else ctypes.addressof(current), value=ctypes.addressof(out))
    try:
        bpf(Cmd.MAP_GET_NEXT_KEY, attr, "get next key", name)
    except BPFError as err:
        if err.errno == errno.ENOENT:
            return None
        raise
    return out.raw


def map_lookup(fd: int, key: bytes, size: int, name: str = "") -> bytes:
    """``BPF_MAP_LOOKUP_ELEM`` of ``key`` into ``size`` bytes (a per-CPU map's: every CPU's value,
    each padded to 8 bytes)."""
    out = ctypes.create_string_buffer(size)
    current = ctypes.create_string_buffer(key, len(key))
    bpf(Cmd.MAP_LOOKUP_ELEM, MapElemAttr(map_fd=fd, key=ctypes.addressof(current), value=ctypes.addressof(out)),
        "lookup", name)
    return out.raw


def object_kind(fd: int) -> str | None:
    """What a BPF fd holds, as the kernel names it: "map", "program", "link", "BTF", or None."""
    ask = door().object_kind
    if ask is not None:
        return ask(fd)
    try:
        return _KINDS.get(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return None


def obj_pin(fd: int, path: str, what: str = "object") -> None:
    """``BPF_OBJ_PIN``: pin a map, program or link at ``path`` in bpffs (checked as a new pin:
    no NUL, no directory another user controls)."""
    place = bpffs.check_new(path)
    buf = ctypes.create_string_buffer(os.fsencode(place))
    try:
        bpf(Cmd.OBJ_PIN, ObjAttr(pathname=ctypes.addressof(buf), bpf_fd=fd), f"pin {what} at", place)
    except BPFError as err:
        raise _pin_error(err, place) from None


def obj_get(path: str, file_flags: int = 0, what: str = "object", owned: bool = False) -> int:
    """``BPF_OBJ_GET``: open a pinned object without following symlinks (``owned``: only one that
    belongs to this user or root); returns a new fd."""
    try:
        with bpffs.opened(path, owned=owned) as name:
            return _obj_get(name, os.fspath(path), file_flags, what)
    except FileNotFoundError:
        raise error_for(errno.ENOENT, f"open pinned {what}", os.fspath(path)) from None


def _obj_get(name: str, path: str, file_flags: int, what: str) -> int:
    """``BPF_OBJ_GET`` of ``name`` (the checked pin as ``/proc/self/fd/N``); errors name ``path``."""
    buf = ctypes.create_string_buffer(os.fsencode(name))
    attr = ObjAttr(pathname=ctypes.addressof(buf), file_flags=check_uint(file_flags, "file_flags"))
    try:
        return bpf(Cmd.OBJ_GET, attr, f"open pinned {what}", path)
    except BPFError as err:
        raise _pin_error(err, path) from None


def _pin_error(err: BPFError, path: str) -> BPFError:
    """Name what refuses a pin or an open when it is not a missing capability."""
    if err.errno in (errno.EPERM, errno.EACCES, errno.EINVAL) and not bpffs.is_bpffs(path):
        return error_for(err.errno, err.op, path, message=f"{path} is not on a bpf file system (mount -t bpf bpf DIR)",
                         hint="pins live on bpffs, usually /sys/fs/bpf")
    if err.errno == errno.EINVAL:
        return error_for(err.errno, err.op, path, message="not a pinned BPF object, or opened with flags it does not take")
    return err


def _next_id(cmd: int, start: int, op: str) -> int | None:
    attr = GetIdAttr(start_id=start)
    try:
        bpf(cmd, attr, op)
    except OSError as err:
        if err.errno == errno.ENOENT:  # no more ids
            return None
        raise
    return int(attr.next_id)


def iter_ids(cmd: int, op: str) -> Iterator[int]:
    """Every id from a ``*_GET_NEXT_ID`` command, in order."""
    current = 0
    while (nxt := _next_id(cmd, current, op)) is not None:
        yield nxt
        current = nxt


def each_fd(next_cmd: int, fd_cmd: int, what: str, open_flags: int = 0) -> Iterator[int]:
    """A new fd for every map, program or link on the system, in id order (the caller closes
    each); objects gone between listing and opening are skipped."""
    for obj_id in iter_ids(next_cmd, f"list {what}s"):
        try:
            yield fd_by_id(fd_cmd, obj_id, f"open {what}", open_flags)
        except BPFError as err:
            if err.errno != errno.ENOENT:
                raise


def fd_by_id(cmd: int, obj_id: int, op: str, open_flags: int = 0) -> int:
    """``BPF_{MAP,PROG,BTF,LINK}_GET_FD_BY_ID``; returns a new fd. The id is range-checked (a
    truncated id would open another object)."""
    obj_id = check_uint(obj_id, "id")
    return bpf(cmd, GetIdAttr(start_id=obj_id, open_flags=check_uint(open_flags, "open_flags")), op, f"id {obj_id}")


def obj_info(fd: int, info: ctypes.Structure, op: str, name: str = "") -> ctypes.Structure:
    """``BPF_OBJ_GET_INFO_BY_FD`` into ``info`` (a zeroed info struct, inputs pre-set); returns it."""
    attr = InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    bpf(Cmd.OBJ_GET_INFO_BY_FD, attr, op, name)
    return info


def map_info(fd: int, name: str = "") -> MapInfoStruct:
    """The kernel's ``struct bpf_map_info`` for a map fd."""
    return obj_info(fd, MapInfoStruct(), "get info of map", name)  # type: ignore[return-value]


def prog_info(fd: int, name: str = "") -> ProgInfoStruct:
    """The kernel's ``struct bpf_prog_info`` for a program fd."""
    return obj_info(fd, ProgInfoStruct(), "get info of program", name)  # type: ignore[return-value]


def prog_attach(target_fd: int, prog_fd: int, attach_type: int, flags: int = 0, replace_fd: int = 0, name: str = "") -> None:
    """``BPF_PROG_ATTACH``."""
    attr = ProgAttachAttr(target_fd=target_fd, attach_bpf_fd=prog_fd, attach_type=attach_type, attach_flags=flags, replace_bpf_fd=replace_fd)
    bpf(Cmd.PROG_ATTACH, attr, "attach program", name)


def prog_detach(target_fd: int, prog_fd: int, attach_type: int, name: str = "") -> None:
    """``BPF_PROG_DETACH``."""
    attr = ProgAttachAttr(target_fd=target_fd, attach_bpf_fd=prog_fd, attach_type=attach_type)
    bpf(Cmd.PROG_DETACH, attr, "detach program", name)


def prog_query(target_fd: int, attach_type: int, max_progs: int = 64, name: str = "") -> tuple[int, list[int]]:
    """``BPF_PROG_QUERY``: ``(attach_flags, program ids)`` attached at ``target_fd``."""
    ids = (ctypes.c_uint32 * max_progs)()
    attr = ProgQueryAttr(target_fd=target_fd, attach_type=attach_type, prog_ids=ctypes.addressof(ids), prog_cnt=max_progs)
    bpf(Cmd.PROG_QUERY, attr, "query programs of", name)
    return attr.attach_flags, list(ids[: attr.prog_cnt])


def link_create(prog_fd: int, target_fd: int, attach_type: int, flags: int = 0, name: str = "") -> int:
    """``BPF_LINK_CREATE``; returns the link fd."""
    attr = LinkCreateAttr(prog_fd=prog_fd, target_fd=target_fd, attach_type=attach_type, flags=flags)
    return bpf(Cmd.LINK_CREATE, attr, "create link for", name)


def link_update(link_fd: int, new_prog_fd: int, old_prog_fd: int = 0, flags: int = 0, name: str = "") -> None:
    """``BPF_LINK_UPDATE``: swap the program behind a link atomically."""
    attr = LinkUpdateAttr(link_fd=link_fd, new_prog_fd=new_prog_fd, old_prog_fd=old_prog_fd, flags=flags)
    bpf(Cmd.LINK_UPDATE, attr, "update link", name)


def link_detach(link_fd: int, name: str = "") -> None:
    """``BPF_LINK_DETACH``: detach without closing the fd."""
    bpf(Cmd.LINK_DETACH, LinkDetachAttr(link_fd=link_fd), "detach link", name)



_QUERY_LEVEL = [2]  # 2: link ids (6.6+), 1: per-program flags (6.0+), 0: ids only; lowered on EINVAL


def prog_query_full(target_fd: int, attach_type: int, query_flags: int = 0, max_progs: int = 64,
                    name: str = "") -> tuple[int, list[int], list[int], list[int], int]:
    """``BPF_PROG_QUERY`` asking for everything the kernel knows: ``(attach_flags, program ids,
    per-program attach flags, link ids, revision)``. Fields a kernel predates stay empty (it
    refuses an attr whose unknown tail is not zero, so the query retries with fewer fields)."""
    ids = (ctypes.c_uint32 * max_progs)()
    flags = (ctypes.c_uint32 * max_progs)()
    links = (ctypes.c_uint32 * max_progs)()
    while True:
        level = _QUERY_LEVEL[0]
        attr = ProgQueryAttr(target_fd=target_fd, attach_type=attach_type, query_flags=query_flags,
                             prog_ids=ctypes.addressof(ids), prog_cnt=max_progs)
        if level >= 1:
            attr.prog_attach_flags = ctypes.addressof(flags)
        if level >= 2:
            attr.link_ids = ctypes.addressof(links)
        try:
            bpf(Cmd.PROG_QUERY, attr, "query programs of", name)
        except OSError as err:
            if err.errno == errno.EINVAL and level > 0 and _QUERY_LEVEL[0] == level:
                _QUERY_LEVEL[0] = level - 1
                if _refused_for_fields(target_fd, attach_type, query_flags):
                    continue
                _QUERY_LEVEL[0] = level
            raise
        count = min(attr.prog_cnt, max_progs)
        link_list = list(links[:count]) if level >= 2 else [0] * count
        flag_list = list(flags[:count]) if level >= 1 else [0] * count
        return attr.attach_flags, list(ids[:count]), flag_list, link_list, attr.revision


def _refused_for_fields(target_fd: int, attach_type: int, query_flags: int) -> bool:
    """Whether the same query without the newer fields passes (so EINVAL was about them)."""
    attr = ProgQueryAttr(target_fd=target_fd, attach_type=attach_type, query_flags=query_flags)
    try:
        bpf(Cmd.PROG_QUERY, attr, "query programs of")
    except OSError:
        return False
    return True
