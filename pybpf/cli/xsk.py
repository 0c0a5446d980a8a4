"""``pybpf xsk capture --dev IF --queue N --count K --write out.pcap``: AF_XDP into a pcap file."""

from __future__ import annotations

import argparse
import sys

from ..apps.capture import capture
from .progress import Progress


def _capture(args: argparse.Namespace) -> int:
    progress = Progress(f"capture {args.dev} queue {args.queue}", total=args.count)
    try:
        result = capture(args.dev, args.queue, args.count, args.write, mode=args.mode, timeout=args.timeout,
                         progress=lambda n: progress.step(n - progress.count))
    finally:
        progress.done()
    print(f"{result.packets} packets, {result.bytes} bytes in {result.seconds:.1f} s -> {args.write}", file=sys.stderr)
    if result.timed_out:
        print(f"pybpf: error: only {result.packets} of {args.count} packets within {args.timeout} s", file=sys.stderr)
        return 1
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``pybpf xsk``."""
    parser = sub.add_parser("xsk", help="AF_XDP sockets: capture a queue into a pcap file")
    verbs = parser.add_subparsers(dest="verb", required=True)
    cap = verbs.add_parser("capture", help="receive through AF_XDP and write a pcap file (tcpdump reads it)",
                           description="The queue's frames go to Python, not to the stack, while it runs.")
    cap.add_argument("--dev", required=True, metavar="IFNAME", help="the interface")
    cap.add_argument("--queue", type=int, default=0, metavar="N", help="its receive queue (default 0)")
    cap.add_argument("--count", type=int, required=True, metavar="K", help="packets to capture")
    cap.add_argument("--write", required=True, metavar="FILE", help="the pcap file to write")
    cap.add_argument("--mode", choices=["auto", "skb", "drv"], default="auto", help="XDP attach mode (default auto)")
    cap.add_argument("--timeout", type=float, default=60.0, metavar="S", help="give up after S seconds (default 60)")
    cap.set_defaults(func=_capture)
