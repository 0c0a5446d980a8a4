"""Which processes hold a BPF object open: every process's fds, read from ``/proc/PID/fdinfo``
(what bpftool's ``pids`` column shows, found without a BPF iterator)."""

from __future__ import annotations

import os
from collections.abc import Iterator

_FIELDS = {"anon_inode:bpf_link": ("link", "link_id:"), "anon_inode:bpf-link": ("link", "link_id:"),
           "anon_inode:bpf-map": ("map", "map_id:"), "anon_inode:bpf-prog": ("program", "prog_id:")}
MAX_FDS_PER_PROCESS = 1 << 20
"""Fds looked at per process at most (every loop is bounded)."""


def _comm(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _object_id(pid: str, fd: str, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/fdinfo/{fd}") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _fds(pid: str) -> Iterator[tuple[str, str]]:
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return
    for fd in names[:MAX_FDS_PER_PROCESS]:
        try:
            yield fd, os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue


def holders(kind: str) -> dict[int, list[tuple[int, str]]]:
    """``{object id: [(pid, comm), ...]}`` for every ``kind`` ("link", "map" or "program") some
    process holds an fd of, each process listed once per object, in pid order."""
    found: dict[int, list[tuple[int, str]]] = {}
    pids = sorted((p for p in os.listdir("/proc") if p.isdigit()), key=int)
    for pid in pids:
        comm = None
        for fd, target in _fds(pid):
            entry = _FIELDS.get(target)
            if entry is None or entry[0] != kind:
                continue
            obj_id = _object_id(pid, fd, entry[1])
            if obj_id is None:
                continue
            if comm is None:
                comm = _comm(pid)
            refs = found.setdefault(obj_id, [])
            if all(ref[0] != int(pid) for ref in refs):
                refs.append((int(pid), comm))
    return found
