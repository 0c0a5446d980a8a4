"""pybpf prog: loaded programs, shown as bpftool shows them (text and ``--json``)."""

from __future__ import annotations

import time
from typing import Any

from .._sys import commands
from .._sys.constants import Cmd, ProgramType
from .._sys.prog import prog_map_ids
from .command import Context, Words, verb
from .maps import _fdinfo, _type_name
from .objects import PROG_GRAMMAR, closing, prog_fds

GRAMMAR = PROG_GRAMMAR


def _loaded_at(boot_ns: int) -> int:
    """A load time (ns since boot) as wall-clock seconds, computed as bpftool's ``print_boot_time``."""
    real_s, real_ns = divmod(time.clock_gettime_ns(time.CLOCK_REALTIME), 10**9)
    boot_s, boot_ns_part = divmod(time.clock_gettime_ns(time.CLOCK_BOOTTIME), 10**9)
    rest = real_ns - boot_ns_part + boot_ns
    return real_s - boot_s + (rest // 10**9 if rest >= 0 else -(-rest // 10**9))  # C's division truncates


def _record(fd: int) -> dict[str, Any]:
    raw = commands.prog_info(fd)
    fdinfo = _fdinfo(fd)
    name = bytes(raw.name).split(b"\0", 1)[0].decode(errors="replace")
    record: dict[str, Any] = {"id": raw.id, "type": _type_name(raw.type, ProgramType)}
    if name:
        record["name"] = name
    record["tag"] = bytes(raw.tag).hex()
    record["gpl_compatible"] = bool(raw.gpl_compatible)
    if raw.run_time_ns:
        record["run_time_ns"], record["run_cnt"] = raw.run_time_ns, raw.run_cnt
    if raw.recursion_misses:
        record["recursion_misses"] = raw.recursion_misses
    if raw.load_time:
        record["loaded_at"], record["uid"] = _loaded_at(raw.load_time), raw.created_by_uid
    record["bytes_xlated"] = raw.xlated_prog_len
    record["jited"] = bool(raw.jited_prog_len)
    if raw.jited_prog_len:
        record["bytes_jited"] = raw.jited_prog_len
    if "memlock" in fdinfo:
        record["bytes_memlock"] = int(fdinfo["memlock"])
    map_ids = prog_map_ids(fd, raw.nr_map_ids)
    if map_ids:
        record["map_ids"] = map_ids
    if raw.btf_id:
        record["btf_id"] = raw.btf_id
    return record


def _text(r: dict[str, Any]) -> str:
    kind = r["type"] if isinstance(r["type"], str) else f"type {r['type']}"
    text = f"{r['id']}: {kind}  " + (f"name {r['name']}  " if "name" in r else "") + f"tag {r['tag']}"
    text += "  gpl" if r["gpl_compatible"] else ""
    if "run_time_ns" in r:
        text += f" run_time_ns {r['run_time_ns']} run_cnt {r['run_cnt']}"
    if "recursion_misses" in r:
        text += f" recursion_misses {r['recursion_misses']}"
    text += "\n"
    if "loaded_at" in r:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(r["loaded_at"]))
        text += f"\tloaded_at {stamp}  uid {r['uid']}\n"
    text += f"\txlated {r['bytes_xlated']}B" + (f"  jited {r['bytes_jited']}B" if r["jited"] else "  not jited")
    if "bytes_memlock" in r:
        text += f"  memlock {r['bytes_memlock']}B"
    if "map_ids" in r:
        text += "  map_ids " + ",".join(map(str, r["map_ids"]))
    if "btf_id" in r:
        text += f"\n\tbtf_id {r['btf_id']}"
    return text + "\n"


def _show(ctx: Context, fd: int) -> None:
    record = _record(fd)
    if ctx.json:
        ctx.emit(record)
    else:
        ctx.write(_text(record))


@verb("prog", "show", "list", usage="[PROG]", default=True)
def show(ctx: Context, words: Words) -> None:
    """Show every loaded program, or those PROG names: type, name, tag, load time, sizes, maps."""
    if words:
        fds = prog_fds(words)
        with closing(fds):
            words.end()
            if ctx.json and len(fds) > 1:
                ctx.jw.start_array()
            for fd in fds:
                _show(ctx, fd)
            if ctx.json and len(fds) > 1:
                ctx.jw.end_array()
        return
    if ctx.json:
        ctx.jw.start_array()
    for fd in commands.each_fd(Cmd.PROG_GET_NEXT_ID, Cmd.PROG_GET_FD_BY_ID, "program"):
        with closing([fd]):
            _show(ctx, fd)
    if ctx.json:
        ctx.jw.end_array()
