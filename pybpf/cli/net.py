"""``pybpf net show [dev IF]``: XDP and tc programs per interface and the flow dissector of this
network namespace, in bpftool's text and ``--json`` (tcx links as newer bpftool shows them)."""

from __future__ import annotations

import json
from typing import Any

from ..programs.netview import NetAttachments, TcAttachment, XdpAttachment, net_attachments
from .command import Context, Words, verb


def _xdp_json(x: XdpAttachment) -> dict[str, Any]:
    record: dict[str, Any] = {"devname": x.devname, "ifindex": x.ifindex}
    if x.multi:
        record["multi_attachments"] = [{"mode": mode, "id": pid} for mode, pid in x.programs]
    else:
        record["mode"], record["id"] = x.programs[0]
    return record


def _xdp_text(x: XdpAttachment) -> str:
    return f"{x.devname}({x.ifindex})" + "".join(f" {mode} id {pid}" for mode, pid in x.programs)


def _flags(value: int) -> list[int]:
    return [1 << bit for bit in range(32) if value >> bit & 1]


def _tc_json(t: TcAttachment) -> dict[str, Any]:
    record: dict[str, Any] = {"devname": t.devname, "ifindex": t.ifindex, "kind": t.kind}
    if t.name is not None:
        record["name"] = t.name
    if t.tcx:
        record["prog_id"] = t.prog_id
        record["prog_flags"] = _flags(t.prog_flags)
        record["link_id"] = t.link_id or 0
        record["link_flags"] = _flags(t.link_flags)
        return record
    if t.prog_id is not None:
        record["id"] = t.prog_id
    if t.actions is not None:
        record["act"] = [{k: v for k, v in (("name", name), ("id", pid)) if v is not None} for name, pid in t.actions]
    return record


def _tc_text(t: TcAttachment) -> str:
    text = f"{t.devname}({t.ifindex}) {t.kind}"
    if t.name is not None:
        text += f" {t.name}"
    if t.tcx:
        text += f" prog_id {t.prog_id} "
        if t.prog_flags:
            text += "prog_flags " + " ".join(map(str, _flags(t.prog_flags))) + " "
        if t.link_id:
            text += f"link_id {t.link_id} "
            if t.link_flags:
                text += "link_flags " + " ".join(map(str, _flags(t.link_flags))) + " "
        return text
    if t.prog_id is not None:
        text += f" id {t.prog_id}"
    if t.actions is not None:
        text += " act [" + "".join("{" + (name or "") + (f" id {pid}" if pid is not None else "") + "}"
                                   for name, pid in t.actions) + "] "
    return text


def render_json(found: NetAttachments) -> str:
    """bpftool's JSON, except that the flow dissector is ``[{"id": N}]`` (bpftool writes the
    invalid ``["id":N]``)."""
    return json.dumps([{"xdp": [_xdp_json(x) for x in found.xdp], "tc": [_tc_json(t) for t in found.tc],
                        "flow_dissector": [{"id": pid} for pid in found.flow_dissector]}], separators=(",", ":"))


def render_text(found: NetAttachments) -> str:
    """bpftool's text."""
    lines = ["xdp:", *(_xdp_text(x) for x in found.xdp), "", "tc:", *(_tc_text(t) for t in found.tc), "",
             "flow_dissector:"]
    text = "\n".join(lines) + "\n"
    text += "".join(f"id {pid}" for pid in found.flow_dissector) + "\n"
    return text


@verb("net", "show", "list", usage="[dev NAME]")
def show(ctx: Context, words: Words) -> None:
    """Show the XDP and tc programs of this network namespace's interfaces (tcx links too) and its
    flow dissector, as bpftool's 'net show'."""
    interface = None
    if words:
        words.expect("dev")
        interface = words.take("an interface name")
    words.end()
    found = net_attachments(interface)
    if ctx.json:
        ctx.emit(json.loads(render_json(found)))
    else:
        ctx.write(render_text(found))
