"""``pybpf execsnoop``: trace process executions as bcc's execsnoop does (``--json``: a JSON object
per line)."""

from __future__ import annotations

import argparse
import json
import re
import time

from .command import Context, verb

_MAX_ARGS = 20  # pybpf.apps.execsnoop.MAX_ARGS (not imported here: the command starts without BTF)


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-x", "--failed", action="store_true", help="only failed execs")
    parser.add_argument("-t", "--timestamp", action="store_true", help="a TIME(s) column")
    parser.add_argument("-u", "--uid", type=int, help="only this user id")
    parser.add_argument("-n", "--name", metavar="REGEX", help="only commands matching REGEX")
    parser.add_argument("--max-args", type=int, default=_MAX_ARGS, help=f"arguments to read (default {_MAX_ARGS})")
    parser.add_argument("--count", type=int, default=0, metavar="N", help="stop after N execs")
    parser.add_argument("--duration", type=float, default=0, metavar="S", help="stop after S seconds")


@verb("execsnoop", usage="[-x] [-t] [-u UID] [-n REGEX] [--max-args N] [--count N] [--duration S]", options=_options)
def execsnoop(ctx: Context, args: argparse.Namespace) -> int:
    """Trace every execve on the system, as bcc's execsnoop: command, pid, parent pid, result,
    arguments (a JSON object per line under --json). Ctrl-C stops."""
    from ..apps.execsnoop import ExecSnoop, header, line

    name = re.compile(args.name) if args.name else None
    shown = 0
    deadline = time.monotonic() + args.duration if args.duration else None
    with ExecSnoop(max_args=args.max_args) as snoop:
        if not ctx.json:
            print(("TIME(s) " if args.timestamp else "") + header(), flush=True)
        start = time.time()
        while deadline is None or time.monotonic() < deadline:
            wait = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))
            for record in snoop.poll(wait):
                if (args.failed and record.ret == 0) or (args.uid is not None and record.uid != args.uid) \
                        or (name is not None and not name.search(record.comm)):
                    continue
                if ctx.json:
                    print(json.dumps(record.as_dict(), separators=(",", ":")), flush=True)
                else:
                    stamp = f"{record.time - start:<8.3f}" if args.timestamp else ""
                    print(stamp + line(record), flush=True)
                shown += 1
                if args.count and shown >= args.count:
                    return 0
    return 0
