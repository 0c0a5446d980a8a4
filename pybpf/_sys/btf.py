"""``bpf(2)`` commands for BTF objects: load a blob, read one back with its info."""

from __future__ import annotations

import ctypes

from .attrs import BtfInfoStruct, BtfLoadAttr
from .commands import obj_info
from .constants import Cmd
from .syscall import bpf


def btf_load(data: bytes, log: ctypes.Array[ctypes.c_char] | None = None, log_level: int = 0, name: str = "") -> int:
    """``BPF_BTF_LOAD``: load a ``.BTF`` blob, logging into ``log`` if given; returns the BTF fd."""
    blob = ctypes.create_string_buffer(data, len(data))
    attr = BtfLoadAttr(btf=ctypes.addressof(blob), btf_size=len(data))
    if log is not None:
        attr.btf_log_buf = ctypes.addressof(log)
        attr.btf_log_size = ctypes.sizeof(log)
        attr.btf_log_level = log_level
    return bpf(Cmd.BTF_LOAD, attr, "load BTF", name)


def btf_info(fd: int, data: ctypes.Array[ctypes.c_char] | None = None, name_buf: ctypes.Array[ctypes.c_char] | None = None) -> BtfInfoStruct:
    """``struct bpf_btf_info`` of a BTF fd, copying the raw BTF into ``data`` and the name into ``name_buf``."""
    info = BtfInfoStruct()
    if data is not None:
        info.btf, info.btf_size = ctypes.addressof(data), ctypes.sizeof(data)
    if name_buf is not None:
        info.name, info.name_len = ctypes.addressof(name_buf), ctypes.sizeof(name_buf)
    return obj_info(fd, info, "get info of BTF")  # type: ignore[return-value]
