"""``pybpf map event_pipe MAP [type NAME] [count N] [timeout S]``: print the records a
PERF_EVENT_ARRAY (as bpftool's verb) or a RINGBUF receives, as hex or, with ``type NAME`` (a type
in the map's BTF, else the kernel's), formatted; under ``--json`` a JSON array streamed as
bpftool's, one object per record."""

from __future__ import annotations

import os
import time
from typing import Any

from .command import Context, UsageError, Words, verb
from .objects import MAP_GRAMMAR, map_fd
from .words import parse_int


class _Enough(Exception):
    """Raised from the record callback once ``count`` records were printed."""


def _formatter(fd: int, name: str) -> Any:
    """A function formatting a record as BTF type ``name`` says (the map's BTF first, then vmlinux)."""
    from ..btf import BtfHandle, vmlinux
    from ..btf.typed import format_value
    from ..map import Map

    kind, _, bare = name.rpartition(" ")
    candidates = []
    with Map.from_fd(fd) as m:
        btf_id = m.info().btf_id
    if btf_id:
        with BtfHandle.from_id(btf_id) as handle:
            candidates.append(handle.btf())
    candidates.append(vmlinux())
    for btf in candidates:
        found = [t for t in btf.find(bare) if not kind or t.kind.name.lower() == kind.lower()]
        if found:
            target = found[0]
            return lambda data: format_value(btf, target.id, data)
    raise UsageError(f"no BTF type '{name}' in the map's BTF or the kernel's")


def _hex(data: bytes) -> str:
    return "\n".join(" ".join(f"{b:02x}" for b in data[i: i + 16]) for i in range(0, len(data), 16))


@verb("map", "event_pipe", usage=f"MAP [type TYPE_NAME] [count N] [timeout SECONDS]\n       {MAP_GRAMMAR}")
def event_pipe(ctx: Context, words: Words) -> int:
    """Print the records a PERF_EVENT_ARRAY or RINGBUF map receives, until interrupted (or 'count'
    records, or 'timeout' seconds): hex, or formatted as a BTF type with 'type' ("struct event")."""
    from ..map import Map
    from .._sys.constants import MapType

    fd = map_fd(words)
    try:
        options = {"type": "", "count": "0", "timeout": "0"}
        while words:
            word = words.take("type NAME, count N or timeout S")
            if word not in options:
                raise UsageError(f"unknown option '{word}' (expected type, count or timeout)")
            options[word] = words.take(f"a value for {word}")
        count = parse_int(options["count"], "count")
        try:
            timeout = float(options["timeout"])
        except ValueError:
            raise UsageError(f"timeout: '{options['timeout']}' is not a number of seconds") from None
        fmt = _formatter(fd, options["type"]) if options["type"] else None
        with Map.from_fd(fd) as m:
            reader = _reader(m, MapType)
    finally:
        os.close(fd)
    return _pipe(ctx, reader, fmt, count, timeout)


def _reader(m: Any, types: Any) -> Any:
    from ..events import PerfBuffer, RingBuffer

    if m.type == types.PERF_EVENT_ARRAY:
        return PerfBuffer(m)
    if m.type == types.RINGBUF:
        return RingBuffer(m)
    raise UsageError(f"event_pipe reads PERF_EVENT_ARRAY and RINGBUF maps, not {getattr(m.type, 'name', m.type)}")


def _pipe(ctx: Context, reader: Any, fmt: Any, count: int, timeout: float) -> int:
    shown, lost = 0, 0
    deadline = time.monotonic() + timeout if timeout else None
    if ctx.json:
        ctx.jw.start_array()

    def show(record: memoryview) -> None:
        nonlocal shown
        data = bytes(record)
        if ctx.json:
            out: dict[str, Any] = {"type": 9, "size": len(data), "data": [f"0x{b:02x}" for b in data]}
            if fmt is not None:
                out["formatted"] = fmt(data)
            ctx.jw.value(out)
        else:
            now = time.time_ns()
            ctx.write(f"== @{now // 10**9}.{now % 10**9:09d} size: {len(data)} =====\n")
            ctx.write((_json_line(fmt(data)) if fmt is not None else _hex(data)) + "\n")
        shown += 1
        if count and shown >= count:
            raise _Enough  # consumes this record and no more

    with reader:
        try:
            while deadline is None or time.monotonic() < deadline:
                wait = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))
                reader.consume(show, timeout=wait)
                if getattr(reader, "lost", 0) != lost:
                    if ctx.json:
                        ctx.jw.value({"type": 2, "lost": {"count": reader.lost - lost}})
                    else:
                        ctx.write(f"lost {reader.lost - lost} events\n")
                    lost = reader.lost
        except _Enough:
            pass
    if ctx.json:
        ctx.jw.end_array()
    return 0


def _json_line(value: Any) -> str:
    import json

    return json.dumps(value)
