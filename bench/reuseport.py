"""Accepted connections per second on a SO_REUSEPORT group, with and without a steering program.

For 2 and 4 listeners on 127.0.0.1, three modes: ``default`` (no program: the kernel's hash
selection), ``select`` (``Steering``'s program, ``reuseport_migrate``: every connection to slot 0) and ``hash``
(``reuseport_hash``: ``hash % n``, spread like the default, so it isolates the program's cost).
One thread accepts from every listener and closes each connection at once (RST: no TIME_WAIT piles
up); ``--clients`` processes connect in a loop. The modes are interleaved in short phases on the
same group (the program is swapped with one ``setsockopt``; the order rotates each cycle), so
background load hits every mode alike; the table shows the median phase rate per mode and each
program's cost relative to ``default`` (goal: under 5%). As the end-to-end rate is noisy on a busy
machine, the kernel's own run-time statistics (``BPF_ENABLE_STATS``) also give each program's ns per
connection and so the share of one CPU it takes at the default rate.
"""

from __future__ import annotations

import argparse
import ctypes
import math
import multiprocessing
import os
import selectors
import socket
import statistics
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pybpf.programs
from pybpf import Map, MapType
from pybpf._sys.constants import Cmd
from pybpf._sys.syscall import bpf_errno
from pybpf.apps.reuseport import Steering, reuseport_group

LOCAL = "127.0.0.1"
MODES = ("default", "select", "hash")
_LINGER_RST = struct.pack("ii", 1, 0)


class _StatsAttr(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32)]


@contextmanager
def _run_stats() -> Iterator[bool]:
    """Kernel run-time statistics of BPF programs while inside (``BPF_STATS_RUN_TIME``); yields
    whether they are on. The fd-based switch turns itself off when this process ends."""
    fd = bpf_errno(Cmd.ENABLE_STATS, _StatsAttr(0))
    try:
        yield fd >= 0
    finally:
        if fd >= 0:
            os.close(fd)


def _client(port: int, stop_at: float) -> None:
    """Connect, wait for the server to close, repeat until ``stop_at`` (a shared monotonic time)."""
    while time.monotonic() < stop_at:
        try:
            with socket.create_connection((LOCAL, port), timeout=2) as conn:
                conn.recv(1)
        except OSError:
            continue


class _Acceptor:
    """Accepts from every listener of a group, counting per listener."""

    def __init__(self, socks: list[socket.socket]) -> None:
        self.selector = selectors.DefaultSelector()
        self.counts = [0] * len(socks)
        for index, sock in enumerate(socks):
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ, index)

    def run_until(self, deadline: float) -> None:
        """Accept and close connections until ``deadline``."""
        while (left := deadline - time.monotonic()) > 0:
            for key, _ in self.selector.select(timeout=min(left, 0.01)):
                while True:
                    try:
                        conn, _ = key.fileobj.accept()  # type: ignore[union-attr]
                    except BlockingIOError:
                        break
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
                    conn.close()
                    self.counts[key.data] += 1

    def close(self) -> None:
        self.selector.close()


def _ns_per_run(program: pybpf.programs.Program) -> float:
    info = program.info()
    return info.run_time_ns / info.run_cnt if info.run_cnt else math.nan


def measure(listeners: int, seconds: float, clients: int, phase: float) -> tuple[dict[str, list[float]], float, dict[str, float]]:
    """Phase rates per mode over ``seconds`` per mode, the share of ``select`` accepts on slot 0,
    and each program's ns per run (NaN without kernel statistics)."""
    socks = reuseport_group((LOCAL, 0), listeners)
    acceptor = _Acceptor(socks)
    with Steering.create(listeners) as steering, \
            Map.create(type=MapType.ARRAY, key=ctypes.c_uint32, value=ctypes.c_uint32, max_entries=1, name="rp_count") as count:
        for slot, sock in enumerate(socks):
            steering.add(slot, sock)
        steering.select(0)
        count[0] = listeners
        programs = {"select": steering.program, "hash": pybpf.programs.reuseport_hash(steering.sockets, count)}
        cycles = max(1, math.ceil(seconds / phase))
        start = time.monotonic() + 0.3
        stop_at = start + cycles * len(MODES) * phase
        spawn = multiprocessing.get_context("fork")
        workers = [spawn.Process(target=_client, args=(socks[0].getsockname()[1], stop_at)) for _ in range(clients)]
        rates: dict[str, list[float]] = {mode: [] for mode in MODES}
        on_slot0 = total_select = 0
        try:
            for worker in workers:
                worker.start()
            acceptor.run_until(start)
            attached = False
            for cycle in range(cycles):
                for mode in MODES[cycle % 3:] + MODES[:cycle % 3]:
                    if mode == "default":
                        if attached:
                            steering.detach(socks[0])
                    else:
                        programs[mode].attach_reuseport(socks[0])
                    attached = mode != "default"
                    before, began = list(acceptor.counts), time.monotonic()
                    acceptor.run_until(began + phase)
                    accepted = [after - b for after, b in zip(acceptor.counts, before)]
                    rates[mode].append(sum(accepted) / (time.monotonic() - began))
                    if mode == "select":
                        on_slot0 += accepted[0]
                        total_select += sum(accepted)
            acceptor.run_until(stop_at + 2.5)
            ns = {mode: _ns_per_run(programs[mode]) for mode in ("select", "hash")}
        finally:
            for worker in workers:
                worker.join(5)
                if worker.is_alive():
                    worker.kill()
                    worker.join()
            acceptor.close()
            programs["hash"].close()
            for sock in socks:
                sock.close()
    return rates, on_slot0 / max(total_select, 1), ns


def main(argv: list[str] | None = None) -> None:
    """Measure 2 and 4 listeners and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per mode and group size (default 3)")
    parser.add_argument("--phase", type=float, default=0.1, help="seconds per interleaved phase (default 0.1)")
    parser.add_argument("--clients", type=int, default=os.cpu_count() or 2, help="client processes (default: one per CPU)")
    args = parser.parse_args(argv)
    print(f"accepted connections/s: median of {max(1, math.ceil(args.seconds / args.phase))} interleaved "
          f"{args.phase:g} s phases per cell, {args.clients} client processes")
    print(f"{'listeners':>9} {'default':>8} {'select':>8} {'hash':>8} {'select cost':>12} {'hash cost':>10}"
          f" {'on slot 0':>10} {'ns/run sel':>11} {'ns/run hash':>12} {'CPU share':>10}")
    with _run_stats():
        for listeners in (2, 4):
            rates, share, ns = measure(listeners, args.seconds, args.clients, args.phase)
            median = {mode: statistics.median(rates[mode]) for mode in MODES}
            cost = {mode: 1 - median[mode] / median["default"] for mode in ("select", "hash")}
            cpu = max(ns.values()) * median["default"] / 1e9
            print(f"{listeners:>9} {median['default']:>8.0f} {median['select']:>8.0f} {median['hash']:>8.0f}"
                  f" {cost['select']:>+12.1%} {cost['hash']:>+10.1%} {share:>10.2%}"
                  f" {ns['select']:>11.0f} {ns['hash']:>12.0f} {cpu:>10.3%}", flush=True)
    print("cost = 1 - rate / default rate (negative: faster); goal under 5%.")
    print("on slot 0: select-phase accepts on the selected listener; CPU share: the costlier program's ns/run x default rate.")


if __name__ == "__main__":
    main()
