"""``pybpf demo``: each socket map doing its job live on this kernel, then a summary table.

Every step uses only the public API, cleans up after itself, and reports one line.
"""

from __future__ import annotations

import asyncio
import ctypes
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import pybpf
from pybpf import XskMap
from pybpf.testing.netns import veth_pair
from pybpf.apps.proxy import SpliceProxy
from pybpf.apps.reuseport import Steering, reuseport_group
from pybpf.xdp import XskSocket


@dataclass
class StepResult:
    """One line of the summary: what ran, whether it worked, and what it showed."""

    name: str
    ok: bool
    detail: str
    seconds: float
    skipped: bool = False
    """The kernel lacks what the step shows (``detail`` says which release brings it): not a failure."""

    @property
    def status(self) -> str:
        """``ok``, ``skip`` or ``FAIL``."""
        return "skip" if self.skipped else "ok" if self.ok else "FAIL"


def _hash_map() -> str:
    n = 100_000
    with pybpf.Map.create(type=pybpf.MapType.HASH, key=ctypes.c_uint32, value=ctypes.c_uint64, max_entries=n, name="demo_hash") as m:
        t0 = time.perf_counter()
        m.update_batch(range(n), (i * i for i in range(n)))
        t1 = time.perf_counter()
        total = sum(v for _, v in m.items())
        t2 = time.perf_counter()
        assert total == sum(i * i for i in range(n))
        m[7] = 49
        assert m[7] == 49 and 7 in m
        return f"id {m.id}: {n} entries written in {1e3 * (t1 - t0):.0f} ms (batch), read back in {1e3 * (t2 - t1):.0f} ms"


def _sockhash() -> str:
    with socket.create_server(("127.0.0.1", 0)) as listener, pybpf.SockHash.create(16, key_size=8) as sh:
        with socket.create_connection(listener.getsockname()) as client:
            server, _ = listener.accept()
            with server:
                sh[1] = client
                sh[2] = server
                ok = sh[1] == pybpf.socket_cookie(client) and sh[2] == pybpf.socket_cookie(server)
                assert ok, "cookies differ"
                return f"id {sh.id}: a loopback TCP pair inserted, cookies {sh[1]} and {sh[2]} match SO_COOKIE"


def _splice() -> str:
    """A TCP request and a 64 MiB upload through the splice proxy: Python never sees the bytes."""
    size = 64 << 20

    def origin(listener: socket.socket) -> None:
        conn, _ = listener.accept()
        with conn:
            assert conn.recv(64) == b"hello?"
            conn.sendall(b"hello!")
            got = 0
            while data := conn.recv(1 << 20):
                got += len(data)
            conn.sendall(str(got).encode())

    async def run() -> str:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            server = threading.Thread(target=origin, args=(listener,), daemon=True)
            server.start()
            async with SpliceProxy(("127.0.0.1", 0), listener.getsockname()[:2]) as proxy:
                def client() -> float:
                    with socket.create_connection(proxy.address, timeout=30) as c:
                        c.sendall(b"hello?")
                        assert c.recv(64) == b"hello!"
                        block, t0 = bytes(1 << 20), time.perf_counter()
                        for _ in range(size >> 20):
                            c.sendall(block)
                        c.shutdown(socket.SHUT_WR)
                        assert int(c.recv(64)) == size
                        return time.perf_counter() - t0

                seconds = await asyncio.wait_for(asyncio.to_thread(client), 60)
                cut = await proxy.shutdown(5)  # the pair ends on its own once both sides closed
                assert cut == 0, "the pair did not end within 5 s of both sides closing"
            server.join(5)
        return f"request/response and {size >> 20} MiB through the kernel at {size * 8 / seconds / 1e9:.1f} Gbit/s"

    return asyncio.run(run())


def _reuseport() -> str:
    """Three SO_REUSEPORT listeners; the control map sends every connection to one, then another."""
    listeners = reuseport_group(("127.0.0.1", 0), 3)
    try:
        address = listeners[0].getsockname()[:2]
        for sock in listeners:
            sock.setblocking(False)

        def answered_by() -> int:
            with socket.create_connection(address, timeout=5):
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:
                    for i, sock in enumerate(listeners):
                        try:
                            conn, _ = sock.accept()
                        except BlockingIOError:
                            continue
                        conn.close()
                        return i
                    time.sleep(0.001)
            raise TimeoutError("no listener accepted the connection")

        with Steering.create(slots=4) as steering:
            for slot, sock in enumerate(listeners):
                steering.add(slot, sock)
            steering.attach(listeners[0])
            steering.select(2)
            first = {answered_by() for _ in range(20)}
            steering.select(0)
            second = {answered_by() for _ in range(20)}
        assert first == {2} and second == {0}, (first, second)
        return "20 connections all to listener 2; one map update; the next 20 all to listener 0"
    finally:
        for sock in listeners:
            sock.close()


def _xskmap() -> str:
    """UDP packets from a veth peer land in Python through an XDP program and an AF_XDP socket."""
    with veth_pair() as pair, pair.local.inside():
        with XskSocket(pair.local.ifname, 0) as xsk, XskMap.create(1) as xsks, pybpf.programs.xsk_redirect(xsks) as prog:
            xsks[0] = xsk
            with prog.attach_xdp(pair.local.ifname, pybpf.XdpMode.SKB), pair.peer.socket() as sender:
                got: list[bytes] = []
                deadline = time.monotonic() + 10
                while len(got) < 10 and time.monotonic() < deadline:
                    sender.sendto(b"to-python-%d" % len(got), (pair.local.ip, 7777))
                    with xsk.recv(64, timeout=0.2) as batch:
                        got.extend(bytes(frame) for frame in batch)
        assert len(got) >= 10 and all(b"to-python-" in frame for frame in got), got
        return f"{len(got)} UDP packets from the peer namespace received as frames in Python (namespaces removed)"


STEPS: list[tuple[str, Callable[[], str]]] = [
    ("HASH map", _hash_map),
    ("SOCKHASH", _sockhash),
    ("SOCKHASH splice proxy", _splice),
    ("REUSEPORT_SOCKARRAY steering", _reuseport),
    ("XSKMAP / AF_XDP", _xskmap),
]


def run(steps: list[tuple[str, Callable[[], str]]] | None = None, out: Callable[[str], None] = print) -> list[StepResult]:
    """Run every step, printing a line each and a summary table; return the results."""
    results = []
    for name, step in steps or STEPS:
        t0 = time.perf_counter()
        skipped = False
        try:
            detail, ok = step(), True
        except pybpf.NotSupportedError as err:  # this kernel lacks the mechanism: say which release has it
            detail, ok, skipped = str(err), True, True
        except Exception as err:  # noqa: BLE001 - a demo step reports its failure and the demo goes on
            detail, ok = f"{type(err).__name__}: {err}", False
        result = StepResult(name, ok, detail, time.perf_counter() - t0, skipped)
        results.append(result)
        out(f"{result.status:4} {name}: {detail}")
    width = max(len(r.name) for r in results)
    out("")
    out(f"{'step':{width}}  result  time")
    for r in results:
        out(f"{r.name:{width}}  {r.status:6}  {r.seconds:5.2f}s")
    return results
