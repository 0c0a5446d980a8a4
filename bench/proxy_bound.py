"""How much a pair of the splice proxy holds in kernel memory when its upstream never reads.

``--clients`` clients connect through ``pybpf.apps.proxy.SpliceProxy`` to an upstream that accepts
and never reads; each pushes as fast as it can for ``--seconds`` (at most ``--cap`` bytes, so a
proxy without a bound cannot take the machine down). Per pair it reports what the proxy took from
the client and has not handed on: the bytes the client's TCP saw acknowledged, less what reached
the upstream's socket (exact, from ``TCP_INFO``); and for the whole run how far MemAvailable fell
(noisy on a shared machine: other people's work moves it too).

Run it against another checkout with ``PYTHONPATH=/path/to/checkout python bench/proxy_bound.py``
(the proxy's public API only).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import select
import socket
import statistics
import struct
import threading
import time

from pybpf.apps.proxy import SpliceProxy

LOCAL = "127.0.0.1"
_U64 = struct.Struct("=Q")


def mem_available() -> int:
    """MemAvailable in bytes."""
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) << 10
    raise OSError("no MemAvailable in /proc/meminfo")


def tcp_bytes(sock: socket.socket) -> tuple[int, int]:
    """(bytes acknowledged by the peer, bytes received), SYN and FIN not counted."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232)
    return _U64.unpack_from(info, 120)[0] - 1, _U64.unpack_from(info, 128)[0] - 1


def push(address: tuple[str, int], seconds: float, cap: int, out: list[socket.socket]) -> None:
    """Connect and send zeros without blocking for ``seconds`` (or ``cap`` bytes); keep the socket."""
    sock = socket.create_connection(address, timeout=10)
    out.append(sock)
    sock.setblocking(False)
    chunk, sent = bytes(1 << 16), 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and sent < cap:
        try:
            sent += sock.send(chunk)
        except BlockingIOError:
            select.select([], [sock], [], 0.05)


async def run(args: argparse.Namespace) -> None:
    origin = socket.create_server((LOCAL, 0), backlog=args.clients + 8)
    held: list[socket.socket] = []

    def accept() -> None:
        while len(held) < args.clients:
            conn, _ = origin.accept()
            held.append(conn)

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    options: dict[str, object] = {"max_connections": args.clients + 8}
    if "idle_timeout" in inspect.signature(SpliceProxy).parameters:
        options["idle_timeout"] = None
    clients: list[socket.socket] = []
    try:
        async with SpliceProxy((LOCAL, 0), origin.getsockname(), **options) as proxy:  # type: ignore[arg-type]
            bound = getattr(proxy, "max_buffered", None)
            before = mem_available()
            pushers = [threading.Thread(target=push, args=(proxy.address, args.seconds, args.cap, clients))
                       for _ in range(args.clients)]
            for thread in pushers:
                thread.start()
            while any(thread.is_alive() for thread in pushers):
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            acceptor.join(5)
            fell = before - mem_available()
            taken = sorted(tcp_bytes(c)[0] for c in clients)
            arrived = sum(tcp_bytes(c)[1] for c in held)
            per_pair = [t - arrived / len(held) for t in taken]
            print(f"{args.clients} clients x {args.seconds:g} s into an upstream that reads nothing "
                  f"(bound per pair: {'none' if bound is None else f'{bound >> 20} MiB'})")
            print(f"taken by the proxy per pair: median {statistics.median(per_pair) / 2**20:.1f} MiB, "
                  f"max {max(per_pair) / 2**20:.1f} MiB; total {sum(per_pair) / 2**20:.1f} MiB "
                  f"(upstreams received {arrived / 2**20:.1f} MiB)")
            print(f"MemAvailable fell {fell / 2**20:.0f} MiB (other processes move it too)")
            print(f"proxy stats: {proxy.stats}")
    finally:
        for sock in clients + held:
            sock.close()
        origin.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8, help="pairs (default 8)")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long each client pushes (default 5)")
    parser.add_argument("--cap", type=int, default=256 << 20, help="most bytes one client sends (default 256 MiB)")
    args = parser.parse_args(argv)
    if args.clients <= 0 or args.seconds <= 0 or args.cap <= 0:
        parser.error("--clients, --seconds and --cap must be positive")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
