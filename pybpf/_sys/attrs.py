"""``union bpf_attr`` members and the info structs, laid out as in ``include/uapi/linux/bpf.h``.

Each command gets its own ``ctypes.Structure``; the kernel accepts any size up to its own
``union bpf_attr`` as long as the bytes it does not know are zero, so newer fields left at zero
work on older kernels.
"""

from __future__ import annotations

import ctypes
from ctypes import c_char, c_int32, c_uint8, c_uint32, c_uint64


class _Attr(ctypes.Structure):
    """Base for attr structs: 8-byte aligned like ``union bpf_attr``."""

    _pack_ = 8


class MapCreateAttr(_Attr):
    """``BPF_MAP_CREATE``."""

    _fields_ = [
        ("map_type", c_uint32),
        ("key_size", c_uint32),
        ("value_size", c_uint32),
        ("max_entries", c_uint32),
        ("map_flags", c_uint32),
        ("inner_map_fd", c_uint32),
        ("numa_node", c_uint32),
        ("map_name", c_char * 16),
        ("map_ifindex", c_uint32),
        ("btf_fd", c_uint32),
        ("btf_key_type_id", c_uint32),
        ("btf_value_type_id", c_uint32),
        ("btf_vmlinux_value_type_id", c_uint32),
        ("map_extra", c_uint64),
        ("value_type_btf_obj_fd", c_int32),
        ("map_token_fd", c_int32),
    ]


class MapElemAttr(_Attr):
    """``BPF_MAP_{LOOKUP,UPDATE,DELETE}_ELEM``, ``GET_NEXT_KEY``, ``LOOKUP_AND_DELETE``, ``FREEZE``."""

    _fields_ = [
        ("map_fd", c_uint32),
        ("key", c_uint64),
        ("value", c_uint64),  # also next_key
        ("flags", c_uint64),
    ]


class MapBatchAttr(_Attr):
    """``BPF_MAP_*_BATCH``."""

    _fields_ = [
        ("in_batch", c_uint64),
        ("out_batch", c_uint64),
        ("keys", c_uint64),
        ("values", c_uint64),
        ("count", c_uint32),
        ("map_fd", c_uint32),
        ("elem_flags", c_uint64),
        ("flags", c_uint64),
    ]


class ProgLoadAttr(_Attr):
    """``BPF_PROG_LOAD``."""

    _fields_ = [
        ("prog_type", c_uint32),
        ("insn_cnt", c_uint32),
        ("insns", c_uint64),
        ("license", c_uint64),
        ("log_level", c_uint32),
        ("log_size", c_uint32),
        ("log_buf", c_uint64),
        ("kern_version", c_uint32),
        ("prog_flags", c_uint32),
        ("prog_name", c_char * 16),
        ("prog_ifindex", c_uint32),
        ("expected_attach_type", c_uint32),
        ("prog_btf_fd", c_uint32),
        ("func_info_rec_size", c_uint32),
        ("func_info", c_uint64),
        ("func_info_cnt", c_uint32),
        ("line_info_rec_size", c_uint32),
        ("line_info", c_uint64),
        ("line_info_cnt", c_uint32),
        ("attach_btf_id", c_uint32),
        ("attach_prog_fd", c_uint32),  # also attach_btf_obj_fd
        ("core_relo_cnt", c_uint32),
        ("fd_array", c_uint64),
        ("core_relos", c_uint64),
        ("core_relo_rec_size", c_uint32),
        ("log_true_size", c_uint32),
    ]


class ObjAttr(_Attr):
    """``BPF_OBJ_PIN`` and ``BPF_OBJ_GET``."""

    _fields_ = [
        ("pathname", c_uint64),
        ("bpf_fd", c_uint32),
        ("file_flags", c_uint32),
        ("path_fd", c_int32),
    ]


class ProgAttachAttr(_Attr):
    """``BPF_PROG_ATTACH`` and ``BPF_PROG_DETACH``."""

    _fields_ = [
        ("target_fd", c_uint32),  # also target_ifindex
        ("attach_bpf_fd", c_uint32),
        ("attach_type", c_uint32),
        ("attach_flags", c_uint32),
        ("replace_bpf_fd", c_uint32),
        ("relative_fd", c_uint32),
        ("expected_revision", c_uint64),
    ]


class TestRunAttr(_Attr):
    """``BPF_PROG_TEST_RUN``."""

    _fields_ = [
        ("prog_fd", c_uint32),
        ("retval", c_uint32),
        ("data_size_in", c_uint32),
        ("data_size_out", c_uint32),
        ("data_in", c_uint64),
        ("data_out", c_uint64),
        ("repeat", c_uint32),
        ("duration", c_uint32),
        ("ctx_size_in", c_uint32),
        ("ctx_size_out", c_uint32),
        ("ctx_in", c_uint64),
        ("ctx_out", c_uint64),
        ("flags", c_uint32),
        ("cpu", c_uint32),
        ("batch_size", c_uint32),
    ]


class GetIdAttr(_Attr):
    """``BPF_*_GET_NEXT_ID`` and ``BPF_*_GET_FD_BY_ID``."""

    _fields_ = [
        ("start_id", c_uint32),  # also prog_id, map_id, btf_id, link_id
        ("next_id", c_uint32),
        ("open_flags", c_uint32),
    ]


class InfoAttr(_Attr):
    """``BPF_OBJ_GET_INFO_BY_FD``."""

    _fields_ = [
        ("bpf_fd", c_uint32),
        ("info_len", c_uint32),
        ("info", c_uint64),
    ]


class ProgQueryAttr(_Attr):
    """``BPF_PROG_QUERY``."""

    _fields_ = [
        ("target_fd", c_uint32),
        ("attach_type", c_uint32),
        ("query_flags", c_uint32),
        ("attach_flags", c_uint32),
        ("prog_ids", c_uint64),
        ("prog_cnt", c_uint32),
        ("prog_attach_flags", c_uint64),
        ("link_ids", c_uint64),
        ("link_attach_flags", c_uint64),
        ("revision", c_uint64),
    ]


class BtfLoadAttr(_Attr):
    """``BPF_BTF_LOAD``."""

    _fields_ = [
        ("btf", c_uint64),
        ("btf_log_buf", c_uint64),
        ("btf_size", c_uint32),
        ("btf_log_size", c_uint32),
        ("btf_log_level", c_uint32),
        ("btf_log_true_size", c_uint32),
    ]


class LinkCreateAttr(_Attr):
    """``BPF_LINK_CREATE`` (the common head and the ``target_btf_id`` / relative-fd tail)."""

    _fields_ = [
        ("prog_fd", c_uint32),  # also map_fd
        ("target_fd", c_uint32),  # also target_ifindex
        ("attach_type", c_uint32),
        ("flags", c_uint32),
        ("target_btf_id", c_uint32),  # also relative_fd of tcx/netkit/cgroup
        ("_pad", c_uint32),
        ("expected_revision", c_uint64),
    ]


class LinkUpdateAttr(_Attr):
    """``BPF_LINK_UPDATE``."""

    _fields_ = [
        ("link_fd", c_uint32),
        ("new_prog_fd", c_uint32),
        ("flags", c_uint32),
        ("old_prog_fd", c_uint32),
    ]


class LinkDetachAttr(_Attr):
    """``BPF_LINK_DETACH``."""

    _fields_ = [("link_fd", c_uint32)]


class MapInfoStruct(ctypes.Structure):
    """``struct bpf_map_info``."""

    _fields_ = [
        ("type", c_uint32),
        ("id", c_uint32),
        ("key_size", c_uint32),
        ("value_size", c_uint32),
        ("max_entries", c_uint32),
        ("map_flags", c_uint32),
        ("name", c_char * 16),
        ("ifindex", c_uint32),
        ("btf_vmlinux_value_type_id", c_uint32),
        ("netns_dev", c_uint64),
        ("netns_ino", c_uint64),
        ("btf_id", c_uint32),
        ("btf_key_type_id", c_uint32),
        ("btf_value_type_id", c_uint32),
        ("btf_vmlinux_id", c_uint32),
        ("map_extra", c_uint64),
    ]


class ProgInfoStruct(ctypes.Structure):
    """``struct bpf_prog_info``."""

    _fields_ = [
        ("type", c_uint32),
        ("id", c_uint32),
        ("tag", c_uint8 * 8),
        ("jited_prog_len", c_uint32),
        ("xlated_prog_len", c_uint32),
        ("jited_prog_insns", c_uint64),
        ("xlated_prog_insns", c_uint64),
        ("load_time", c_uint64),
        ("created_by_uid", c_uint32),
        ("nr_map_ids", c_uint32),
        ("map_ids", c_uint64),
        ("name", c_char * 16),
        ("ifindex", c_uint32),
        ("gpl_compatible", c_uint32),
        ("netns_dev", c_uint64),
        ("netns_ino", c_uint64),
        ("nr_jited_ksyms", c_uint32),
        ("nr_jited_func_lens", c_uint32),
        ("jited_ksyms", c_uint64),
        ("jited_func_lens", c_uint64),
        ("btf_id", c_uint32),
        ("func_info_rec_size", c_uint32),
        ("func_info", c_uint64),
        ("nr_func_info", c_uint32),
        ("nr_line_info", c_uint32),
        ("line_info", c_uint64),
        ("jited_line_info", c_uint64),
        ("nr_jited_line_info", c_uint32),
        ("line_info_rec_size", c_uint32),
        ("jited_line_info_rec_size", c_uint32),
        ("nr_prog_tags", c_uint32),
        ("prog_tags", c_uint64),
        ("run_time_ns", c_uint64),
        ("run_cnt", c_uint64),
        ("recursion_misses", c_uint64),
        ("verified_insns", c_uint32),
        ("attach_btf_obj_id", c_uint32),
        ("attach_btf_id", c_uint32),
    ]


class LinkInfoStruct(ctypes.Structure):
    """``struct bpf_link_info``: the common head and room for the per-type union."""

    _fields_ = [
        ("type", c_uint32),
        ("id", c_uint32),
        ("prog_id", c_uint32),
        ("_pad", c_uint32),
        ("extra", c_uint64 * 8),
    ]


class BtfInfoStruct(ctypes.Structure):
    """``struct bpf_btf_info``."""

    _fields_ = [
        ("btf", c_uint64),
        ("btf_size", c_uint32),
        ("id", c_uint32),
        ("name", c_uint64),
        ("name_len", c_uint32),
        ("kernel_btf", c_uint32),
    ]


def check_uint(value: object, field: str, bits: int = 32) -> int:
    """``value`` as an unsigned ``bits``-bit integer for a kernel struct; TypeError/ValueError
    naming ``field`` otherwise (ctypes would silently truncate or wrap it)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{field} must be an int, not {type(value).__name__}")
    if not 0 <= value < 1 << bits:
        raise ValueError(f"{field} {value} is out of range (0..{(1 << bits) - 1})")
    return int(value)


class EnableStatsAttr(_Attr):
    """``BPF_ENABLE_STATS``."""

    _fields_ = [("type", c_uint32)]


class RawTracepointOpenAttr(_Attr):
    """``BPF_RAW_TRACEPOINT_OPEN``: ``name`` 0 attaches a BTF-typed program at its load-time target."""

    _fields_ = [
        ("name", c_uint64),
        ("prog_fd", c_uint32),
        ("_pad", c_uint32),
        ("cookie", c_uint64),
    ]


class TaskFdQueryAttr(_Attr):
    """``BPF_TASK_FD_QUERY``: what program a process's perf event or raw tracepoint fd runs, and where."""

    _fields_ = [
        ("pid", c_uint32),
        ("fd", c_uint32),
        ("flags", c_uint32),
        ("buf_len", c_uint32),
        ("buf", c_uint64),
        ("prog_id", c_uint32),
        ("fd_type", c_uint32),
        ("probe_offset", c_uint64),
        ("probe_addr", c_uint64),
    ]
