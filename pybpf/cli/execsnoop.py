"""``pybpf execsnoop``: trace process executions as bcc's execsnoop does (``--json`` for lines of JSON)."""

from __future__ import annotations

import argparse
import json
import re
import time

_MAX_ARGS = 20  # pybpf.apps.execsnoop.MAX_ARGS (not imported here: the command starts without BTF)


def _run(args: argparse.Namespace) -> int:
    from ..apps.execsnoop import ExecSnoop, header, line

    name = re.compile(args.name) if args.name else None
    shown = 0
    deadline = time.monotonic() + args.duration if args.duration else None
    with ExecSnoop(max_args=args.max_args) as snoop:
        if not args.json:
            print(("TIME(s) " if args.timestamp else "") + header(), flush=True)
        start = time.time()
        while deadline is None or time.monotonic() < deadline:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            for record in snoop.poll(wait if wait is None else min(wait, 1.0)):
                if args.failed and record.ret == 0:
                    continue
                if args.uid is not None and record.uid != args.uid:
                    continue
                if name is not None and not name.search(record.comm):
                    continue
                if args.json:
                    print(json.dumps(record.as_dict(), separators=(",", ":")), flush=True)
                else:
                    stamp = f"{record.time - start:<8.3f}" if args.timestamp else ""
                    print(stamp + line(record), flush=True)
                shown += 1
                if args.count and shown >= args.count:
                    return 0
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``pybpf execsnoop``."""
    parser = sub.add_parser("execsnoop", help="trace new processes (execve), as bcc's execsnoop",
                            description="Every execve on the system: command, pid, parent pid, result, arguments. "
                                        "Ctrl-C stops.")
    parser.add_argument("-x", "--failed", action="store_true", help="only failed execs")
    parser.add_argument("-t", "--timestamp", action="store_true", help="a TIME(s) column")
    parser.add_argument("-u", "--uid", type=int, help="only this user id")
    parser.add_argument("-n", "--name", metavar="REGEX", help="only commands matching REGEX")
    parser.add_argument("--max-args", type=int, default=_MAX_ARGS, help=f"arguments to read (default {_MAX_ARGS})")
    parser.add_argument("--count", type=int, default=0, metavar="N", help="stop after N execs")
    parser.add_argument("--duration", type=float, default=0, metavar="S", help="stop after S seconds")
    parser.add_argument("--json", "-j", action="store_true", dest="json", default=argparse.SUPPRESS,
                        help="one JSON object per exec")
    parser.set_defaults(func=_run)
