"""``pybpf proxy --listen HOST:PORT --to HOST:PORT``: the kernel splice relay from the command line.

Connections are logged to stderr (``--log-level``: INFO shows every pair, WARNING only failures and
resets); ``--stats SECONDS`` prints the counters periodically, and they are printed once at exit.
SIGTERM or SIGINT stop accepting and let open pairs finish for up to ``--drain`` seconds.
"""

from __future__ import annotations

import argparse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds >= 0")
    return value


def _mebibytes(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of MiB") from None
    if not 1 <= value <= 1 << 20:
        raise argparse.ArgumentTypeError(f"{text!r} MiB is out of range (1 to {1 << 20})")
    return value << 20


def _run(args: argparse.Namespace) -> int:
    import asyncio  # deferred, like the proxy itself: only this verb needs them
    import logging

    from ..apps.proxy import SpliceProxy, parse_address, serve

    logging.basicConfig(level=getattr(logging, args.log_level), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    listen, upstream = parse_address(args.listen), parse_address(args.to)
    proxy = SpliceProxy(listen, upstream, max_connections=args.max_connections, max_buffered=args.max_buffered,
                        connect_timeout=args.connect_timeout or 1e9, idle_timeout=args.idle_timeout or None)
    asyncio.run(serve(proxy, stats_interval=args.stats or None, drain_deadline=args.drain))
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``pybpf proxy``."""
    parser = sub.add_parser("proxy", help="relay TCP connections through a SOCKHASH: the kernel moves the bytes",
                            description="Accept on --listen, connect each client to --to, and splice the pair in the kernel.")
    parser.add_argument("--listen", required=True, metavar="HOST:PORT", help="where to accept clients")
    parser.add_argument("--to", required=True, metavar="HOST:PORT", help="the upstream server")
    parser.add_argument("--max-connections", type=int, default=1024, metavar="N", help="concurrent pairs (default 1024)")
    parser.add_argument("--max-buffered", type=_mebibytes, default=32 << 20, metavar="MIB",
                        help="kernel memory one pair may hold, socket buffers included (default 32)")
    parser.add_argument("--connect-timeout", type=_seconds, default=10.0, metavar="SECONDS",
                        help="give up on an upstream that does not answer (default 10; 0: never)")
    parser.add_argument("--idle-timeout", type=_seconds, default=60.0, metavar="SECONDS",
                        help="reset a pair in which no byte moved for this long (default 60; 0: never)")
    parser.add_argument("--drain", type=_seconds, default=30.0, metavar="SECONDS",
                        help="on SIGTERM/SIGINT, let open pairs finish for up to this long (default 30)")
    parser.add_argument("--stats", type=_seconds, default=0.0, metavar="SECONDS",
                        help="print the counters every SECONDS (default: only at exit)")
    parser.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"), default="WARNING",
                        help="what goes to stderr: INFO logs every connection (default WARNING: failures and resets)")
    parser.set_defaults(func=_run)
