"""A soak run of the splice proxy: many concurrent clients, every byte checked, for a while.

``--clients`` threads each repeat, until ``--seconds`` are up: connect through
``pybpf.apps.proxy.SpliceProxy`` (``--max-buffered`` MiB per pair), send a random amount (up to
``--max-size``) of random bytes, half-close, and compare the upstream's answer (byte count and
SHA-256 of what it received) with what was sent. Every fourth connection meets an upstream that
reads in bursts with pauses, so the proxy's bound is hit and bytes go through user space. Prints
the bytes checked, the transfers, the failures (any mismatch, reset or timeout) and the proxy's
counters. Loopback only; every socket has a timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import hashlib
import inspect
import os
import random
import socket
import threading
import time

from pybpf.apps.proxy import SpliceProxy

LOCAL = "127.0.0.1"


def _digest_reply(conn: socket.socket, slow: bool) -> None:
    h, n = hashlib.sha256(), 0
    buf = bytearray(1 << 18)
    with conn:
        conn.settimeout(60)
        while got := conn.recv_into(buf):
            h.update(memoryview(buf)[:got])
            n += got
            if slow and n % (4 << 20) < got:
                time.sleep(0.02)
        conn.sendall(f"{n} {h.hexdigest()}".encode())


def serve(listener: socket.socket, slow: bool) -> None:
    """Answer each connection with the count and SHA-256 of what it sent."""
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=_digest_reply, args=(conn, slow), daemon=True).start()


def client(address: tuple[str, int], deadline: float, max_size: int, seed: int, totals: dict[str, int],
           failures: list[str], lock: threading.Lock) -> None:
    rng = random.Random(seed)
    block = os.urandom(1 << 20)
    while time.monotonic() < deadline:
        size = rng.choice((rng.randrange(1, 1 << 12), rng.randrange(1, 1 << 20), rng.randrange(1, max_size + 1)))
        h = hashlib.sha256()
        port = 0
        try:
            with socket.create_connection(address, timeout=60) as sock:
                port = sock.getsockname()[1]
                sent = 0
                while sent < size:
                    piece = block[sent % 4096:][: min(len(block) - sent % 4096, size - sent)]
                    sock.sendall(piece)
                    h.update(piece)
                    sent += len(piece)
                sock.shutdown(socket.SHUT_WR)
                answer = b""
                while chunk := sock.recv(256):
                    answer += chunk
            ok = answer.decode() == f"{size} {h.hexdigest()}"
        except OSError as err:
            ok, answer = False, repr(err).encode()
        with lock:
            if ok:
                totals["bytes"] += size
                totals["transfers"] += 1
            else:
                failures.append(f"client port {port}, {size} bytes: {answer[:80]!r}")


async def run(args: argparse.Namespace) -> None:
    fast, slow = socket.create_server((LOCAL, 0), backlog=256), socket.create_server((LOCAL, 0), backlog=256)
    for listener, is_slow in ((fast, False), (slow, True)):
        threading.Thread(target=serve, args=(listener, is_slow), daemon=True).start()
    totals, failures, lock = {"bytes": 0, "transfers": 0}, [], threading.Lock()
    try:
        options = {"max_buffered": args.max_buffered << 20} if "max_buffered" in inspect.signature(SpliceProxy).parameters else {}
        async with SpliceProxy((LOCAL, 0), fast.getsockname(), **options) as to_fast, \
                SpliceProxy((LOCAL, 0), slow.getsockname(), **options) as to_slow:
            deadline = time.monotonic() + args.seconds
            threads = [threading.Thread(target=client, args=((to_slow if i % 4 == 3 else to_fast).address, deadline,
                                                             args.max_size, i, totals, failures, lock))
                       for i in range(args.clients)]
            started = time.monotonic()
            for thread in threads:
                thread.start()
            while any(thread.is_alive() for thread in threads):
                await asyncio.sleep(0.1)
            elapsed = time.monotonic() - started
            print(f"{args.clients} concurrent clients for {elapsed:.0f} s: {totals['transfers']} transfers, "
                  f"{totals['bytes'] / 2**30:.2f} GiB checked byte for byte, {len(failures)} failures")
            for failure in failures[:10]:
                print(f"  failure: {failure}")
            for name, proxy in (("fast upstream", to_fast), ("slow upstream", to_slow)):
                print(f"{name}: {proxy.stats}")
    finally:
        fast.close()
        slow.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (default 32)")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long (default 60)")
    parser.add_argument("--max-size", type=int, default=64 << 20, help="largest transfer in bytes (default 64 MiB)")
    parser.add_argument("--max-buffered", type=int, default=32, help="the proxy's bound per pair in MiB (default 32)")
    parser.add_argument("--log", metavar="FILE", help="the proxies' log (INFO: every pair and each change of path)")
    args = parser.parse_args(argv)
    if args.log:
        logging.basicConfig(filename=args.log, filemode="w", level=logging.INFO,
                            format="%(asctime)s %(levelname)s %(message)s")
    if args.clients <= 0 or args.seconds <= 0 or args.max_size <= 0:
        parser.error("--clients, --seconds and --max-size must be positive")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
