"""``pybpf perf list``: bpftool's ``perf list``, the programs processes attached through perf events
and raw tracepoints (each process's fds asked with ``BPF_TASK_FD_QUERY``)."""

from __future__ import annotations

from typing import Any

from .command import Context, Words, verb


@verb("perf", "list", "show", default=True)
def perf_list(ctx: Context, words: Words) -> int:
    """List the programs attached through perf events (tracepoints, kprobes, uprobes) and raw
    tracepoints, with the process and fd holding each, as bpftool's 'perf list'."""
    from ..programs import perf_attachments

    words.end()
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
    if ctx.json:
        ctx.emit(records)
        return 0
    for r in records:
        where = "  ".join(f"{key} {r[key]:#x}" if key == "addr" else f"{key} {r[key]}"
                          for key in ("func", "filename", "offset", "addr") if key in r)
        ctx.write(f"pid {r['pid']}  fd {r['fd']}: prog_id {r['prog_id']}  {r['fd_type']}  {r.get('tracepoint', where)}\n")
    return 0
