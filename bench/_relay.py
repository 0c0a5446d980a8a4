"""The relays ``bench/proxy.py`` compares, each run as its own process (so its CPU time is its own).

``python bench/_relay.py asyncio|splice --upstream PORT [--sndbuf BYTES] [--attach ...] [--option NAME=INT]`` listens on
127.0.0.1 (a free port), prints ``ready PORT`` and relays every connection to 127.0.0.1:PORT until
its standard input closes (the bench closes it, or dies).

- ``asyncio``: the fastest plain asyncio form, ``loop.create_server`` with a ``Protocol`` per side
  that writes what it receives to the peer's transport; the peer's ``pause_writing`` and
  ``resume_writing`` pause and resume reading. Half-close is passed on with ``write_eof``.
- ``splice``: ``pybpf.apps.proxy.SpliceProxy``. ``--attach stream`` moves its verdict program
  from ``SK_SKB_VERDICT`` to ``SK_SKB_STREAM_VERDICT``; ``stream+parser`` adds the whole-skb
  stream parser (the strparser path), for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import sys

from pybpf import AttachType, BPFError
from pybpf.apps.proxy import SpliceProxy
from pybpf.programs import Program, sk_skb_parser

LOCAL = "127.0.0.1"
_SO_SNDBUFFORCE = 32


def _set_sndbuf(sock: socket.socket | None, size: int) -> None:
    """``SO_SNDBUFFORCE`` (we run as root) when ``size`` is not 0; 0 keeps the kernel's autotuning."""
    if sock is not None and size:
        sock.setsockopt(socket.SOL_SOCKET, _SO_SNDBUFFORCE, size)


class _Side(asyncio.Protocol):
    """One socket of a relayed pair: what it receives goes to ``peer``'s transport."""

    def __init__(self, sndbuf: int) -> None:
        self.sndbuf = sndbuf
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.got_eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        _set_sndbuf(transport.get_extra_info("socket"), self.sndbuf)

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None and self.peer.transport is not None
        self.peer.transport.write(data)

    def eof_received(self) -> bool:
        """Half-close the peer (after its buffered bytes); close both once both ways ended."""
        assert self.peer is not None and self.peer.transport is not None and self.transport is not None
        self.got_eof = True
        self.peer.transport.write_eof()
        if self.peer.got_eof:
            self.transport.close()
            self.peer.transport.close()
        return True

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            if exc is None:
                self.peer.transport.close()
            else:
                self.peer.transport.abort()


class _ClientSide(_Side):
    """The accepted side: reading waits until the upstream connection is made."""

    def __init__(self, upstream: tuple[str, int], sndbuf: int) -> None:
        super().__init__(sndbuf)
        self.upstream = upstream
        self._connecting: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        self.transport.pause_reading()
        self._connecting = asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        try:
            _, upstream = await loop.create_connection(lambda: _Side(self.sndbuf), *self.upstream)
        except OSError:
            self.transport.abort()
            return
        upstream.peer, self.peer = self, upstream
        self.transport.resume_reading()


class _AttachedAs(SpliceProxy):
    """``SpliceProxy`` with its verdict program moved to ``SK_SKB_STREAM_VERDICT`` (and a parser).

    An experiment: it reaches into the proxy's private attributes, as the proxy has no option for it.
    """

    def __init__(self, *args: object, parser: bool, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._with_parser = parser
        self._parser: Program | None = None

    async def start(self) -> None:
        await super().start()
        assert self._verdict is not None and self._sockhash is not None
        self._verdict.detach(self._sockhash, AttachType.SK_SKB_VERDICT)
        if self._with_parser:
            self._parser = sk_skb_parser()
            self._parser.attach(self._sockhash, AttachType.SK_SKB_STREAM_PARSER)
        self._verdict.attach(self._sockhash, AttachType.SK_SKB_STREAM_VERDICT)

    def _release(self) -> None:
        if self._sockhash is not None and not self._sockhash.closed:
            if self._verdict is not None:
                with contextlib.suppress(BPFError):
                    self._verdict.detach(self._sockhash, AttachType.SK_SKB_STREAM_VERDICT)
            if self._parser is not None:
                with contextlib.suppress(BPFError):
                    self._parser.detach(self._sockhash, AttachType.SK_SKB_STREAM_PARSER)
        if self._parser is not None:
            self._parser.close()
            self._parser = None
        super()._release()


async def _until_stdin_closes() -> None:
    """Return when the bench closes our standard input (or dies)."""
    loop = asyncio.get_running_loop()
    closed = loop.create_future()

    def readable() -> None:
        if not sys.stdin.buffer.raw.read(4096) and not closed.done():  # type: ignore[attr-defined]
            closed.set_result(None)

    loop.add_reader(sys.stdin.fileno(), readable)
    try:
        await closed
    finally:
        loop.remove_reader(sys.stdin.fileno())


async def run_asyncio(upstream: tuple[str, int], sndbuf: int) -> None:
    """The plain asyncio relay."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _ClientSide(upstream, sndbuf), LOCAL, 0, backlog=128)
    async with server:
        print(f"ready {server.sockets[0].getsockname()[1]}", flush=True)
        await _until_stdin_closes()


async def run_splice(upstream: tuple[str, int], sndbuf: int | None, attach: str, extra: dict[str, int]) -> None:
    """The pybpf splice proxy (``sndbuf`` None: the proxy's default; ``extra``: more keyword options)."""
    options: dict[str, int] = {"max_connections": 16} if sndbuf is None else {"max_connections": 16, "sndbuf": sndbuf}
    options.update(extra)
    if attach == "verdict":
        proxy = SpliceProxy((LOCAL, 0), upstream, **options)
    else:
        proxy = _AttachedAs((LOCAL, 0), upstream, parser=attach == "stream+parser", **options)
    async with proxy:
        print(f"ready {proxy.address[1]}", flush=True)
        serving = asyncio.ensure_future(proxy.serve_forever())
        try:
            await _until_stdin_closes()
        finally:
            serving.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("asyncio", "splice"))
    parser.add_argument("--upstream", type=int, required=True, help="port on 127.0.0.1")
    parser.add_argument("--sndbuf", type=int, default=None,
                        help="send buffer of both sockets (0: the kernel's; default: 0, or the proxy's own for splice)")
    parser.add_argument("--attach", choices=("verdict", "stream", "stream+parser"), default="verdict")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=INT",
                        help="another SpliceProxy keyword option (splice only); repeatable")
    args = parser.parse_args()
    extra = {name: int(value) for name, _, value in (item.partition("=") for item in args.option)}
    upstream = (LOCAL, args.upstream)
    if args.kind == "asyncio":
        asyncio.run(run_asyncio(upstream, args.sndbuf or 0))
    else:
        asyncio.run(run_splice(upstream, args.sndbuf, args.attach, extra))


if __name__ == "__main__":
    main()
