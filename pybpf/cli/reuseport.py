"""``pybpf reuseport serve|status|flip|unpin``: run, inspect and steer a pinned SO_REUSEPORT group.

``serve`` runs the example server as the next generation of the group (see
``pybpf.apps.reuseport``); ``status`` shows which slot is selected and who holds each slot;
``flip`` steers new traffic to another slot; ``unpin`` removes the group's pins.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from pybpf.apps import reuseport


def _serve(args: argparse.Namespace) -> int:
    from pybpf.apps import reuseport_server  # deferred: threads only for this verb

    return reuseport_server.run(args.listen, args.name, args.pin_root, args.grace)


def _status(args: argparse.Namespace) -> int:
    group = reuseport.status(args.name, args.pin_root)
    if getattr(args, "json", False):
        print(json.dumps(dataclasses.asdict(group), indent=2))
        return 0
    print(f"{group.directory}: selected slot {group.selected}")
    for slot in group.slots:
        if slot.cookie is None and not args.all:
            continue
        mark = "*" if slot.slot == group.selected else " "
        holder = f"gen {slot.generation} pid {slot.pid} {slot.address}" if slot.generation else "-"
        state = f"cookie {slot.cookie}" if slot.cookie is not None else "empty"
        print(f"{mark} slot {slot.slot}: {state:<16} {holder}")
    return 0


def _flip(args: argparse.Namespace) -> int:
    previous = reuseport.flip(args.name, args.slot, args.pin_root, force=args.force)
    print(f"{args.name}: slot {previous} -> {args.slot}")
    return 0


def _unpin(args: argparse.Namespace) -> int:
    if not reuseport.unpin(args.name, args.pin_root):
        raise FileNotFoundError(f"no reuseport group {args.name!r} pinned under {args.pin_root}")
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``pybpf reuseport``."""
    parser = sub.add_parser("reuseport", help="zero-downtime restart over a SO_REUSEPORT group", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--pin-root", default=reuseport.PIN_ROOT, help=f"bpffs directory of the groups (default {reuseport.PIN_ROOT})")

    serve = verbs.add_parser("serve", parents=[common], help="serve as the group's next generation (the old one drains and exits)")
    serve.add_argument("--listen", required=True, type=reuseport.parse_address, help="HOST:PORT (port 0: pick one)")
    serve.add_argument("--name", default="default", help="the group's name")
    serve.add_argument("--grace", type=float, default=5.0,
                       help="seconds a replaced generation stands by to take traffic back (default 5)")
    serve.set_defaults(func=_serve)

    status = verbs.add_parser("status", parents=[common], help="the selected slot and the generation in each slot")
    status.add_argument("name", nargs="?", default="default")
    status.add_argument("--all", action="store_true", help="list empty slots too")
    status.set_defaults(func=_status)

    flip = verbs.add_parser("flip", parents=[common], help="steer new connections to another slot")
    flip.add_argument("name")
    flip.add_argument("slot", type=int)
    flip.add_argument("--force", action="store_true", help="allow an empty slot (the kernel's default selection)")
    flip.set_defaults(func=_flip)

    unpin = verbs.add_parser("unpin", parents=[common], help="remove the group's pins")
    unpin.add_argument("name")
    unpin.set_defaults(func=_unpin)
