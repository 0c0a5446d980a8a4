"""``pybpf dispatch VERB``: sk_lookup dispatch with tubular's verbs (load, bind, unbind, bindings,
register, register-pid, unregister, list, metrics, upgrade, unload); state pinned in bpffs."""

from __future__ import annotations

import argparse
import json
import os
import socket
from typing import Any

from ..apps.dispatch import Dispatcher
from .words import UsageError

_VERBS = {
    "load": "", "unload": "", "upgrade": "", "bindings": "", "list": "", "metrics": "",
    "bind": "LABEL tcp|udp PREFIX PORT", "unbind": "LABEL tcp|udp PREFIX PORT", "register": "LABEL",
    "register-pid": "PID LABEL tcp|udp ADDRESS PORT", "unregister": "LABEL tcp|udp [ipv4|ipv6]",
}


def _words(args: argparse.Namespace, low: int, high: int | None = None) -> list[str]:
    words = list(args.words)
    if not low <= len(words) <= (high if high is not None else low):
        raise UsageError(f"dispatch {args.verb} takes {_VERBS[args.verb] or 'no arguments'}")
    return words


def _emit(args: argparse.Namespace, records: list[dict[str, Any]], header: list[str]) -> None:
    if args.json:
        print(json.dumps(records, separators=(",", ":")))
        return
    rows = [header] + [[str(r[h]) for h in header] for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def run(args: argparse.Namespace) -> int:
    """Run one verb against the dispatcher of ``--netns`` / ``--pin-dir``."""
    netns, pin_dir = args.netns, args.pin_dir
    if args.verb == "load":
        _words(args, 0)
        with Dispatcher.load(netns, pin_dir, max_labels=args.max_labels) as loaded:
            print(f"loaded: dispatching {netns or 'this network namespace'}; state in {loaded.pin_dir}")
        return 0
    with Dispatcher.open(netns, pin_dir) as d:
        verb = args.verb
        if verb == "unload":
            _words(args, 0)
            d.unload()
            print(f"unloaded from {d.pin_dir}")
        elif verb == "upgrade":
            _words(args, 0)
            d.upgrade()
            print("upgraded: the program was replaced under the link")
        elif verb == "bind":
            label, protocol, prefix, port = _words(args, 4)
            print(f"bound {d.bind(label, protocol, prefix, port)}")
        elif verb == "unbind":
            label, protocol, prefix, port = _words(args, 4)
            d.unbind(label, protocol, prefix, port)
            print(f"unbound {label} {protocol} {prefix} {port}")
        elif verb == "bindings":
            _words(args, 0)
            _emit(args, [{"label": b.label, "protocol": b.protocol, "prefix": str(b.prefix), "port": b.port}
                         for b in d.bindings_list()], ["label", "protocol", "prefix", "port"])
        elif verb == "register":
            (label,) = _words(args, 1)
            with socket.socket(fileno=os.dup(0)) as sock:
                print(f"registered {_dest(d.register(label, sock))}")
        elif verb == "register-pid":
            pid, label, protocol, address, port = _words(args, 5)
            if not pid.isdigit():
                raise UsageError(f"PID must be a number, not {pid!r}")
            print(f"registered {_dest(d.register_pid(int(pid), label, protocol, address, port))}")
        elif verb == "unregister":
            label, protocol, *family = _words(args, 2, 3)
            d.unregister(label, protocol, *family)
            print(f"unregistered {label} {protocol} {family[0] if family else 'ipv4'}")
        elif verb == "list":
            _words(args, 0)
            _emit(args, [{"label": x.label, "protocol": x.protocol, "family": x.family, "socket_cookie": x.cookie}
                         for x in d.destinations()], ["label", "protocol", "family", "socket_cookie"])
        elif verb == "metrics":
            _words(args, 0)
            _emit(args, [{"label": m.label, "lookups": m.lookups, "misses": m.misses, "errors": m.errors}
                         for m in d.metrics_list()], ["label", "lookups", "misses", "errors"])
    return 0


def _dest(dest: Any) -> str:
    return f"{dest.label} {dest.protocol} {dest.family} (socket cookie {dest.cookie})"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``pybpf dispatch``."""
    parser = sub.add_parser("dispatch", help="sk_lookup: any addresses and ports to one socket, by label (tubular's verbs)",
                            description="Dispatch new connections and datagrams to sockets by label with an SK_LOOKUP "
                            "program; state lives in bpffs (default /sys/fs/bpf/pybpf-dispatch-<namespace inode>).")
    parser.add_argument("--netns", metavar="PATH", help="network namespace (default: this process's)")
    parser.add_argument("--pin-dir", metavar="DIR", help="bpffs directory of the state (default: per namespace)")
    parser.add_argument("--max-labels", type=int, default=1024, metavar="N", help="labels at most (load; default 1024)")
    parser.add_argument("verb", choices=sorted(_VERBS))
    parser.add_argument("words", nargs=argparse.REMAINDER, help="; ".join(f"{v} {w}" for v, w in _VERBS.items() if w))
    parser.set_defaults(func=run)
