"""What kind of BPF object an fd refers to: the kernel names it in the fd's anon inode.

``BPF_OBJ_GET`` opens any pinned object; the info struct of a program read as a map's is
garbage rather than an error, so a caller that expects a kind must check it first (as bpftool's
``get_fd_type`` does, from ``/proc/self/fd``).
"""

from __future__ import annotations

import os

_KINDS = {
    "anon_inode:bpf-map": "map",
    "anon_inode:bpf-prog": "program",
    "anon_inode:bpf_link": "link",
    "anon_inode:bpf-link": "link",
    "anon_inode:btf": "BTF",
    "anon_inode:bpf-token": "token",
}


def fd_kind(fd: int) -> str:
    """``"map"``, ``"program"``, ``"link"``, ``"BTF"`` or ``"token"`` for a BPF fd; otherwise
    what the fd is (``"socket:[…]"``, a path); OSError when ``/proc`` cannot say."""
    target = os.readlink(f"/proc/self/fd/{fd}")
    return _KINDS.get(target, target)


def check_kind(fd: int, expected: str, where: str) -> None:
    """ValueError naming what ``where`` holds when ``fd`` is not a ``expected`` object."""
    kind = fd_kind(fd)
    if kind == expected:
        return
    if kind in _KINDS.values():
        raise ValueError(f"{where} is a {kind}, not a {expected}")
    raise ValueError(f"{where} is not a BPF object ({kind})")
