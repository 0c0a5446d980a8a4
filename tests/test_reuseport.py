"""SO_REUSEPORT steering and zero-downtime restart on the real kernel, loopback only.

Every loop is bounded in count and time; the restart load runs 5 s times ``PYBPF_TEST_SCALE``.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import queue
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import probes
import pytest

import scale

import pybpf
from pybpf import BPFError, IndexOutOfRangeError, KeyExistsError, NotSupportedError
from pybpf.apps.reuseport import Generation, Steering, reuseport_group, reuseport_socket, status, unpin
from pybpf.cli import reuseport as cli

LOCAL = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
KINDS = {"tcp": socket.SOCK_STREAM, "udp": socket.SOCK_DGRAM}


class Responder:
    """One thread per socket of a group, answering every request with that socket's index."""

    def __init__(self, socks: list[socket.socket]) -> None:
        self.socks = socks
        self._stops = [threading.Event() for _ in socks]
        self._threads = [threading.Thread(target=self._serve, args=(i,), daemon=True) for i in range(len(socks))]
        for thread in self._threads:
            thread.start()

    def _serve(self, index: int) -> None:
        sock, stop, answer = self.socks[index], self._stops[index], str(index).encode()
        sock.settimeout(0.02)
        while not stop.is_set():
            try:
                if sock.type == socket.SOCK_STREAM:
                    conn, _ = sock.accept()
                    with conn:
                        conn.sendall(answer)
                else:
                    token, peer = sock.recvfrom(64)
                    sock.sendto(answer + b" " + token, peer)
            except TimeoutError:
                continue

    def close(self, index: int) -> None:
        """Stop serving socket ``index`` and close it."""
        self._stops[index].set()
        self._threads[index].join(5)
        self.socks[index].close()

    def close_all(self) -> None:
        for index in range(len(self.socks)):
            self.close(index)


def ask(port: int, kind: socket.SocketKind) -> int:
    """Which socket of the group on ``port`` answered one request (a fresh client socket each time)."""
    if kind == socket.SOCK_STREAM:
        with socket.create_connection((LOCAL, port), timeout=5) as conn:
            return int(conn.recv(16))
    token = os.urandom(8).hex().encode()  # a late answer to an earlier socket on the same port is not ours
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(5)
        client.sendto(token, (LOCAL, port))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            answer, _, echoed = client.recv(64).partition(b" ")
            if echoed == token:
                return int(answer)
        raise TimeoutError("no answer to this request")


@pytest.fixture
def group(request: pytest.FixtureRequest) -> Iterator[tuple[Steering, Responder, socket.SocketKind]]:
    """Four sockets of one group in slots 0-3 of a ``Steering``, program attached, answering."""
    kind = KINDS[request.param]
    with Steering.create(8) as steering:
        socks = reuseport_group((LOCAL, 0), 4, kind)
        for slot, sock in enumerate(socks):
            steering.add(slot, sock)
        steering.attach(socks[0])
        responder = Responder(socks)
        try:
            yield steering, responder, kind
        finally:
            responder.close_all()


def port_of(responder: Responder) -> int:
    return next(s for s in responder.socks if s.fileno() >= 0).getsockname()[1]


@pytest.mark.usefixtures("no_fd_leak")
@pytest.mark.parametrize("group", ["tcp", "udp"], indirect=True)
def test_every_request_goes_to_the_selected_slot(group: tuple[Steering, Responder, socket.SocketKind]) -> None:
    steering, responder, kind = group
    port = port_of(responder)
    for slot in (2, 0, 3, 1):
        steering.select(slot)
        assert steering.selected == slot
        assert [ask(port, kind) for _ in range(25)] == [slot] * 25


@pytest.mark.parametrize("group", ["tcp", "udp"], indirect=True)
def test_flip_mid_load(group: tuple[Steering, Responder, socket.SocketKind]) -> None:
    steering, responder, kind = group
    port = port_of(responder)
    answers: list[tuple[float, float, int]] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def client() -> None:
        for _ in range(20_000):
            if done.is_set():
                return
            start = time.monotonic()
            try:
                answer = ask(port, kind)
            except OSError as err:
                errors.append(err)
                return
            answers.append((start, time.monotonic(), answer))

    flips: list[tuple[float, float, int]] = []
    clients = [threading.Thread(target=client) for _ in range(3)]
    for thread in clients:
        thread.start()
    try:
        for step in range(16):
            before = time.monotonic()
            steering.select(step % 4)
            flips.append((before, time.monotonic(), step % 4))
            time.sleep(0.08)
    finally:
        done.set()
        for thread in clients:
            thread.join(10)
    assert not errors
    strict = 0
    for start, end, answer in answers:
        # slots that were selected at some moment of the request: the one of the last flip done
        # when it started, and that of every flip that overlapped it (a slow one may span several)
        in_effect = [slot for _, after, slot in flips if after <= start]
        allowed = {in_effect[-1] if in_effect else 0} | {slot for before, after, slot in flips
                                                           if before <= end and after >= start}
        assert answer in allowed, (answer, allowed)
        stable = [slot for before, after, slot in flips if after <= start]
        if stable and not any(before <= end and after >= start for before, after, _ in flips):
            assert answer == stable[-1]
            strict += 1
    assert strict > 50


@pytest.mark.parametrize("group", ["tcp", "udp"], indirect=True)
def test_empty_slot_falls_back_to_default_selection(group: tuple[Steering, Responder, socket.SocketKind]) -> None:
    steering, responder, kind = group
    steering.select(6)
    answers = {ask(port_of(responder), kind) for _ in range(40)}
    assert answers <= {0, 1, 2, 3} and len(answers) > 1


@pytest.mark.parametrize("group", ["tcp", "udp"], indirect=True)
def test_socket_closed_in_the_array_empties_its_slot(group: tuple[Steering, Responder, socket.SocketKind]) -> None:
    steering, responder, kind = group
    steering.select(1)
    responder.close(1)
    assert steering.cookie(1) is None and set(steering.occupied()) == {0, 2, 3}
    assert {ask(port_of(responder), kind) for _ in range(40)} <= {0, 2, 3}
    steering.select(2)
    assert {ask(port_of(responder), kind) for _ in range(10)} == {2}


def test_program_stays_with_the_group_when_the_attaching_socket_closes() -> None:
    with Steering.create(4) as steering:
        socks = reuseport_group((LOCAL, 0), 3)
        for slot, sock in enumerate(socks):
            steering.add(slot, sock)
        steering.attach(socks[0])
        steering.select(2)
        responder = Responder(socks)
        try:
            responder.close(0)
            assert {ask(port_of(responder), socket.SOCK_STREAM) for _ in range(20)} == {2}
        finally:
            responder.close_all()


@pytest.mark.usefixtures("no_fd_leak")
def test_kernel_refusals_are_clear_errors() -> None:
    with Steering.create(4) as steering, pybpf.ReuseportSockArray.create(4) as other, pybpf.SockMap.create(4) as sockmap:
        plain = socket.create_server((LOCAL, 0))
        bound = socket.socket()
        unbound_udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        unix = socket.socket(socket.AF_UNIX)
        member, member2 = reuseport_group((LOCAL, 0), 2)
        with plain, bound, unbound_udp, unix, member, member2:
            bound.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            bound.bind((LOCAL, 0))
            unbound_udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            lone = reuseport_socket((LOCAL, 0), backlog=1)
            lone.settimeout(5)
            with lone, socket.create_connection(lone.getsockname(), timeout=5) as client, lone.accept()[0] as accepted:
                # no SO_REUSEPORT; TCP bound but not listening; TCP established (both ends); UDP not bound
                for refused in (plain, bound, client, accepted, unbound_udp):
                    with pytest.raises(BPFError, match="update") as info:
                        steering.add(0, refused)
                    assert info.value.errno == errno.EINVAL
            with pytest.raises(NotSupportedError):
                steering.add(0, unix)
            with pytest.raises(IndexOutOfRangeError):
                steering.add(4, member)
            with pytest.raises(BPFError, match="reuseport group") as info:
                steering.attach(plain)
            assert info.value.errno == errno.EINVAL

            steering.add(0, member)
            with pytest.raises(KeyExistsError):
                steering.add(0, member2, replace=False)
            for elsewhere in (lambda: steering.add(1, member), lambda: other.update(0, member), lambda: sockmap.update(0, member)):
                with pytest.raises(BPFError) as info:
                    elsewhere()
                assert info.value.errno == errno.EBUSY
            sockmap[1] = member2
            with pytest.raises(BPFError) as info:
                steering.add(1, member2)
            assert info.value.errno == errno.EBUSY
            with pytest.raises(ValueError, match="out of range"):
                steering.select(4)


def _connect_many(port: int, count: int) -> list[socket.socket]:
    return [socket.create_connection((LOCAL, port), timeout=5) for _ in range(count)]


@pytest.mark.usefixtures("no_fd_leak")
def test_generation_handoff_keeps_the_accept_queue(pin_dir: Path) -> None:
    clients: list[socket.socket] = []
    try:
        with Generation.join((LOCAL, 0), "g", pin_root=pin_dir) as first:
            first.take_over()
            port = first.address[1]
            clients += _connect_many(port, 5)  # queued, not accepted
            with Generation.join((LOCAL, port), "g", pin_root=pin_dir) as second:
                assert (first.number, second.number) == (1, 2) and first.slot != second.slot
                clients += _connect_many(port, 5)  # joined, not yet flipped: still the first's
                assert not first.replaced
                assert second.take_over() == first.slot and first.replaced and not second.replaced
                late = _connect_many(port, 5)
                clients += late
                drained = list(first.drain(quiet=0.1))
                for conn in drained:
                    with conn:
                        conn.sendall(b"first\n")
                first.close()
                assert second.steering.cookie(first.slot) is None
                with Generation.join((LOCAL, port), "g", pin_root=pin_dir) as third:
                    clients += _connect_many(port, 5)  # the group's program outlived its attacher
                    second.sock.settimeout(1)
                    for _ in range(10):
                        conn, _ = second.sock.accept()
                        conn.sendall(b"second\n")
                        conn.close()
                    third.sock.settimeout(0.1)
                    with pytest.raises(TimeoutError):
                        third.sock.accept()
                    shown = status("g", pin_dir)
                    assert shown.selected == second.slot
                    assert {s.slot: s.generation for s in shown.slots if s.cookie is not None} == {second.slot: 2, third.slot: 3}
        assert len(drained) == 10
        for conn in clients:
            conn.settimeout(5)
            assert conn.recv(16) == (b"first\n" if clients.index(conn) < 10 else b"second\n")
    finally:
        for conn in clients:
            conn.close()
    assert unpin("g", pin_dir) and not (pin_dir / "g").exists()


def test_join_refuses_another_address_and_a_full_array(pin_dir: Path) -> None:
    with Generation.join((LOCAL, 0), "g", pin_root=pin_dir, slots=2) as first:
        port = first.address[1]
        with reuseport_socket((LOCAL, 0)) as elsewhere:
            with pytest.raises(ValueError, match=f"serves {LOCAL}:{port}"):
                Generation.join(elsewhere.getsockname(), "g", pin_root=pin_dir)
        with Generation.join((LOCAL, port), "g", pin_root=pin_dir):
            with pytest.raises(BPFError, match="all 2 slots") as info:
                Generation.join((LOCAL, port), "g", pin_root=pin_dir)
            assert info.value.errno == errno.ENOSPC
    with pytest.raises(ValueError, match="group name"):
        Generation.join((LOCAL, 0), "../x", pin_root=pin_dir)


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", action="store_true")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_cli_status_flip_unpin(pin_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = str(pin_dir)
    with Generation.join((LOCAL, 0), "c", pin_root=pin_dir) as first, \
            Generation.join(first.address, "c", pin_root=pin_dir) as second:
        second.take_over()
        assert _cli("reuseport", "status", "c", "--pin-root", root) == 0
        text = capsys.readouterr().out
        assert f"selected slot {second.slot}" in text and f"* slot {second.slot}" in text and "gen 1 pid" in text
        assert _cli("reuseport", "flip", "c", str(first.slot), "--pin-root", root) == 0
        assert first.steering.selected == first.slot and second.replaced
        with pytest.raises(ValueError, match="is empty"):
            _cli("reuseport", "flip", "c", "7", "--pin-root", root)
        assert _cli("--json", "reuseport", "status", "c", "--pin-root", root) == 0
        assert json.loads(capsys.readouterr().out.split("\n", 1)[1])["selected"] == first.slot
    assert _cli("reuseport", "unpin", "c", "--pin-root", root) == 0
    with pytest.raises(FileNotFoundError):
        _cli("reuseport", "status", "c", "--pin-root", root)


class Server:
    """One generation of the example server in its own process; lines of its stdout in a queue."""

    def __init__(self, port: int, pin_root: Path) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        command = [sys.executable, "-m", "pybpf.apps.reuseport_server", "--listen", f"{LOCAL}:{port}",
                   "--name", "restart", "--pin-root", str(pin_root), "--timeout", str(10 * scale.TIME)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line.rstrip())
            self.lines.put(line.rstrip())

    def wait_for(self, prefix: str, timeout: float = 15 * scale.TIME) -> str:
        """The first line starting with ``prefix``; fails with the output so far after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line.startswith(prefix):
                return line
        raise AssertionError(f"no {prefix!r} line from the server within {timeout} s: {self.output}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers; always reaps the process and its pipe."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._reader.join(5)
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def servers() -> Iterator[Callable[[int, Path], Server]]:
    started: list[Server] = []

    def start(port: int, pin_root: Path) -> Server:
        started.append(Server(port, pin_root))
        return started[-1]

    try:
        yield start
    finally:
        for server in started:
            server.stop()


def test_restart_under_load_loses_no_connection(pin_dir: Path, servers: Callable[[int, Path], Server]) -> None:
    duration = 5.0 * scale.SIZE
    first = servers(0, pin_dir)
    port = int(first.wait_for("ready").rsplit(":", 1)[1])
    results: list[tuple[float, str]] = []
    errors: list[str] = []
    done = threading.Event()

    def client() -> None:
        for _ in range(1_000_000):
            if done.is_set():
                return
            start = time.monotonic()
            try:
                with socket.create_connection((LOCAL, port), timeout=5 * scale.TIME) as conn:
                    conn.sendall(b"hello\n")
                    reply = b""
                    while chunk := conn.recv(64):
                        reply += chunk
            except OSError as err:
                errors.append(repr(err))
                continue
            if not reply.startswith(b"gen "):
                errors.append(f"bad reply {reply!r}")
                continue
            results.append((start, reply.decode().split()[1]))

    clients = [threading.Thread(target=client) for _ in range(6)]
    for thread in clients:
        thread.start()
    generations = [first]
    ready_at: list[float] = []
    try:
        for _ in range(2):
            time.sleep(duration / 3)
            generations.append(servers(port, pin_dir))
            generations[-1].wait_for("ready")
            ready_at.append(time.monotonic())
        time.sleep(duration / 3)
    finally:
        done.set()
        for thread in clients:
            thread.join(15)
    for old in generations[:2]:
        assert old.process.wait(15) == 0, old.output
        old.wait_for("exit")
    assert not errors, errors[:5]
    served = {gen: sum(1 for _, g in results if g == gen) for gen in ("1", "2", "3")}
    assert all(served.values()), served
    assert {g for start, g in results if start > ready_at[-1]} == {"3"}
    generations[2].stop()
    assert generations[2].process.returncode == 0


@pytest.mark.parametrize("after", [0.3, 1.0])
def test_successor_killed_during_the_grace_period(pin_dir: Path, servers: Callable[[int, Path], Server], after: float) -> None:
    """The new generation dies ``after`` seconds after taking over: the old one, standing by,
    takes traffic back. No connection is refused at any time; the only ones that may fail were
    in the killed process's hands (accepted, not yet answered) when it died (what waited in its
    accept queue migrates: SK_REUSEPORT_SELECT_OR_MIGRATE)."""
    probes.skip_if(probes.reuseport_migrate())
    first = servers(0, pin_dir)
    port = int(first.wait_for("ready").rsplit(":", 1)[1])
    results: list[tuple[float, float, str]] = []
    errors: list[tuple[float, float, str]] = []
    done = threading.Event()

    def client() -> None:
        for _ in range(1_000_000):
            if done.is_set():
                return
            start = time.monotonic()
            try:
                with socket.create_connection((LOCAL, port), timeout=5 * scale.TIME) as conn:
                    conn.sendall(b"hello\n")
                    reply = b""
                    while chunk := conn.recv(64):
                        reply += chunk
            except OSError as err:
                errors.append((start, time.monotonic(), repr(err)))
                continue
            if reply.startswith(b"gen "):
                results.append((start, time.monotonic(), reply.decode().split()[1]))
            else:
                errors.append((start, time.monotonic(), f"no reply ({reply!r})"))

    clients = [threading.Thread(target=client) for _ in range(4)]
    for thread in clients:
        thread.start()
    try:
        time.sleep(0.3)
        second = servers(port, pin_dir)
        second.wait_for("ready")
        time.sleep(after)
        killed_at = time.monotonic()
        second.process.kill()
        second.process.wait(10)
        first.wait_for("took back")
        time.sleep(0.5 * scale.TIME)
    finally:
        done.set()
        for thread in clients:
            thread.join(15)
    assert not any("refused" in e.lower() for _, _, e in errors), errors[:5]
    late = [e for e in errors if e[0] > killed_at + 0.05]
    assert not late, late[:5]
    in_flight = [e for e in errors if e[0] <= killed_at <= e[1] + 0.05]
    assert len(in_flight) == len(errors) and len(errors) <= len(clients), errors
    assert {gen for start, _, gen in results if start > killed_at + 0.05} == {"1"}
    assert {gen for _, _, gen in results} == {"1", "2"}
    first.stop()
    assert first.process.returncode == 0, first.output


def test_group_directory_of_another_user_is_refused(pin_dir: Path) -> None:
    """bpffs is world-writable: a group directory another user made first, one writable by others,
    or a symlink must not be used."""
    planted = pin_dir / "taken"
    planted.mkdir()
    os.chown(planted, 65534, 65534)
    with pytest.raises(PermissionError, match="belongs to uid 65534"):
        Generation.join((LOCAL, 0), "taken", pin_root=pin_dir)
    assert not any(planted.iterdir())
    open_dir = pin_dir / "open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)
    with pytest.raises(PermissionError, match="writable by others"):
        Generation.join((LOCAL, 0), "open", pin_root=pin_dir)
    os.chmod(open_dir, 0o1777)  # sticky: others cannot replace our entries
    with Generation.join((LOCAL, 0), "open", pin_root=pin_dir):
        pass
    (pin_dir / "link").symlink_to(planted)
    with pytest.raises(PermissionError, match="symlink"):
        Generation.join((LOCAL, 0), "link", pin_root=pin_dir)
    with pytest.raises(PermissionError):
        unpin("taken", pin_dir)


def test_pin_directories_are_private_whatever_the_umask(pin_dir: Path) -> None:
    old = os.umask(0)
    try:
        with Generation.join((LOCAL, 0), "g", pin_root=pin_dir / "deeper" / "root"):
            pass
    finally:
        os.umask(old)
    for path in (pin_dir / "deeper", pin_dir / "deeper" / "root", pin_dir / "deeper" / "root" / "g"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
