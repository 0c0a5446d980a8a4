"""``pybpf link list|show|pin|detach``: the kernel's links in bpftool's text and ``--json``,
with the processes that hold each (``pids``, read from /proc)."""

from __future__ import annotations

import argparse
import json
import socket
from typing import Any

from ..programs import Link, LinkInfo, Program
from ..programs.links import loaded_links
from .._sys.constants import LinkType
from .._sys.holders import holders
from ..errors import BPFError
from .maps import UsageError, _int, _take


def _name(value: Any) -> Any:
    name = getattr(value, "name", None)
    return name.lower() if name else value


def _devname(ifindex: int | None) -> str:
    if not ifindex:
        return "(detached)"
    try:
        return socket.if_indextoname(ifindex)
    except OSError:
        return "(unknown)"


def _prog_type(prog_id: int) -> Any:
    try:
        with Program.from_id(prog_id) as prog:
            return _name(prog.type)
    except BPFError:
        return None


def record(info: LinkInfo, pids: list[tuple[int, str]]) -> dict[str, Any]:
    """bpftool's JSON object for one link."""
    kind = info.type
    out: dict[str, Any] = {"id": info.id, "type": _name(kind) if isinstance(kind, LinkType) else kind}
    if kind == LinkType.STRUCT_OPS:
        out["map_id"] = info.map_id
    else:
        out["prog_id"] = info.prog_id
    if kind == LinkType.TRACING:
        out["prog_type"] = _prog_type(info.prog_id)
        out["attach_type"] = _name(info.attach_type)
        out["target_obj_id"], out["target_btf_id"] = info.target_obj_id, info.target_btf_id
    elif kind == LinkType.CGROUP:
        out["cgroup_id"], out["attach_type"] = info.cgroup_id, _name(info.attach_type)
    elif kind == LinkType.NETNS:
        out["netns_ino"], out["attach_type"] = info.netns_ino, _name(info.attach_type)
    elif kind in (LinkType.TCX, LinkType.NETKIT):
        out["devname"], out["ifindex"], out["attach_type"] = _devname(info.ifindex), info.ifindex, _name(info.attach_type)
    elif kind == LinkType.SOCKMAP:
        out["map_id"], out["attach_type"] = info.map_id, _name(info.attach_type)
    elif kind == LinkType.XDP:
        out["devname"], out["ifindex"] = _devname(info.ifindex), info.ifindex
    if pids:
        out["pids"] = [{"pid": pid, "comm": comm} for pid, comm in pids]
    return out


def text(r: dict[str, Any]) -> str:
    """bpftool's text for one link (from its JSON record)."""
    kind = r["type"]
    line = f"{r['id']}: " + (f"{kind}  " if isinstance(kind, str) else f"type {kind}  ")
    line += f"map {r['map_id']}  " if kind == "struct_ops" else f"prog {r['prog_id']}  "
    if kind == "tracing":
        line += f"\n\tprog_type {r['prog_type']}  attach_type {r['attach_type']}  "
        if r["target_obj_id"] or r["target_btf_id"]:
            line += f"\n\ttarget_obj_id {r['target_obj_id']}  target_btf_id {r['target_btf_id']}  "
    elif kind == "cgroup":
        line += f"\n\tcgroup_id {r['cgroup_id']}  attach_type {r['attach_type']}  "
    elif kind == "netns":
        line += f"\n\tnetns_ino {r['netns_ino']}  attach_type {r['attach_type']}  "
    elif kind in ("tcx", "netkit"):
        line += f"\n\tifindex {_devtext(r)}  attach_type {r['attach_type']}  "
    elif kind == "sockmap":
        line += f"\n\tmap_id {r['map_id']}  attach_type {r['attach_type']}  "
    elif kind == "xdp":
        line += f"\n\tifindex {_devtext(r)}  "
    if "pids" in r:
        line += "\n\tpids " + ", ".join(f"{p['comm']}({p['pid']})" for p in r["pids"])
    return line


def _devtext(r: dict[str, Any]) -> str:
    return r["devname"] if r["devname"].startswith("(") else f"{r['devname']}({r['ifindex']})"


def _open(words: list[str]) -> Link:
    how = _take(words, "'id N' or 'pinned PATH'")
    if how == "id":
        return Link.from_id(_int(_take(words, "a link id"), "link id"))
    if how == "pinned":
        return Link.from_pin(_take(words, "a pin path"))
    raise UsageError(f"expected 'id' or 'pinned', got {how!r}")


def run(args: argparse.Namespace) -> int:
    """``pybpf link list|show [id N|pinned PATH]|pin LINK PATH|detach LINK``."""
    words = list(args.words)
    if args.verb in ("pin", "detach"):
        with _open(words) as link:
            if args.verb == "pin":
                link.pin(_take(words, "a path in bpffs to pin at"))
            else:
                link.detach()
        if words:
            raise UsageError(f"unexpected {' '.join(words)!r}")
        if args.json:
            print("null")
        return 0
    refs = holders("link")
    if words:
        with _open(words) as link:
            infos = [link.info()]
        if words:
            raise UsageError(f"unexpected {' '.join(words)!r}")
    else:
        infos = list(loaded_links())
    records = [record(i, refs.get(i.id, [])) for i in infos]
    if args.json:
        print(json.dumps(records[0] if args.verb == "show" and args.words else records, separators=(",", ":")))
        return 0
    for r in records:
        print(text(r))
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``pybpf link``."""
    parser = sub.add_parser("link", help="BPF links (bpftool's 'link show|pin|detach')")
    parser.add_argument("verb", choices=["list", "show", "pin", "detach"])
    parser.add_argument("words", nargs=argparse.REMAINDER, help="id N | pinned PATH [FILE]")
    parser.set_defaults(func=run)
