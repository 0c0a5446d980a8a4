"""The splice proxy on the real kernel: bytes are exact, ends and resets propagate, nothing stays.

Traffic goes only to 127.0.0.1; every transfer is bounded in size and time. The bulk test moves
256 MiB times ``PYBPF_TEST_SCALE`` (default 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import probes
import pytest

import scale

import pybpf
from pybpf.apps.proxy import Budget, SpliceProxy, parse_address

test_module = sys.modules[__name__]

TIMEOUT = 60.0 * scale.TIME


class Origin:
    """A threaded TCP server on loopback running ``handler(conn)`` per connection."""

    def __init__(self, handler: Callable[[socket.socket], None]) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.handler, self.accepted, self.errors = handler, 0, []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        return self.listener.getsockname()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        conn.settimeout(TIMEOUT)
        try:
            with conn:
                self.handler(conn)
        except Exception as err:  # noqa: BLE001 - collected for the test to inspect
            self.errors.append(err)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()


class RunningProxy:
    """A ``SpliceProxy`` on its own event loop in a thread, for blocking test clients."""

    def __init__(self, upstream: tuple[str, int], **options: object) -> None:
        self.loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self.error: BaseException | None = None
        self.proxy = test_module.SpliceProxy(("127.0.0.1", 0), upstream, **options)  # type: ignore[arg-type]
        self._thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),), daemon=True)
        self._thread.start()
        assert self._started.wait(10 * scale.TIME), "proxy did not start"
        if self.error is not None:
            self._thread.join(10)
            self.loop.close()
            raise self.error

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        try:
            async with self.proxy:
                self._started.set()
                await self._stop.wait()
        except BaseException as err:
            self.error = err
            self._started.set()

    def call(self, fn: Callable[[], object]) -> object:
        """Run ``fn`` on the proxy's loop (its maps are used from there)."""
        return asyncio.run_coroutine_threadsafe(_as_coro(fn), self.loop).result(10 * scale.TIME)

    def close(self) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        self.loop.close()


async def _as_coro(fn: Callable[[], object]) -> object:
    return fn()


@pytest.fixture
def origin_factory() -> Iterator[Callable[[Callable[[socket.socket], None]], Origin]]:
    made: list[Origin] = []

    def make(handler: Callable[[socket.socket], None]) -> Origin:
        made.append(Origin(handler))
        return made[-1]

    yield make
    for origin in made:
        origin.close()


@pytest.fixture
def splice_kernel() -> None:
    """The proxy's verdict is an SK_SKB_VERDICT program (Linux 5.13), a stream verdict before."""
    if probes.sockmap_attach("SK_SKB_VERDICT"):
        probes.skip_if(probes.sockmap_attach("SK_SKB_STREAM_VERDICT"))


@pytest.fixture
def proxy_factory(splice_kernel: None) -> Iterator[Callable[..., RunningProxy]]:
    made: list[RunningProxy] = []

    def make(upstream: tuple[str, int], **options: object) -> RunningProxy:
        made.append(RunningProxy(upstream, **options))
        return made[-1]

    yield make
    for proxy in made:
        proxy.close()


def echo(conn: socket.socket) -> None:
    while data := conn.recv(1 << 16):
        conn.sendall(data)


def digest_reply(conn: socket.socket) -> None:
    """Read to EOF, then answer with the byte count and SHA-256 of what arrived."""
    h, n = hashlib.sha256(), 0
    buf = bytearray(1 << 20)
    while got := conn.recv_into(buf):
        h.update(memoryview(buf)[:got])
        n += got
    conn.sendall(f"{n} {h.hexdigest()}".encode())


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while data := sock.recv(1 << 16):
        chunks.append(data)
    return b"".join(chunks)


def connect(address: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(address, timeout=TIMEOUT)
    return sock


def test_request_sent_before_insertion_is_delivered(origin_factory, proxy_factory) -> None:
    """The insertion race: bytes queued before the sockets enter the map still reach the peer."""
    origin = origin_factory(echo)
    proxy = proxy_factory(origin.address)
    for i in range(20):
        with connect(proxy.proxy.address) as client:
            client.sendall(b"ping %d" % i)  # sent at once, before the proxy has paired anything
            assert client.recv(100) == b"ping %d" % i


def test_bulk_transfer_is_exact_with_half_close(origin_factory, proxy_factory) -> None:
    origin = origin_factory(digest_reply)
    proxy = proxy_factory(origin.address)
    total = int(256 * scale.SIZE) << 20
    chunk = os.urandom(1 << 20)
    h = hashlib.sha256()
    with connect(proxy.proxy.address) as client:
        sent = 0
        while sent < total:
            piece = chunk[: min(len(chunk), total - sent)]
            client.sendall(piece)
            h.update(piece)
            sent += len(piece)
        client.shutdown(socket.SHUT_WR)  # half-close: the reply must still come back
        assert read_all(client).decode() == f"{total} {h.hexdigest()}"
    assert not origin.errors


def test_many_concurrent_connections(origin_factory, proxy_factory) -> None:
    origin = origin_factory(echo)
    proxy = proxy_factory(origin.address)
    failures: list[BaseException] = []

    def one(i: int) -> None:
        try:
            payload = os.urandom(4096 + 997 * i)
            with connect(proxy.proxy.address) as client:
                client.sendall(payload)
                client.shutdown(socket.SHUT_WR)
                assert read_all(client) == payload
        except BaseException as err:  # noqa: BLE001 - reported below
            failures.append(err)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert not failures, failures[0]
    deadline = time.monotonic() + 10 * scale.TIME
    while proxy.proxy.stats.active and time.monotonic() < deadline:
        time.sleep(0.01)
    stats = proxy.proxy.stats
    assert stats.accepted == 64 and stats.active == 0 and stats.resets == 0


def test_server_reply_then_close_reaches_client(origin_factory, proxy_factory) -> None:
    def greet(conn: socket.socket) -> None:
        conn.sendall(b"hello" * 1000)  # and close: the client must get it all, then EOF

    proxy = proxy_factory(origin_factory(greet).address)
    with connect(proxy.proxy.address) as client:
        assert read_all(client) == b"hello" * 1000


def test_reset_propagates_both_ways(origin_factory, proxy_factory) -> None:
    def reset_after_request(conn: socket.socket) -> None:
        conn.recv(100)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    proxy = proxy_factory(origin_factory(reset_after_request).address)
    with connect(proxy.proxy.address) as client:
        client.sendall(b"x")
        with pytest.raises(ConnectionResetError):
            while client.recv(100):
                pass

    seen: list[BaseException] = []

    def read_until_error(conn: socket.socket) -> None:
        try:
            while conn.recv(100):
                pass
        except ConnectionResetError as err:
            seen.append(err)

    origin = origin_factory(read_until_error)
    proxy2 = proxy_factory(origin.address)
    client = connect(proxy2.proxy.address)
    client.sendall(b"y")
    time.sleep(0.1)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
    deadline = time.monotonic() + 10 * scale.TIME
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen, "the origin never saw the client's reset"


def test_a_stream_that_took_extra_bytes_is_reset_not_ended(origin_factory, proxy_factory, monkeypatch) -> None:
    """A target that took more than the client sent (seen once in a long soak: one skb delivered
    twice) must not end like a good stream: the pair is reset. One byte written straight into the
    proxy's upstream socket stands in for the duplicate."""
    tuned: list[socket.socket] = []
    tune = SpliceProxy._tune

    def record(self: SpliceProxy, sock: socket.socket) -> None:
        tune(self, sock)
        tuned.append(sock)

    monkeypatch.setattr(SpliceProxy, "_tune", record)
    proxy = proxy_factory(origin_factory(digest_reply).address)
    with connect(proxy.proxy.address) as client:
        client.sendall(b"abc")
        deadline = time.monotonic() + TIMEOUT
        while len(tuned) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert len(tuned) == 2, "the proxy never paired the client"
        tuned[1].send(b"!")  # client first, then upstream
        client.shutdown(socket.SHUT_WR)
        with pytest.raises(ConnectionResetError):
            read_all(client)
    stats = proxy.proxy.stats
    deadline = time.monotonic() + TIMEOUT
    while stats.active and time.monotonic() < deadline:
        time.sleep(0.005)
    assert (stats.resets, stats.completed) == (1, 0)


def test_unreachable_upstream(proxy_factory) -> None:
    closed = socket.create_server(("127.0.0.1", 0))
    address = closed.getsockname()
    closed.close()  # nothing listens there now
    proxy = proxy_factory(address)
    with contextlib.suppress(ConnectionResetError):  # the reset may come before connect() returns
        with connect(proxy.proxy.address) as client:
            assert client.recv(10) == b""
    deadline = time.monotonic() + 5 * scale.TIME
    while not proxy.proxy.stats.upstream_failures and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proxy.proxy.stats.upstream_failures == 1


def test_connection_limit(origin_factory, proxy_factory) -> None:
    origin = origin_factory(echo)
    proxy = proxy_factory(origin.address, max_connections=2)
    first, second = connect(proxy.proxy.address), connect(proxy.proxy.address)
    for sock in (first, second):
        sock.sendall(b"a")
        assert sock.recv(1) == b"a"
    third = connect(proxy.proxy.address)  # waits in the listen backlog
    third.sendall(b"c")
    time.sleep(0.2)
    assert origin.accepted == 2
    first.close()
    assert third.recv(1) == b"c"
    assert origin.accepted == 3
    second.close()
    third.close()


def test_entries_go_and_nothing_stays(origin_factory, splice_kernel, no_fd_leak) -> None:
    origin = origin_factory(echo)
    running = RunningProxy(origin.address)
    try:
        proxy = running.proxy
        map_ids = {m.id for m in (proxy._sockhash, proxy._targets, proxy._flows, proxy._forwarded, proxy._events)}
        prog_id = proxy._verdict.id
        with connect(proxy.address) as client:
            client.sendall(b"z")
            assert client.recv(1) == b"z"
            assert running.call(lambda: len(proxy._flows)) == 2
        deadline = time.monotonic() + 10 * scale.TIME
        while running.call(lambda: len(proxy._flows)) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert running.call(lambda: len(proxy._flows)) == 0
        assert running.call(lambda: len(proxy._forwarded)) == 0
        assert running.call(lambda: len(proxy._sockhash)) == 0
        assert running.call(lambda: len(proxy._targets)) == 0
    finally:
        running.close()
    deadline = time.monotonic() + 10  # the kernel frees maps in deferred work
    while map_ids & {m.id for m in pybpf.maps()} and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not map_ids & {m.id for m in pybpf.maps()}
    with pytest.raises(pybpf.BPFError):
        pybpf.Program.from_id(prog_id)


def test_proxy_process_killed_leaves_nothing(origin_factory, splice_kernel) -> None:
    origin = origin_factory(echo)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    before = {m.id for m in pybpf.maps()}
    proc = subprocess.Popen([sys.executable, "-m", "pybpf", "proxy", "--listen", f"127.0.0.1:{port}",
                             "--to", f"{origin.address[0]}:{origin.address[1]}"], stdout=subprocess.PIPE, text=True)
    try:
        assert "kernel splice" in proc.stdout.readline()
        with connect(("127.0.0.1", port)) as client:
            client.sendall(b"alive")
            assert client.recv(5) == b"alive"
            ours = {m.id for m in pybpf.maps() if m.name.startswith("splice_")} - before
            assert len(ours) == 5
            proc.send_signal(signal.SIGKILL)
            proc.wait(10 * scale.TIME)
            with contextlib.suppress(ConnectionResetError):
                client.recv(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10 * scale.TIME)
    deadline = time.monotonic() + 10 * scale.TIME
    while ours & {m.id for m in pybpf.maps()} and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not ours & {m.id for m in pybpf.maps()}


def test_parse_address() -> None:
    assert parse_address("127.0.0.1:80") == ("127.0.0.1", 80)
    assert parse_address("[::1]:8080") == ("::1", 8080)
    for bad in ("nonsense", "host:", "host:99999"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_address(bad)


# ---- the bound, timeouts, observability -------------------------------------------------------


def _tcp_counters(sock: socket.socket) -> tuple[int, int]:
    """(bytes the peer acknowledged, bytes received) of a connected TCP socket."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232)
    return struct.unpack_from("=Q", info, 120)[0], struct.unpack_from("=Q", info, 128)[0]


def _push(sock: socket.socket, seconds: float, limit: int) -> int:
    """Send zeros without blocking for up to ``seconds`` (or ``limit`` bytes); returns bytes sent."""
    sock.setblocking(False)
    chunk, sent = bytes(1 << 16), 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and sent < limit:
        try:
            sent += sock.send(chunk)
        except BlockingIOError:
            select.select([], [sock], [], 0.05)
    return sent


def test_bound_holds_when_the_upstream_never_reads(proxy_factory) -> None:
    """A client pushing into an upstream that reads nothing gets at most ``max_buffered`` bytes
    accepted by the proxy (the rest waits in the client's own send buffer)."""
    held: list[socket.socket] = []
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)  # the origin's own share stays small
    try:
        bound = 8 << 20
        proxy = proxy_factory(listener.getsockname(), max_buffered=bound, idle_timeout=None)
        with connect(proxy.proxy.address) as client:
            origin, _ = listener.accept()
            held.append(origin)
            _push(client, 3.0, 1 << 30)
            time.sleep(0.2)
            taken = _tcp_counters(client)[0] - 1  # acknowledged by the proxy, less the SYN
            in_origin = _tcp_counters(origin)[1] - 1
            assert 0 < taken - in_origin <= bound, (taken, in_origin)
            assert proxy.proxy.stats.demoted + proxy.proxy.stats.passing == 1 and proxy.proxy.stats.overflows == 0
    finally:
        for sock in held:
            sock.close()
        listener.close()


def slow_digest_reply(conn: socket.socket) -> None:
    """Like ``digest_reply`` but reading in bursts with pauses: the proxy's queues fill and empty."""
    h, n = hashlib.sha256(), 0
    buf = bytearray(1 << 18)
    while True:
        got = conn.recv_into(buf)
        if not got:
            break
        h.update(memoryview(buf)[:got])
        n += got
        if n % (8 << 20) < got:
            time.sleep(0.05)
    conn.sendall(f"{n} {h.hexdigest()}".encode())


class _NoPressure(SpliceProxy):
    """A proxy that ignores the verdict's early warning: the bound is reached, bytes are passed."""

    def _on_events(self) -> None:
        super()._on_events()
        for flow in self._live.values():
            flow.pressure = False


@pytest.mark.parametrize("path", ["demoted", "passing"])
def test_bytes_stay_exact_when_the_upstream_falls_behind(origin_factory, proxy_factory, monkeypatch, path) -> None:
    """A slow reader gets every byte, exactly once, in order, whether the direction left the
    kernel's splice early (``splice(2)``) or reached the bound (bytes passed to user space)."""
    if path == "passing":
        monkeypatch.setattr(test_module, "SpliceProxy", _NoPressure)
    origin = origin_factory(slow_digest_reply)
    proxy = proxy_factory(origin.address, max_buffered=8 << 20)
    total = max(int(96 * scale.SIZE), 32) << 20  # enough to meet the 8 MiB bound
    pattern = os.urandom(1 << 20)
    h = hashlib.sha256()
    with connect(proxy.proxy.address) as client:
        sent = 0
        while sent < total:
            piece = pattern[sent % 4096:][: min(len(pattern) - sent % 4096, total - sent)]
            client.sendall(piece)
            h.update(piece)
            sent += len(piece)
        client.shutdown(socket.SHUT_WR)
        assert read_all(client).decode() == f"{total} {h.hexdigest()}"
    stats = proxy.proxy.stats
    # with a small bound the client may reach it before the proxy reacts to the early warning
    assert stats.passing == 1 if path == "passing" else stats.demoted + stats.passing == 1, stats
    assert not origin.errors


def test_a_client_that_never_reads_cannot_grow_the_other_way(origin_factory, proxy_factory) -> None:
    """An echo upstream and a client that sends without reading: the replies back up toward the
    client, the requests toward the upstream; the proxy holds at most its bound (or resets the
    pair as an overflow), never more."""
    origin = origin_factory(echo)
    bound = 8 << 20
    proxy = proxy_factory(origin.address, max_buffered=bound, idle_timeout=None)
    with connect(proxy.proxy.address) as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        try:
            _push(client, 3.0, 1 << 30)
        except ConnectionResetError:
            pass
        time.sleep(0.2)
        stats = proxy.proxy.stats
        if not stats.overflows:
            acked, received = _tcp_counters(client)
            # what the proxy took from the client and has not yet handed back to it
            assert acked - 1 - (received - 1) <= 2 * bound


def test_idle_pairs_are_reset_and_free_their_slot(origin_factory, proxy_factory) -> None:
    origin = origin_factory(echo)
    proxy = proxy_factory(origin.address, max_connections=1, idle_timeout=0.4 * scale.TIME)
    silent = connect(proxy.proxy.address)
    try:
        started = time.monotonic()
        with pytest.raises((ConnectionResetError, AssertionError)):
            assert silent.recv(1) != b""  # reset, or EOF
        assert time.monotonic() - started < 5 * scale.TIME
        with connect(proxy.proxy.address) as second:  # the slot is free again
            second.sendall(b"next")
            assert second.recv(4) == b"next"
        assert proxy.proxy.stats.idle_timeouts == 1
    finally:
        silent.close()


def test_connect_timeout(proxy_factory) -> None:
    """An upstream that never completes the handshake (its accept queue is full, so SYNs are dropped)."""
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    fillers = []
    try:
        for _ in range(2):  # a backlog of 0 admits one; the next SYN is dropped
            f = socket.socket()
            f.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                f.connect(full.getsockname())
            fillers.append(f)
        time.sleep(0.1)
        proxy = proxy_factory(full.getsockname(), connect_timeout=0.3)
        with connect(proxy.proxy.address) as client:
            with contextlib.suppress(ConnectionResetError):
                assert client.recv(1) == b""
        deadline = time.monotonic() + 5 * scale.TIME
        while not proxy.proxy.stats.connect_timeouts and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proxy.proxy.stats.connect_timeouts == 1 and proxy.proxy.stats.upstream_failures == 1
    finally:
        for f in fillers:
            f.close()
        full.close()


def test_budget_split_and_validation() -> None:
    budget = Budget.split(32 << 20)
    per_direction = 2 * budget.sndbuf + budget.pass_bytes + budget.queue_bytes + budget.ring * (4 << 10)
    assert per_direction <= 16 << 20
    with pytest.raises(ValueError, match="too small"):
        Budget.split(1 << 20)
    for bad in (0, -1, True, 2.5):
        with pytest.raises(ValueError, match="max_buffered"):
            Budget.split(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="idle_timeout"):
        SpliceProxy(("127.0.0.1", 0), ("127.0.0.1", 1), idle_timeout=0)
    with pytest.raises(ValueError, match="max_connections"):
        SpliceProxy(("127.0.0.1", 0), ("127.0.0.1", 1), max_connections=0)


def test_command_logs_counts_and_drains_on_sigterm(origin_factory, splice_kernel) -> None:
    """``pybpf proxy``: INFO logs each pair, --stats prints counters, SIGTERM stops accepting and
    lets an open pair finish, and the last line sums it up."""
    origin = origin_factory(echo)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "pybpf", "proxy", "--listen", f"127.0.0.1:{port}",
                             "--to", "{}:{}".format(*origin.address), "--stats", "0.2", "--drain", "10",
                             "--log-level", "INFO"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "kernel splice" in proc.stdout.readline()
        with connect(("127.0.0.1", port)) as client:
            client.sendall(b"before")
            assert client.recv(6) == b"before"
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.3 * scale.TIME)
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=2).close()  # no longer accepting
            client.sendall(b"during")  # the open pair still works
            assert client.recv(6) == b"during"
        out, err = proc.communicate(timeout=15 * scale.TIME)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "draining 1 pairs" in out and "accepted 1 active 0" in out.splitlines()[-1]
    assert "paired with upstream" in err and "closed after 12 bytes up, 12 down" in err
