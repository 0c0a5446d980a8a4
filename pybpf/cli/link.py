"""``pybpf link list|show|pin|detach``: the kernel's links in bpftool's text and ``--json``,
with the processes that hold each (``pids``, read from /proc)."""

from __future__ import annotations

import socket
from typing import Any

from .._sys.constants import LinkType
from .._sys.holders import holders
from ..errors import BPFError
from ..programs import Link, LinkInfo, Program
from ..programs.links import loaded_links
from .command import Context, UsageError, Words, verb

GRAMMAR = "LINK := { id LINK_ID | pinned FILE }"


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


def _open(words: Words) -> Link:
    how = words.take("'id LINK_ID' or 'pinned FILE'")
    if how == "id":
        return Link.from_id(words.id("a link id"))
    if how == "pinned":
        return Link.from_pin(words.take("a pin path"))
    raise UsageError(f"expected 'id' or 'pinned', got: '{how}'?")


@verb("link", "show", "list", usage="[LINK]", default=True)
def show(ctx: Context, words: Words) -> None:
    """Show every link, or one, as bpftool's 'link show' (with the processes holding each)."""
    refs = holders("link")
    if words:
        with _open(words) as link:
            infos = [link.info()]
        words.end()
        single = True
    else:
        infos, single = list(loaded_links()), False
    records = [record(i, refs.get(i.id, [])) for i in infos]
    if ctx.json:
        ctx.emit(records[0] if single else records)
        return
    for r in records:
        ctx.write(text(r) + "\n")


@verb("link", "pin", usage="LINK FILE")
def pin(ctx: Context, words: Words) -> None:
    """Pin a link at FILE in bpffs."""
    with _open(words) as link:
        path = words.take("a path in bpffs")
        words.end()
        link.pin(path)
    if ctx.json:
        ctx.emit(None)


@verb("link", "detach", usage="LINK")
def detach(ctx: Context, words: Words) -> None:
    """Detach a link now (its program stops running; pins and fds stay until removed)."""
    with _open(words) as link:
        words.end()
        link.detach()
    if ctx.json:
        ctx.emit(None)
