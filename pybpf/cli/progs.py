"""``pybpf prog list|show``: loaded programs, with ``--json`` shaped like bpftool's."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..programs import Program, ProgramInfo, loaded_programs
from .maps import UsageError, _int, _take


def _record(info: ProgramInfo) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": info.id,
        "type": info.type.name.lower() if hasattr(info.type, "name") else info.type,
        "name": info.name,
        "tag": info.tag,
        "gpl_compatible": info.gpl_compatible,
        "loaded_at": info.load_time,
        "uid": info.created_by_uid,
        "bytes_xlated": info.xlated_prog_len,
        "jited": bool(info.jited_prog_len),
        "bytes_jited": info.jited_prog_len,
        "map_ids": list(info.map_ids),
    }
    if info.btf_id:
        record["btf_id"] = info.btf_id
    if info.run_cnt:
        record["run_time_ns"], record["run_cnt"] = info.run_time_ns, info.run_cnt
    return record


def _select(words: list[str]) -> ProgramInfo:
    how = _take(words, "'id N' or 'pinned PATH'")
    if how == "id":
        opened = Program.from_id(_int(_take(words, "a program id"), "program id"))
    elif how == "pinned":
        opened = Program.from_pin(_take(words, "a pin path"))
    else:
        raise UsageError(f"expected 'id' or 'pinned', got {how!r}")
    with opened:
        return opened.info()


def run(args: argparse.Namespace) -> int:
    """``pybpf prog list`` / ``pybpf prog show id N|pinned PATH``."""
    words = list(args.words)
    infos = [_select(words)] if words else list(loaded_programs())
    records = [_record(i) for i in infos]
    if args.json:
        print(json.dumps(records[0] if args.words else records, separators=(",", ":")))
        return 0
    for r in records:
        print(f"{r['id']}: {r['type']}  name {r['name']}  tag {r['tag']}{'  gpl' if r['gpl_compatible'] else ''}")
        print(f"\txlated {r['bytes_xlated']}B  jited {r['bytes_jited']}B  map_ids {','.join(map(str, r['map_ids'])) or '-'}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``pybpf prog``."""
    parser = sub.add_parser("prog", help="list loaded programs (bpftool's 'prog show')")
    parser.add_argument("verb", choices=["list", "show"])
    parser.add_argument("words", nargs=argparse.REMAINDER, help="id N | pinned PATH")
    parser.set_defaults(func=run)
