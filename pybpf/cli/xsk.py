"""pybpf xsk capture --dev IF --queue N --count K --write out.pcap: AF_XDP into a pcap file."""

from __future__ import annotations

import argparse
import sys

from .command import Context, verb
from .progress import Progress


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dev", required=True, metavar="IFNAME", help="the interface")
    parser.add_argument("--queue", type=int, default=0, metavar="N", help="its receive queue (default 0)")
    parser.add_argument("--count", type=int, required=True, metavar="K", help="packets to capture")
    parser.add_argument("--write", required=True, metavar="FILE", help="the pcap file to write")
    parser.add_argument("--mode", choices=["auto", "skb", "drv"], default="auto", help="XDP attach mode (default auto)")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="S", help="give up after S seconds (default 60)")


@verb("xsk", "capture", usage="--dev IFNAME --count K --write FILE [--queue N] [--mode auto|skb|drv] [--timeout S]",
      options=_options)
def capture(ctx: Context, args: argparse.Namespace) -> int:
    """Receive a queue's frames through AF_XDP and write a pcap file (tcpdump reads it).

    The queue's frames go to Python, not to the stack, while it runs."""
    from ..apps.capture import capture as run_capture

    progress = Progress(f"capture {args.dev} queue {args.queue}", total=args.count)
    try:
        result = run_capture(args.dev, args.queue, args.count, args.write, mode=args.mode, timeout=args.timeout,
                             progress=lambda n: progress.step(n - progress.count))
    finally:
        progress.done()
    print(f"{result.packets} packets, {result.bytes} bytes in {result.seconds:.1f} s -> {args.write}", file=sys.stderr)
    if result.timed_out:
        print(f"pybpf: error: only {result.packets} of {args.count} packets within {args.timeout} s", file=sys.stderr)
        return 1
    return 0
