"""``pybpf accelerate`` on the real kernel, always on a child cgroup this test makes: local TCP
connections of the cgroup go socket to socket (TCP never carries their bytes), byte-exact both
ways with large and small writes, half-close, resets as TCP has them, connections older than the
attachment left alone, detach and SIGKILL losing no byte of live connections, nothing left in
the kernel afterwards."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from pybpf.testing.cgroups import child_cgroup, sockets_in, spawn_in
from scale import SIZE, TIME

import pybpf
from pybpf import AttachType
from pybpf.apps.accelerate import Accelerator
from pybpf.testing.netns import inside, ip, namespace
from pybpf.programs import SockTuple, cgroup_programs

MiB = 1 << 20


def tcp_bytes(sock: socket.socket) -> tuple[int, int]:
    """``(tcpi_bytes_acked, tcpi_bytes_received)``: what TCP itself carried (SYN counts 1)."""
    return struct.unpack_from("=QQ", sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 160), 120)


def accelerated(a: socket.socket, b: socket.socket) -> bool:
    """Whether TCP carried none of the bytes between ``a`` and ``b`` (only SYN and FIN, 1 each)."""
    return tcp_bytes(a)[0] <= 2 and tcp_bytes(b)[0] <= 2


def listener_and_clients(count: int = 1, family: int = socket.AF_INET, host: str = "127.0.0.1") -> Callable[[], list[socket.socket]]:
    def make() -> list[socket.socket]:
        listener = socket.socket(family)
        listener.bind((host, 0))
        listener.listen(128)
        return [listener] + [socket.socket(family) for _ in range(count)]
    return make


@pytest.fixture
def cgroup() -> Iterator[str]:
    with child_cgroup() as path:
        yield path


@pytest.fixture
def accel(cgroup: str) -> Iterator[Accelerator]:
    accelerator = Accelerator(cgroup).start()
    try:
        yield accelerator
    finally:
        accelerator.close(timeout=10 * TIME)


def connected(cgroup: str, family: int = socket.AF_INET, host: str = "127.0.0.1",
              to: str | None = None) -> tuple[socket.socket, socket.socket, socket.socket]:
    """``(listener, client, server)`` made in the cgroup and connected."""
    listener, client = sockets_in(cgroup, listener_and_clients(1, family, host))
    address = listener.getsockname()
    client.connect((to or address[0], address[1]))
    server, _ = listener.accept()
    for sock in (client, server):
        sock.settimeout(30 * TIME)
    return listener, client, server


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks, got = [], 0
    while got < size:
        chunk = sock.recv(min(size - got, 4 * MiB))
        if not chunk:
            raise EOFError(f"EOF after {got} of {size} bytes")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def pump(sock: socket.socket, data: bytes, sizes: list[int]) -> None:
    """Send ``data`` in writes of the given sizes (cycled)."""
    at, i = 0, 0
    view = memoryview(data)
    while at < len(data):
        size = sizes[i % len(sizes)]
        sock.sendall(view[at : at + size])
        at += size
        i += 1


@pytest.mark.parametrize("sizes", [[1 << 16], [1], [1, 7, 100, 1500, 65536, 3 * MiB]], ids=["64KiB", "1B", "mixed"])
def test_byte_exact_both_ways_at_once(cgroup: str, accel: Accelerator, sizes: list[int]) -> None:
    total = int((256 << 10 if sizes == [1] else 32 * MiB) * SIZE)
    up, down = os.urandom(total), os.urandom(total)
    listener, client, server = connected(cgroup)
    with listener, client, server:
        got: dict[str, bytes] = {}
        readers = [threading.Thread(target=lambda: got.__setitem__("up", recv_exactly(server, total))),
                   threading.Thread(target=lambda: got.__setitem__("down", recv_exactly(client, total)))]
        writers = [threading.Thread(target=pump, args=(client, up, sizes)), threading.Thread(target=pump, args=(server, down, sizes))]
        for t in readers + writers:
            t.start()
        for t in readers + writers:
            t.join(120 * TIME)
        assert hashlib.sha256(got["up"]).digest() == hashlib.sha256(up).digest()
        assert hashlib.sha256(got["down"]).digest() == hashlib.sha256(down).digest()
        assert accelerated(client, server)
        assert accel.status().sockets == 2


@pytest.mark.parametrize("family, host, to", [(socket.AF_INET6, "::1", None), (socket.AF_INET, "127.0.0.1", None),
                                              (socket.AF_INET6, "::", "::ffff:127.0.0.1")], ids=["v6", "v4", "v4-mapped"])
def test_families(cgroup: str, accel: Accelerator, family: int, host: str, to: str | None) -> None:
    listener, client, server = connected(cgroup, family, host, to)
    with listener, client, server:
        client.sendall(b"ping")
        assert recv_exactly(server, 4) == b"ping"
        server.sendall(b"pong")
        assert recv_exactly(client, 4) == b"pong"
        assert accelerated(client, server)
        assert accel.sockets is not None  # keyed by the documented SockTuple, the C layout
        assert {bytes(k) for k in accel.sockets.keys()} == {bytes(SockTuple.of(client)), bytes(SockTuple.of(server))}
        assert SockTuple.of(client).reversed().local_port == SockTuple.of(server).local_port


def test_half_close_then_reply(cgroup: str, accel: Accelerator) -> None:
    listener, client, server = connected(cgroup)
    with listener, client, server:
        request = os.urandom(MiB)
        client.sendall(request)
        client.shutdown(socket.SHUT_WR)
        assert recv_exactly(server, len(request)) == request
        assert server.recv(100) == b""  # EOF only after every byte
        server.sendall(b"reply after EOF")
        server.shutdown(socket.SHUT_WR)
        assert recv_exactly(client, 15) == b"reply after EOF"
        assert client.recv(100) == b""
        assert accelerated(client, server)


def _reset_outcome(client: socket.socket, server: socket.socket) -> tuple[bytes, str]:
    client.sendall(b"last words")
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
    time.sleep(0.1 * TIME)
    data = b""
    try:
        while chunk := server.recv(100):
            data += chunk
    except OSError as err:
        return data, type(err).__name__
    return data, "EOF"


def test_reset_reaches_the_peer_as_with_tcp(cgroup: str, accel: Accelerator) -> None:
    listener, client, server = connected(cgroup)
    with listener, server:
        accelerated_outcome = _reset_outcome(client, server)
    plain_listener = socket.create_server(("127.0.0.1", 0))
    with plain_listener, socket.create_connection(plain_listener.getsockname()) as plain_client:
        plain_server, _ = plain_listener.accept()
        with plain_server:
            plain_outcome = _reset_outcome(plain_client, plain_server)
    assert accelerated_outcome == plain_outcome == (b"last words", "ConnectionResetError")


def test_connections_from_before_are_left_alone(cgroup: str) -> None:
    listener, client, server = connected(cgroup)
    with listener, client, server, Accelerator(cgroup) as accel:
        client.sendall(b"x" * 1000)
        assert recv_exactly(server, 1000) == b"x" * 1000
        assert not accelerated(client, server)
        assert accel.status().sockets == 0


def test_outside_the_cgroup_or_off_loopback_is_not_accelerated(cgroup: str, accel: Accelerator) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener, socket.create_connection(listener.getsockname()) as client:
        server, _ = listener.accept()
        with server:
            client.sendall(b"outside")
            assert recv_exactly(server, 7) == b"outside"
            assert not accelerated(client, server)
    with namespace() as netns:  # 192.0.2.1 is local to the namespace but not a loopback address
        ip("-n", netns, "addr", "add", "192.0.2.1/32", "dev", "lo")

        def make() -> list[socket.socket]:
            with inside(netns):
                return listener_and_clients(1, host="192.0.2.1")()
        listener, client = sockets_in(cgroup, make)
        with listener, client:
            client.settimeout(10 * TIME)
            client.connect(listener.getsockname())
            server, _ = listener.accept()
            with server:
                client.sendall(b"local, not loopback")
                assert recv_exactly(server, 19) == b"local, not loopback"
                assert not accelerated(client, server)


def test_every_connection_byte_exact_when_sending_at_once(cgroup: str, accel: Accelerator) -> None:
    count = int(60 * min(SIZE, 1))
    listener, *clients = sockets_in(cgroup, listener_and_clients(count))
    with listener:
        pairs = []
        for client in clients:
            client.connect(listener.getsockname())
            client.sendall(b"%08d" % len(pairs) * 100)  # before the server side is even accepted
            pairs.append((client, listener.accept()[0]))
        for i, (client, server) in enumerate(pairs):
            with client, server:
                server.settimeout(10 * TIME)
                assert recv_exactly(server, 800) == b"%08d" % i * 100
                server.sendall(b"ok")
                assert recv_exactly(client, 2) == b"ok"


def test_detach_loses_no_byte_of_live_connections(cgroup: str) -> None:
    accel = Accelerator(cgroup).start()
    listener, client, server = connected(cgroup)
    with listener, client, server:
        unread = os.urandom(4 * MiB)
        client.sendall(unread)  # queued in the server's receive queue by the kernel, not read yet
        accel.detach()
        assert not accel.attached and accel.status().sockets == 2
        late, late_server = None, None
        try:
            late = socket.socket()
            late.close()
            assert recv_exactly(server, len(unread)) == unread
            client.sendall(b"after detach")
            assert recv_exactly(server, 12) == b"after detach"
            assert accelerated(client, server)
            new_listener, new_client, new_server = connected(cgroup)
            with new_listener, new_client, new_server:
                new_client.sendall(b"new")
                assert recv_exactly(new_server, 3) == b"new"
                assert not accelerated(new_client, new_server)
        finally:
            del late, late_server
        assert not accel.close(timeout=0.1)  # still live: handed to the keeper
        client.sendall(b"with the keeper")
        assert recv_exactly(server, 15) == b"with the keeper"


def _ids_of(accel: Accelerator) -> tuple[set[int], set[int]]:
    assert accel.sockets is not None and accel._sk_msg is not None and accel._sockops is not None
    return {accel.sockets.id}, {accel._sk_msg.id, accel._sockops.id}


def _gone(maps: set[int], progs: set[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        live_maps = {m.id for m in pybpf.maps()}
        live_progs = {p.id for p in pybpf.programs.loaded_programs()}
        if not (maps & live_maps or progs & live_progs):
            return True
        time.sleep(0.1)
    return False


def test_nothing_left_after_close(cgroup: str) -> None:
    accel = Accelerator(cgroup).start()
    maps, progs = _ids_of(accel)
    listener, client, server = connected(cgroup)
    with listener, client, server:
        client.sendall(b"x")
        recv_exactly(server, 1)
    assert accel.close(timeout=10 * TIME)
    assert _gone(maps, progs, 10 * TIME)
    assert cgroup_programs(cgroup) == []


def _wait_attached(cgroup: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cgroup_programs(cgroup, attach_types=(AttachType.CGROUP_SOCK_OPS,)):
        if time.monotonic() > deadline:
            raise TimeoutError("pybpf accelerate did not attach")
        time.sleep(0.05)


def test_sigkill_loses_no_byte_and_leaves_nothing(cgroup: str) -> None:
    app = subprocess.Popen([sys.executable, "-m", "pybpf", "accelerate", "--cgroup", cgroup, "--interval", "0.2"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_attached(cgroup, 30 * TIME)
        listener, client, server = connected(cgroup)
        with listener, client, server:
            progs = {p.id for p in cgroup_programs(cgroup)}
            unread = os.urandom(2 * MiB)
            client.sendall(unread)
            app.send_signal(signal.SIGKILL)
            app.wait(10 * TIME)
            assert cgroup_programs(cgroup) == []  # the link died with the process
            assert recv_exactly(server, len(unread)) == unread
            client.sendall(b"after the kill")
            assert recv_exactly(server, 14) == b"after the kill"
            assert accelerated(client, server)
        assert _gone(set(), progs, 20 * TIME)  # the keeper let go once the connection closed
    finally:
        if app.poll() is None:
            app.kill()
        app.wait()
        for stream in (app.stdout, app.stderr):
            if stream:
                stream.close()


PEER = r"""
import hashlib, os, socket, struct, sys

def recv(sock):
    # A blocking reader woken by its peer's FIN with nothing queued gets EAGAIN once from an
    # accelerated socket (tcp_bpf_recvmsg, measured on 6.18); the next recv() returns EOF.
    for _ in range(100):
        try:
            return sock.recv(1 << 20)
        except BlockingIOError:
            print("EAGAIN", file=sys.stderr, flush=True)
    raise RuntimeError("EAGAIN 100 times")

mode, port = sys.argv[1], int(sys.argv[2])
if mode == "server":
    with socket.create_server(("127.0.0.1", port)) as listener:
        print("ready", flush=True)
        conn, _ = listener.accept()
        with conn:
            while data := recv(conn):
                conn.sendall(data)
else:
    payload = os.urandom(8 << 20)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        echoed = bytearray()
        while data := recv(sock):
            echoed += data
        acked = struct.unpack_from("=Q", sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 160), 120)[0]
    print(hashlib.sha256(echoed).hexdigest() == hashlib.sha256(payload).hexdigest(), acked)
"""


def test_between_two_processes_in_the_cgroup(cgroup: str, accel: Accelerator) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = spawn_in(cgroup, [sys.executable, "-c", PEER, "server", str(port)], stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == b"ready"
        client = spawn_in(cgroup, [sys.executable, "-c", PEER, "client", str(port)], stdout=subprocess.PIPE)
        out, _ = client.communicate(timeout=60 * TIME)
        assert out.split() == [b"True", b"2"]  # echoed exactly; TCP carried nothing but SYN and FIN
    finally:
        server.kill()
        server.wait()
        if server.stdout:
            server.stdout.close()
