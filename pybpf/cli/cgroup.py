"""``pybpf cgroup show CGROUP [effective]`` and ``pybpf cgroup tree [CGROUP_ROOT] [effective]``:
the programs attached to cgroups, in bpftool's text and ``--json``."""

from __future__ import annotations

import functools
import os
from typing import Any

from ..errors import BPFError
from ..programs import Program
from ..programs.cgroup import CgroupProgram, cgroup_programs, walk_cgroups
from .command import Context, UsageError, Words, verb

_FLAGS = {0: "", 1: "override", 2: "multi"}


@functools.cache
def _vmlinux_names() -> Any:
    """Kernel BTF, when the kernel has it: bpftool names a program's attach_btf_id from it."""
    from ..btf import BTF  # only for programs with an attach BTF id (LSM_CGROUP)

    try:
        return BTF.vmlinux()
    except (OSError, ValueError):
        return None


def _btf_name(obj_id: int, type_id: int) -> str | None:
    """bpftool's attach_btf_name: the vmlinux type's name when the program's attach BTF object
    is vmlinux (or none, obj 0); "" for type 0."""
    if not os.path.exists("/sys/kernel/btf/vmlinux") or obj_id != 0 and not _is_vmlinux(obj_id):
        return None
    if type_id == 0:
        return ""
    btf = _vmlinux_names()
    if btf is None:
        return None
    try:
        return str(btf.type_by_id(type_id).name or "")
    except (KeyError, IndexError, ValueError):
        return None


@functools.cache
def _is_vmlinux(obj_id: int) -> bool:
    from ..btf import BtfHandle

    try:
        with BtfHandle.from_id(obj_id) as handle:
            info = handle.info()
            return info.kernel and info.name == "vmlinux"
    except BPFError:
        return False


def _record(entry: CgroupProgram, effective: bool) -> dict[str, Any] | None:
    try:
        with Program.from_id(entry.id) as prog:
            info = prog.info()
    except BPFError:
        return None  # gone meanwhile
    kind = getattr(entry.attach_type, "name", None)
    record: dict[str, Any] = {"id": info.id, "attach_type": kind.lower() if kind else entry.attach_type}
    if not effective:
        record["attach_flags"] = _FLAGS.get(entry.attach_flags, f"unknown({entry.attach_flags:x})")
    record["name"] = info.name
    btf_name = _btf_name(info.attach_btf_obj_id, info.attach_btf_id)
    if btf_name is not None:
        record["attach_btf_name"] = btf_name
    record["attach_btf_obj_id"] = info.attach_btf_obj_id
    record["attach_btf_id"] = info.attach_btf_id
    return record


def _line(record: dict[str, Any], level: int) -> str:
    kind = record["attach_type"]
    text = f"{'    ' if level else ''}{record['id']:<8} " + (f"{kind:<15}" if isinstance(kind, str) else f"type {kind:<10}")
    if "attach_flags" in record:
        text += f" {record['attach_flags']:<15} {record['name']:<15}"
    else:
        text += f" {record['name']:<15}"
    if "attach_btf_name" in record:
        text += f" {record['attach_btf_name']:<15}"
    elif record["attach_btf_id"]:
        text += f" attach_btf_obj_id={record['attach_btf_obj_id']} attach_btf_id={record['attach_btf_id']}"
    return text


def _header(effective: bool) -> str:
    return f"{'ID':<8} {'AttachType':<15} {'Name':<15}" if effective else \
        f"{'ID':<8} {'AttachType':<15} {'AttachFlags':<15} {'Name':<15}"


def _records(path: str, effective: bool) -> list[dict[str, Any]]:
    return [r for r in (_record(e, effective) for e in cgroup_programs(path, effective)) if r is not None]


def _effective(words: Words) -> bool:
    effective = words.accept("effective")
    if words:
        raise UsageError(f"expected no more arguments, 'effective', got: '{' '.join(words.rest())}'?")
    return effective


@verb("cgroup", "show", "list", usage="CGROUP [effective]")
def show(ctx: Context, words: Words) -> None:
    """Show the programs attached to a cgroup v2 directory, or with 'effective' those that run for
    it (inherited ones included), as bpftool's 'cgroup show'."""
    path = words.take("a cgroup path")
    effective = _effective(words)
    records = _records(path, effective)
    if not records:
        if ctx.json:
            ctx.write("\n")  # bpftool's JSON writer ends every run with a newline, even an empty one
        return
    if ctx.json:
        ctx.emit(records)
        return
    ctx.write(_header(effective) + "\n")
    for record in records:
        ctx.write(_line(record, 0) + "\n")


@verb("cgroup", "tree", usage="[CGROUP_ROOT] [effective]")
def tree(ctx: Context, words: Words) -> None:
    """Show the programs of every cgroup under CGROUP_ROOT (default: the cgroup v2 mount), as
    bpftool's 'cgroup tree'."""
    root = None if words.peek() in (None, "effective") else words.take("a cgroup path")
    effective = _effective(words)
    found = []
    for path, depth in walk_cgroups(root):
        records = _records(path, effective)
        if records:
            found.append((path, depth, records))
    if ctx.json:
        ctx.emit([{"cgroup": path, "programs": records} for path, _, records in found])
        return
    ctx.write("CgroupPath\n" + _header(effective) + "\n")
    for path, depth, records in found:
        ctx.write(path + "\n")
        for record in records:
            ctx.write(_line(record, depth) + "\n")
