"""The two ends of ``bench/proxy.py``'s transfers, each its own process, driven by lines on stdin.

``python bench/_ends.py sink`` listens on 127.0.0.1 (a free port), prints ``ready PORT`` and serves
one connection at a time until its standard input closes. A connection starts with one byte:

- ``T`` (throughput): the sink answers ``k``, reads into a preallocated 1 MiB buffer until EOF,
  then sends the byte count (8 bytes, little endian) and closes.
- ``E`` (echo): the sink sends back whatever it receives, until EOF.

``python bench/_ends.py client`` runs commands, one per line, answering each with one line:

- ``bulk PORT SIZE TIMEOUT``: connect to 127.0.0.1:PORT, exchange ``T``/``k`` (so any relay in
  between is fully set up), answer ``ready``, wait for the line ``go``, send SIZE bytes from a
  preallocated 64 KiB buffer with ``sendall``, half-close, wait for the sink's count; answer
  ``done SECONDS TAIL``: SECONDS from ``go`` to the count's arrival, TAIL from the half-close to it.
- ``rtt PORT COUNT SIZE TIMEOUT``: ping-pong SIZE-byte messages COUNT times (after COUNT // 10
  unmeasured ones); answer ``done MEDIAN_US P99_US``.

Errors are answered ``error MESSAGE``. Every socket has a timeout; the bench kills us on its own.
"""

from __future__ import annotations

import select
import socket
import statistics
import struct
import sys
import time

LOCAL = "127.0.0.1"
CHUNK = 1 << 16
RECV_BUFFER = 1 << 20
_COUNT = struct.Struct("<Q")


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        got = sock.recv(size - len(data))
        if not got:
            raise ConnectionError(f"EOF after {len(data)} of {size} bytes")
        data += got
    return bytes(data)


def _serve_bulk(conn: socket.socket, buffer: memoryview) -> None:
    conn.sendall(b"k")
    total = 0
    while received := conn.recv_into(buffer):
        total += received
    conn.sendall(_COUNT.pack(total))


def _serve_echo(conn: socket.socket) -> None:
    while data := conn.recv(CHUNK):
        conn.sendall(data)


def sink(timeout: float = 300.0) -> None:
    """Serve connections one by one until stdin closes."""
    buffer = memoryview(bytearray(RECV_BUFFER))
    with socket.create_server((LOCAL, 0), backlog=16) as listener:
        print(f"ready {listener.getsockname()[1]}", flush=True)
        while True:
            readable, _, _ = select.select([listener, sys.stdin], [], [])
            if sys.stdin in readable and not sys.stdin.buffer.raw.read(4096):  # type: ignore[attr-defined]
                return
            if listener not in readable:
                continue
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(timeout)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                try:
                    mode = conn.recv(1)
                    if mode == b"T":
                        _serve_bulk(conn, buffer)
                    elif mode == b"E":
                        _serve_echo(conn)
                except OSError as err:
                    print(f"sink: {err}", file=sys.stderr, flush=True)


def _connect(port: int, mode: bytes, timeout: float) -> socket.socket:
    sock = socket.create_connection((LOCAL, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(mode)
    return sock


def bulk(port: int, size: int, timeout: float) -> str:
    """One measured transfer of ``size`` bytes."""
    payload = memoryview(bytes(range(256)) * (CHUNK // 256))
    with _connect(port, b"T", timeout) as sock:
        if _recv_exact(sock, 1) != b"k":
            raise ConnectionError("the sink did not answer k")
        print("ready", flush=True)
        if sys.stdin.readline().strip() != "go":
            raise RuntimeError("expected go")
        start = time.perf_counter()
        full, rest = divmod(size, CHUNK)
        for _ in range(full):
            sock.sendall(payload)
        sock.sendall(payload[:rest])
        sock.shutdown(socket.SHUT_WR)
        sent = time.perf_counter()
        (count,) = _COUNT.unpack(_recv_exact(sock, _COUNT.size))
        end = time.perf_counter()
        if count != size:
            raise ConnectionError(f"the sink got {count} bytes of {size}")
        if sock.recv(1):
            raise ConnectionError("bytes after the count")
    return f"done {end - start:.6f} {end - sent:.6f}"


def rtt(port: int, count: int, size: int, timeout: float) -> str:
    """Median and p99 of ``count`` request/response round trips, in microseconds."""
    message = bytes(size)
    samples: list[float] = []
    with _connect(port, b"E", timeout) as sock:
        for index in range(count // 10 + count):
            start = time.perf_counter_ns()
            sock.sendall(message)
            _recv_exact(sock, size)
            if index >= count // 10:
                samples.append((time.perf_counter_ns() - start) / 1000)
    samples.sort()
    return f"done {statistics.median(samples):.1f} {samples[min(len(samples) - 1, int(0.99 * len(samples)))]:.1f}"


def client() -> None:
    """Run commands from stdin until it closes."""
    for line in sys.stdin:
        command, *args = line.split()
        try:
            if command == "bulk":
                answer = bulk(int(args[0]), int(args[1]), float(args[2]))
            elif command == "rtt":
                answer = rtt(int(args[0]), int(args[1]), int(args[2]), float(args[3]))
            else:
                answer = f"error unknown command {command}"
        except (OSError, RuntimeError, ValueError) as err:
            answer = f"error {type(err).__name__}: {err}"
        print(answer, flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["sink"]:
        sink()
    elif sys.argv[1:] == ["client"]:
        client()
    else:
        raise SystemExit("usage: _ends.py sink|client")
