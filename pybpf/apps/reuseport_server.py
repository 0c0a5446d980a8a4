"""An example zero-downtime server: ``python -m pybpf.apps.reuseport_server --listen 127.0.0.1:PORT --name NAME``.

Each client sends a line and gets back ``gen N pid P``. Start the same command again to replace
the running server: the new one takes over with one map update; the old one stands by for
``--grace`` seconds (taking traffic back if the new one dies meanwhile), drains and exits.
SIGTERM or SIGINT stop a server without a successor. Progress lines go to stdout: ``ready ...``
once traffic is ours, ``replaced ...`` when a successor took over, ``took back ...`` when it went
away during the grace period, ``draining ...`` and ``exit ...`` at the end.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from .reuseport import PIN_ROOT, Address, Generation, parse_address

_LINE_LIMIT = 4096


def _answer(conn: socket.socket, reply: bytes, timeout: float) -> None:
    """Read one line from ``conn``, send ``reply``, close."""
    with conn:
        conn.settimeout(timeout)
        received = b""
        try:
            while b"\n" not in received and len(received) < _LINE_LIMIT:
                chunk = conn.recv(_LINE_LIMIT)
                if not chunk:
                    break
                received += chunk
            conn.sendall(reply)
        except OSError:
            pass


def serve(address: Address, name: str, *, pin_root: str = PIN_ROOT, stop: threading.Event | None = None,
          out: Callable[[str], None] = print, workers: int = 16, timeout: float = 10.0, grace: float = 5.0) -> int:
    """Serve ``address`` as the next generation of group ``name`` until replaced (and the successor
    survived ``grace`` seconds) or ``stop`` is set; returns how many connections were answered."""
    stop = stop or threading.Event()
    served = drained = 0
    with Generation.join(address, name, pin_root=pin_root) as gen, ThreadPoolExecutor(workers) as pool:
        reply = f"gen {gen.number} pid {os.getpid()}\n".encode()
        previous = gen.take_over()
        host, port = gen.address
        out(f"ready gen {gen.number} pid {os.getpid()} slot {gen.slot} (was {previous}) listening {host}:{port}")
        while True:
            for conn in gen.connections(stop.is_set):
                pool.submit(_answer, conn, reply, timeout)
                served += 1
            if stop.is_set():
                out(f"stopping gen {gen.number}: draining the accept queue")
                break
            slot, _, pid = gen.successor()
            out(f"replaced gen {gen.number} by slot {slot} pid {pid}: standing by for {grace:g} s")
            for conn in gen.standby(grace):
                pool.submit(_answer, conn, reply, timeout)
                served += 1
            if not gen.took_back:
                out(f"draining gen {gen.number}: the successor held for {grace:g} s")
                break
            out(f"took back gen {gen.number}: slot {slot} pid {pid} went away")
        for conn in gen.drain():
            pool.submit(_answer, conn, reply, timeout)
            drained += 1
    out(f"exit gen {gen.number} served {served + drained} drained {drained}")
    return served + drained


def _flushing_print(line: str) -> None:
    print(line, flush=True)


def run(address: Address, name: str, pin_root: str = PIN_ROOT, grace: float = 5.0, timeout: float = 10.0) -> int:
    """Serve with progress lines on stdout until replaced, or until SIGTERM/SIGINT (which drain too)."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    serve(address, name, pin_root=pin_root, stop=stop, out=_flushing_print, grace=grace, timeout=timeout)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: errors are one line on stderr and exit status 1."""
    parser = argparse.ArgumentParser(prog="python -m pybpf.apps.reuseport_server", description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, type=parse_address, help="HOST:PORT (port 0: pick one)")
    parser.add_argument("--name", default="default", help="the group's name (its pin directory)")
    parser.add_argument("--pin-root", default=PIN_ROOT, help=f"bpffs directory of the groups (default {PIN_ROOT})")
    parser.add_argument("--grace", type=float, default=5.0,
                        help="seconds a replaced generation stands by, ready to take traffic back (default 5)")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds a connection may take to send its line (default 10)")
    args = parser.parse_args(argv)
    if not args.grace >= 0 or not args.timeout > 0:
        parser.error("--grace must be a number of seconds >= 0 and --timeout one > 0")
    try:
        return run(args.listen, args.name, args.pin_root, args.grace, args.timeout)
    except (OSError, ValueError) as err:
        print(f"reuseport_server: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
