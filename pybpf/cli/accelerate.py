"""``pybpf accelerate --cgroup PATH``: local TCP connections of a cgroup's processes go socket
to socket (SOCK_OPS + SK_MSG), until Ctrl-C."""

from __future__ import annotations

import argparse

from ..apps.accelerate import DEFAULT_MAX_CONNECTIONS, run


def _run(args: argparse.Namespace) -> int:
    return run(args.cgroup, loopback_only=not args.all_addresses, max_connections=args.max_connections,
               report=lambda line: print(line, flush=True), interval=args.interval)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``pybpf accelerate``."""
    parser = sub.add_parser("accelerate", help="local TCP connections of a cgroup go socket to socket",
                            description="Put the TCP connections of the processes in a cgroup into a SOCKHASH when "
                            "they are established, and what one local socket sends straight into its peer's "
                            "receive queue. Ctrl-C detaches; accelerated connections keep going until they close.")
    parser.add_argument("--cgroup", required=True, metavar="PATH", help="a cgroup v2 directory")
    parser.add_argument("--all-addresses", action="store_true",
                        help="also connections between non-loopback local addresses (default: loopback only)")
    parser.add_argument("--max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS, metavar="N",
                        help=f"accelerated at once (default {DEFAULT_MAX_CONNECTIONS})")
    parser.add_argument("--interval", type=float, default=5.0, metavar="S", help="report every S seconds (default 5)")
    parser.set_defaults(func=_run)
