"""Kernel names for what an object defines: at most 15 characters of ``[A-Za-z0-9_.]``."""

from __future__ import annotations

import re

from .._sys.constants import OBJ_NAME_LEN

_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9_.]")
_MAX = OBJ_NAME_LEN - 1


def kernel_name(name: str) -> str:
    """``name`` as the kernel takes it: other characters become ``_``, cut to 15 characters."""
    return _NOT_ALLOWED.sub("_", name)[:_MAX]


def data_map_name(object_name: str, section: str) -> str:
    """The kernel name libbpf gives a global data map: ``<object prefix><section>``, 15 characters."""
    suffix_len = max(7, len(section))
    prefix_len = 0 if "." in section[1:] else max(min(_MAX - suffix_len, len(object_name)), 0)
    return kernel_name(object_name[:prefix_len] + section[:suffix_len])
