"""``pybpf cgroup show PATH [effective]`` and ``pybpf cgroup tree [ROOT] [effective]``: the
programs attached to cgroups, in bpftool's text and ``--json``."""

from __future__ import annotations

import argparse
import functools
import json
import os
from typing import Any

from ..btf import BTF
from ..errors import BPFError
from ..programs import Program
from ..programs.cgroup import CgroupProgram, cgroup_programs, walk_cgroups
from .maps import UsageError

_FLAGS = {0: "", 1: "override", 2: "multi"}


@functools.cache
def _vmlinux_names() -> Any:
    """Kernel BTF, when the kernel has it: bpftool names a program's attach_btf_id from it."""
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


def _effective(words: list[str]) -> bool:
    if not words:
        return False
    if words == ["effective"]:
        return True
    raise UsageError(f"expected no more arguments, 'effective', got: {' '.join(words)!r}")


def show(args: argparse.Namespace) -> int:
    """``pybpf cgroup show PATH [effective]``."""
    if not args.words:
        raise UsageError("expected a cgroup path")
    path, effective = args.words[0], _effective(args.words[1:])
    records = _records(path, effective)
    if not records:
        if args.json:
            print()
        return 0
    if args.json:
        print(json.dumps(records, separators=(",", ":")))
        return 0
    print(_header(effective))
    for record in records:
        print(_line(record, 0))
    return 0


def tree(args: argparse.Namespace) -> int:
    """``pybpf cgroup tree [ROOT] [effective]``."""
    words = list(args.words)
    root = words.pop(0) if words and words[0] != "effective" else None
    effective = _effective(words)
    found = []
    for path, depth in walk_cgroups(root):
        records = _records(path, effective)
        if records:
            found.append((path, depth, records))
    if args.json:
        print(json.dumps([{"cgroup": path, "programs": records} for path, _, records in found], separators=(",", ":")))
        return 0
    print("CgroupPath")
    print(_header(effective))
    for path, depth, records in found:
        print(path)
        for record in records:
            print(_line(record, depth))
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``pybpf cgroup``."""
    parser = sub.add_parser("cgroup", help="programs attached to cgroups (bpftool's 'cgroup show|tree')")
    parser.add_argument("verb", choices=["show", "list", "tree"])
    parser.add_argument("words", nargs=argparse.REMAINDER, help="PATH [effective] | [ROOT] [effective]")
    parser.set_defaults(func=lambda args: tree(args) if args.verb == "tree" else show(args))
