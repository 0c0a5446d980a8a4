"""The ``pybpf`` command: bpftool-like verbs on maps, and the applications."""

from __future__ import annotations

import argparse
import os
import sys

from .. import BPFError
from . import btf, maps, progs, proxy, xsk
from . import reuseport as reuseport_cli
from . import accelerate as accelerate_cli
from . import cgroup as cgroup_cli
from . import net as net_cli
from . import link as link_cli
from . import dispatch as dispatch_cli


def _demo(args: argparse.Namespace) -> int:
    from ..apps import demo

    results = demo.run()
    return 0 if all(r.ok for r in results) else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pybpf", description="eBPF maps, socket maps and AF_XDP from Python")
    parser.add_argument("--json", "-j", action="store_true", help="JSON output shaped like bpftool's")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="show each socket map doing its job on this kernel")
    demo.set_defaults(func=_demo)
    maps.add_parser(sub)
    proxy.add_parser(sub)
    progs.add_parser(sub)
    btf.add_parser(sub)
    xsk.add_parser(sub)
    reuseport_cli.add_parser(sub)
    accelerate_cli.add_parser(sub)
    cgroup_cli.add_parser(sub)
    net_cli.add_parser(sub)
    link_cli.add_parser(sub)
    dispatch_cli.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; errors are one line on stderr and a non-zero exit, never a traceback."""
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # the reader went away (| head): stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (BPFError, OSError, ValueError, TypeError) as err:
        print(f"pybpf: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
