"""The splice proxy: Python accepts and connects; the kernel moves the bytes.

Each accepted client is paired with a new upstream connection. A ``peers`` HASH maps each
socket's cookie to its peer's; an ``sk_skb`` verdict program (``pybpf.programs.splice_verdict``)
sends every byte a socket receives out of its peer. Two SOCKHASHes keyed by cookie make the
hand-over safe: both sockets first join ``targets`` (no programs: nothing is intercepted yet),
so every redirect finds its target; only then does each join ``socks``, the map the verdict is
attached to. A redirect to a missing target would drop bytes TCP has already acknowledged. A
socket the kernel refuses (say, the client already sent FIN) keeps its direction in user space.
From then on Python only waits for the end of each direction:

- Bytes that arrived before the sockets entered the map wait in the receive queue until more
  bytes come, which for a request/response client is never. ``SO_RCVLOWAT`` makes TCP call the
  socket's data-ready hook at once, and the verdict program redirects what is queued, in order
  (a user-space copy could reorder them with bytes the kernel redirects meanwhile).
- FIN is not redirected: a direction ends when its source reads EOF, and the proxy shuts down
  the peer's write side only once the peer's TCP has had every received byte acknowledged
  (``tcpi_bytes_acked`` of the peer catches up with ``tcpi_bytes_received`` of the source).
- A reset on either side resets the other (``SO_LINGER`` 0 and close). When a stream ends, the
  kernel's redirect worker reports EPIPE on the target socket (it cannot forward the FIN); the
  proxy reads and discards that error. Bytes the kernel could not deliver in ``drain_timeout``
  turn into a reset rather than a silently short stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import select
import socket
import struct
from collections.abc import Awaitable

import pybpf
from pybpf import AttachType, Map, MapType, SockHash, programs

_TCP_INFO_SIZE = 232
_BYTES_ACKED = struct.Struct("=Q")  # struct tcp_info: tcpi_bytes_acked at 120, tcpi_bytes_received at 128
_SO_SNDBUFFORCE = 32
_RECV_CHUNK = 1 << 16


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) -> ``(host, port)``; ValueError naming what is wrong."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"address {text!r} is not HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def _tcp_bytes(sock: socket.socket) -> tuple[int, int]:
    """``(bytes acknowledged by the peer, bytes received)`` from ``TCP_INFO``."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    if len(info) < 136:
        raise OSError("TCP_INFO too short for byte counters (Linux >= 4.1 needed)")
    return _BYTES_ACKED.unpack_from(info, 120)[0], _BYTES_ACKED.unpack_from(info, 128)[0]


def _tune(sock: socket.socket, sndbuf: int) -> None:
    """Large send buffers keep the kernel's redirect from stalling on a full target; no Nagle."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if sndbuf:
        try:
            sock.setsockopt(socket.SOL_SOCKET, _SO_SNDBUFFORCE, sndbuf)
        except PermissionError:  # without CAP_NET_ADMIN: capped by net.core.wmem_max
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)


def _reset(sock: socket.socket) -> None:
    """Close with RST instead of FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@dataclasses.dataclass
class ProxyStats:
    """Counters since the proxy started."""

    accepted: int = 0
    active: int = 0
    upstream_failures: int = 0
    user_space_pairs: int = 0
    resets: int = 0
    bytes_to_upstream: int = 0
    bytes_to_client: int = 0


class SpliceProxy:
    """A TCP relay whose data path is the kernel's: ``async with SpliceProxy(listen, upstream)``.

    ``max_connections`` bounds concurrent pairs (further clients wait in the listen backlog);
    ``sndbuf`` sets both sockets' send buffers (``SO_SNDBUFFORCE`` when allowed).
    """

    def __init__(self, listen: tuple[str, int], upstream: tuple[str, int], *, max_connections: int = 1024,
                 sndbuf: int = 8 << 20, backlog: int = 1024, drain_timeout: float = 30.0) -> None:
        if max_connections <= 0:
            raise ValueError(f"max_connections must be positive, not {max_connections}")
        self.listen_address, self.upstream = listen, upstream
        self.max_connections, self.sndbuf, self.backlog = max_connections, sndbuf, backlog
        self.drain_timeout = drain_timeout
        self.stats = ProxyStats()
        self._listener: socket.socket | None = None
        self._sockhash: Map | None = None  # the verdict's map
        self._targets: Map | None = None  # where redirects look their target up
        self._peers: Map | None = None
        self._verdict: programs.Program | None = None
        self._accept_task: asyncio.Task[None] | None = None
        self._relays: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(max_connections)

    @property
    def address(self) -> tuple[str, int]:
        """Where the proxy listens (the port is the real one when 0 was asked for)."""
        if self._listener is None:
            raise RuntimeError("the proxy is not started")
        return self._listener.getsockname()[:2]

    async def start(self) -> None:
        """Create the maps, load and attach the verdict program, listen, and start accepting."""
        try:
            self._sockhash = SockHash.create(2 * self.max_connections, key_size=8, name="splice_socks")
            self._targets = SockHash.create(2 * self.max_connections, key_size=8, name="splice_targets")
            self._peers = Map.create(type=MapType.HASH, key=ctypes.c_uint64, value=ctypes.c_uint64,
                                     max_entries=2 * self.max_connections, name="splice_peers")
            self._verdict = programs.splice_verdict(self._targets, self._peers)
            self._verdict.attach(self._sockhash, AttachType.SK_SKB_VERDICT)
            host, port = self.listen_address
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            self._listener = socket.create_server((host, port), family=family, backlog=self.backlog, reuse_port=False)
            self._listener.setblocking(False)
        except BaseException:
            self._release()
            raise
        self._accept_task = asyncio.get_running_loop().create_task(self._accept_loop())

    async def __aenter__(self) -> SpliceProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def serve_forever(self) -> None:
        """Run until cancelled."""
        if self._accept_task is None:
            await self.start()
        assert self._accept_task is not None
        await self._accept_task

    async def close(self) -> None:
        """Stop accepting, reset the pairs still open, detach the program, close everything."""
        if self._accept_task is not None:
            self._accept_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accept_task
        for task in list(self._relays):
            task.cancel()
        if self._relays:
            await asyncio.gather(*self._relays, return_exceptions=True)
        self._release()

    def _release(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._verdict is not None and self._sockhash is not None and not self._sockhash.closed:
            with contextlib.suppress(pybpf.BPFError):
                self._verdict.detach(self._sockhash, AttachType.SK_SKB_VERDICT)
        for obj in (self._verdict, self._sockhash, self._targets, self._peers):
            if obj is not None:
                obj.close()
        self._verdict = self._sockhash = self._targets = self._peers = None

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._listener is not None
        while True:
            await self._slots.acquire()
            try:
                client, _ = await loop.sock_accept(self._listener)
            except BaseException:
                self._slots.release()
                raise
            self.stats.accepted += 1
            task = loop.create_task(self._relay(client))
            self._relays.add(task)
            task.add_done_callback(self._relays.discard)

    async def _relay(self, client: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self.stats.active += 1
        upstream: socket.socket | None = None
        cookies: tuple[int, int] | None = None
        try:
            upstream = socket.socket(socket.AF_INET6 if ":" in self.upstream[0] else socket.AF_INET, socket.SOCK_STREAM)
            upstream.setblocking(False)
            client.setblocking(False)
            try:
                await loop.sock_connect(upstream, self.upstream)
            except OSError:
                self.stats.upstream_failures += 1
                _reset(client)
                return
            for sock in (client, upstream):
                _tune(sock, self.sndbuf)
            acked_base = {sock: _tcp_bytes(sock)[0] for sock in (client, upstream)}  # the SYN counts
            cookies, spliced = self._pair(client, upstream)
            await self._until_done(client, upstream, acked_base, spliced)
        finally:
            self._forget(cookies)
            for sock in (client, upstream):
                if sock is not None and sock.fileno() >= 0:
                    sock.close()
            self.stats.active -= 1
            self._slots.release()

    def _pair(self, client: socket.socket, upstream: socket.socket) -> tuple[tuple[int, int] | None, set[socket.socket]]:
        """Hand the pair to the kernel as far as it accepts them: the cookies entered, and the
        sockets whose received bytes the kernel now forwards."""
        assert self._sockhash is not None and self._targets is not None and self._peers is not None
        pair = ((client, pybpf.socket_cookie(client)), (upstream, pybpf.socket_cookie(upstream)))
        try:
            for sock, cookie in pair:
                self._targets[cookie] = sock
        except pybpf.BPFError:
            self.stats.user_space_pairs += 1
            for _, cookie in pair:
                self._targets.pop(cookie, None)  # no verdict ran yet: nothing was intercepted
            return None, set()
        (_, ca), (_, cb) = pair
        self._peers[ca], self._peers[cb] = cb, ca
        spliced: set[socket.socket] = set()
        for sock, cookie in pair:
            try:
                self._sockhash[cookie] = sock
            except pybpf.BPFError:  # e.g. its FIN already came: this direction stays in user space
                self.stats.user_space_pairs += 1
                break
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)  # bytes queued before: to the kernel
            spliced.add(sock)
        return (ca, cb), spliced

    def _forget(self, cookies: tuple[int, int] | None) -> None:
        if cookies is None or self._peers is None or self._peers.closed:
            return
        for cookie in cookies:
            self._peers.pop(cookie, None)

    async def _until_done(self, client: socket.socket, upstream: socket.socket, acked_base: dict[socket.socket, int],
                          spliced: set[socket.socket]) -> None:
        """Wait for both directions to end; a reset on one side resets the other."""
        up = asyncio.ensure_future(self._direction(client, upstream, acked_base[upstream], client in spliced))
        down = asyncio.ensure_future(self._direction(upstream, client, acked_base[client], upstream in spliced))
        try:
            done, _ = await asyncio.wait({up, down}, return_when=asyncio.FIRST_EXCEPTION)
            if any(not t.cancelled() and t.exception() is not None for t in done):
                self.stats.resets += 1
                _reset(client)
                _reset(upstream)
                return
            sent_up, sent_down = await asyncio.gather(up, down)
            self.stats.bytes_to_upstream += sent_up
            self.stats.bytes_to_client += sent_down
        finally:
            for task in (up, down):
                task.cancel()
            await asyncio.gather(up, down, return_exceptions=True)

    async def _direction(self, src: socket.socket, dst: socket.socket, acked_base: int, spliced: bool) -> int:
        """One direction: wait for EOF on ``src``, then half-close ``dst`` once all is delivered.

        ``acked_base`` is what ``dst`` had acknowledged before any data (1 for the SYN of a
        connection we opened), so delivery is complete when ``acked - acked_base`` reaches what
        ``src`` received (less one for its FIN, which TCP counts as received).
        When ``spliced`` the kernel forwards the bytes and only the end of the stream wakes us
        (waiting for readable data would wake the proxy for every packet the kernel forwarded);
        otherwise the bytes are read and forwarded here. Returns the bytes that went this way.
        """
        loop = asyncio.get_running_loop()
        while True:
            await (_stream_end(loop, src) if spliced else _readable(loop, src))
            try:
                data = src.recv(_RECV_CHUNK)
            except (BlockingIOError, InterruptedError):
                continue
            except BrokenPipeError:
                continue  # the kernel's redirect worker reporting the end of the stream; reading clears it
            if not data:
                break
            await loop.sock_sendall(dst, data)
        received = _tcp_bytes(src)[1] - 1  # the FIN takes a sequence number too
        deadline = loop.time() + self.drain_timeout
        while _tcp_bytes(dst)[0] - acked_base < received:
            if loop.time() > deadline:
                raise ConnectionError(f"{received - (_tcp_bytes(dst)[0] - acked_base)} bytes not delivered in {self.drain_timeout} s")
            await asyncio.sleep(0.001)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
        return received


async def _stream_end(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    """Wait until the peer's FIN, a reset or an error: epoll with EPOLLRDHUP and no EPOLLIN."""
    with select.epoll(1) as ends:
        ends.register(sock.fileno(), select.EPOLLRDHUP | select.EPOLLERR | select.EPOLLHUP)
        if not ends.poll(0):
            await _readable(loop, ends)


def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket | select.epoll) -> Awaitable[None]:
    """A future done when ``sock`` is readable (data, EOF or an error)."""
    fut = loop.create_future()
    fd = sock.fileno()

    def ready() -> None:
        loop.remove_reader(fd)
        if not fut.done():
            fut.set_result(None)

    loop.add_reader(fd, ready)
    fut.add_done_callback(lambda _: loop.remove_reader(fd) if fut.cancelled() else None)
    return fut


async def serve(listen: tuple[str, int], upstream: tuple[str, int], *, max_connections: int = 1024,
                ready: asyncio.Event | None = None) -> None:
    """Run a proxy until cancelled (the ``pybpf proxy`` command)."""
    async with SpliceProxy(listen, upstream, max_connections=max_connections) as proxy:
        if ready is not None:
            ready.set()
        print(f"pybpf proxy: {proxy.address[0]}:{proxy.address[1]} -> {upstream[0]}:{upstream[1]} "
              f"(kernel splice, up to {max_connections} connections)", flush=True)
        await proxy.serve_forever()
