"""``pybpf map event_pipe id N | pinned PATH [type NAME] [count N] [timeout S]``: print the records
a PERF_EVENT_ARRAY (as bpftool's verb) or a RINGBUF receives, as hex or, with ``type NAME`` (a
struct in the map's BTF, else the kernel's), formatted; ``--json`` prints one object per line."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from .. import Map, MapType
from ..events import PerfBuffer, RingBuffer
from . import maps
from .maps import UsageError, _int, _open_one, _take


def _formatter(m: Map, name: str) -> Any:
    """A function formatting a record as BTF type ``name`` says (the map's BTF first, then vmlinux)."""
    from ..btf import BtfHandle, vmlinux
    from ..btf.values import format_value

    kind, _, bare = name.rpartition(" ")
    candidates = []
    info = m.info()
    if getattr(info, "btf_id", 0):
        with BtfHandle.from_id(info.btf_id) as handle:
            candidates.append(handle.btf())
    candidates.append(vmlinux())
    for btf in candidates:
        found = [t for t in btf.find(bare) if not kind or t.kind.name.lower() == kind.lower()]
        if found:
            target = found[0]
            return lambda data: format_value(btf, target, data)
    raise UsageError(f"no BTF type {name!r} in the map's BTF or the kernel's")


def _hex(data: bytes) -> str:
    rows = [" ".join(f"{b:02x}" for b in data[i: i + 16]) for i in range(0, len(data), 16)]
    return "\n".join(rows)


def _cmd_event_pipe(args: argparse.Namespace, words: list[str]) -> int:
    m = _open_one(words)
    options = {"type": "", "count": "0", "timeout": "0"}
    while words:
        word = _take(words, "type NAME, count N or timeout S")
        if word not in options:
            raise UsageError(f"unknown option {word!r} (expected type, count or timeout)")
        options[word] = _take(words, f"a value for {word}")
    count, timeout = _int(options["count"], "count"), float(options["timeout"])
    with m:
        fmt = _formatter(m, options["type"]) if options["type"] else None
        if m.type == MapType.PERF_EVENT_ARRAY:
            reader: Any = PerfBuffer(m)
        elif m.type == MapType.RINGBUF:
            reader = RingBuffer(m)
        else:
            raise UsageError(f"event_pipe reads PERF_EVENT_ARRAY and RINGBUF maps, not {getattr(m.type, 'name', m.type)}")
    shown, lost = 0, 0
    deadline = time.monotonic() + timeout if timeout else None

    def show(record: memoryview) -> None:
        nonlocal shown
        _print(args.json, bytes(record), fmt)
        shown += 1
        if count and shown >= count:
            raise _Enough  # consumes this record and no more

    with reader:
        try:
            while deadline is None or time.monotonic() < deadline:
                wait = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))
                reader.consume(show, timeout=wait)
                if getattr(reader, "lost", 0) != lost:
                    _print_lost(args.json, reader.lost - lost)
                    lost = reader.lost
        except _Enough:
            pass
    return 0


class _Enough(Exception):
    """Raised from the record callback once ``count`` records were printed."""


def _print(as_json: bool, record: bytes, fmt: Any) -> None:
    if as_json:
        out: dict[str, Any] = {"type": 9, "size": len(record), "data": [f"0x{b:02x}" for b in record]}
        if fmt is not None:
            out["formatted"] = fmt(record)
        print(json.dumps(out, separators=(",", ":")), flush=True)
        return
    now = time.time_ns()
    print(f"== @{now // 10**9}.{now % 10**9:09d} size: {len(record)} =====")
    print(json.dumps(fmt(record)) if fmt is not None else _hex(record), flush=True)


def _print_lost(as_json: bool, count: int) -> None:
    if as_json:
        print(json.dumps({"type": 2, "lost": {"count": count}}, separators=(",", ":")), flush=True)
    else:
        print(f"lost {count} events", flush=True)


def register() -> None:
    """Add ``event_pipe`` to ``pybpf map``'s verbs."""
    maps.VERBS["event_pipe"] = _cmd_event_pipe


def _perf_list(args: argparse.Namespace) -> int:
    """``pybpf perf list``: bpftool's ``perf list``, the programs processes attached through perf
    events and raw tracepoints."""
    from ..programs import perf_attachments

    records = []
    for a in perf_attachments():
        record: dict[str, Any] = {"pid": a.pid, "fd": a.fd, "prog_id": a.prog_id, "fd_type": a.fd_type}
        if a.fd_type in ("raw_tracepoint", "tracepoint"):
            record["tracepoint"] = a.name
        elif a.fd_type in ("kprobe", "kretprobe"):
            record.update({"func": a.name, "offset": a.offset} if a.name else {"addr": a.addr})
        else:
            record.update({"filename": a.name, "offset": a.offset})
        records.append(record)
    if args.json:
        print(json.dumps(records, separators=(",", ":")))
        return 0
    for r in records:
        where = "  ".join(f"{key} {r[key]:#x}" if key == "addr" else f"{key} {r[key]}"
                          for key in ("func", "filename", "offset", "addr") if key in r)
        print(f"pid {r['pid']}  fd {r['fd']}: prog_id {r['prog_id']}  {r['fd_type']}  {r.get('tracepoint', where)}")
    return 0


def add_perf_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``pybpf perf list|show``."""
    parser = sub.add_parser("perf", help="programs attached through perf events and raw tracepoints (bpftool's 'perf list')")
    parser.add_argument("verb", choices=["list", "show"])
    parser.set_defaults(func=_perf_list)
