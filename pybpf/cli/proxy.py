"""``pybpf proxy --listen HOST:PORT --to HOST:PORT``: the kernel splice relay from the command line."""

from __future__ import annotations

import argparse
import asyncio

from ..apps.proxy import parse_address, serve


def _run(args: argparse.Namespace) -> int:
    listen, upstream = parse_address(args.listen), parse_address(args.to)
    try:
        asyncio.run(serve(listen, upstream, max_connections=args.max_connections))
    except KeyboardInterrupt:
        pass
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``pybpf proxy``."""
    parser = sub.add_parser("proxy", help="relay TCP connections through a SOCKHASH: the kernel moves the bytes",
                            description="Accept on --listen, connect each client to --to, and splice the pair in the kernel.")
    parser.add_argument("--listen", required=True, metavar="HOST:PORT", help="where to accept clients")
    parser.add_argument("--to", required=True, metavar="HOST:PORT", help="the upstream server")
    parser.add_argument("--max-connections", type=int, default=1024, metavar="N", help="concurrent pairs (default 1024)")
    parser.set_defaults(func=_run)
