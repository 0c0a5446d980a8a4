"""``pybpf dispatch`` (sk_lookup) in network namespaces the test creates: one socket serves 200
ports and several addresses of 127.0.0.0/8, TCP and UDP (with IP_RECVORIGDSTADDR), the longest
binding wins, unbinding refuses connections again, bad sockets are refused in words, sockets are
taken out of other processes, and neither a server restart nor a dispatcher upgrade drops a
connection."""

from __future__ import annotations

import errno
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from scale import TIME

from pybpf.apps.dispatch import Dispatcher
from pybpf.testing.netns import NETNS_DIR, inside, namespace

IP_RECVORIGDSTADDR = 20
IP_ORIGDSTADDR = 20


@pytest.fixture
def netns() -> Iterator[str]:
    with namespace() as name:
        yield name


@pytest.fixture
def dispatcher(netns: str, pin_dir: Path) -> Iterator[Dispatcher]:
    d = Dispatcher.load(os.path.join(NETNS_DIR, netns), pin_dir / "dispatch")
    try:
        yield d
    finally:
        if (pin_dir / "dispatch" / "link").exists():
            d.unload()
        d.close()


def made_in(netns: str, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
    with inside(netns):
        return socket.socket(family, kind)


def server(netns: str, address: str = "127.0.0.1", family: int = socket.AF_INET) -> socket.socket:
    sock = made_in(netns, family)
    sock.bind((address, 0))
    sock.listen(512)
    sock.settimeout(10 * TIME)
    return sock


def connect(netns: str, address: tuple[str, int], family: int = socket.AF_INET) -> int:
    """0 or the errno of a TCP connect from inside ``netns``."""
    sock = made_in(netns, family)
    with sock:
        sock.settimeout(10 * TIME)
        return sock.connect_ex(address)


def test_two_hundred_ports_and_several_addresses_reach_one_socket(netns: str, dispatcher: Dispatcher) -> None:
    listener = server(netns)
    with listener:
        dispatcher.bind("many", "tcp", "127.0.0.0/8", 0)
        dispatcher.register("many", listener)
        targets = [(f"127.0.{i % 5}.{2 + i % 7}", 20000 + i) for i in range(200)]
        clients = []
        for target in targets:
            client = made_in(netns)
            client.settimeout(10 * TIME)
            client.connect(target)
            clients.append(client)
        seen = set()
        for _ in targets:
            accepted, _ = listener.accept()
            with accepted:
                seen.add(accepted.getsockname())  # the address the client asked for
        for client in clients:
            client.close()
        assert seen == set(targets)
        (metrics,) = dispatcher.metrics_list()
        assert (metrics.label, metrics.lookups, metrics.misses, metrics.errors) == ("many", 200, 0, 0)


def test_the_most_specific_binding_wins(netns: str, dispatcher: Dispatcher) -> None:
    wide, narrow, port = server(netns), server(netns), server(netns)
    with wide, narrow, port:
        dispatcher.bind("wide", "tcp", "127.0.0.0/8", 0)
        dispatcher.bind("narrow", "tcp", "127.0.0.8/29", 0)
        dispatcher.bind("port", "tcp", "127.0.0.0/8", 443)
        for label, sock in (("wide", wide), ("narrow", narrow), ("port", port)):
            dispatcher.register(label, sock)
        for target, expected in ((("127.1.1.1", 80), wide), (("127.0.0.9", 80), narrow), (("127.0.0.9", 443), port)):
            assert connect(netns, target) == 0
            expected.accept()[0].close()
        assert [str(b) for b in dispatcher.bindings_list()] == [
            "narrow tcp 127.0.0.8/29 0", "port tcp 127.0.0.0/8 443", "wide tcp 127.0.0.0/8 0"]


def test_unbind_gives_connection_refused(netns: str, dispatcher: Dispatcher) -> None:
    listener = server(netns)
    with listener:
        dispatcher.bind("web", "tcp", "127.0.0.5", 8080)
        dispatcher.register("web", listener)
        assert connect(netns, ("127.0.0.5", 8080)) == 0
        listener.accept()[0].close()
        dispatcher.unbind("web", "tcp", "127.0.0.5", 8080)
        assert connect(netns, ("127.0.0.5", 8080)) == errno.ECONNREFUSED
        with pytest.raises(KeyError, match="no binding"):
            dispatcher.unbind("web", "tcp", "127.0.0.5", 8080)


def test_a_binding_without_a_socket_refuses_and_counts_a_miss(netns: str, dispatcher: Dispatcher) -> None:
    dispatcher.bind("down", "tcp", "127.0.0.6", 0)
    assert connect(netns, ("127.0.0.6", 1234)) == errno.ECONNREFUSED
    (metrics,) = dispatcher.metrics_list()
    assert (metrics.lookups, metrics.misses) == (1, 1)


def test_udp_datagrams_keep_their_original_destination(netns: str, dispatcher: Dispatcher) -> None:
    receiver = made_in(netns, kind=socket.SOCK_DGRAM)
    sender = made_in(netns, kind=socket.SOCK_DGRAM)
    with receiver, sender:
        receiver.setsockopt(socket.SOL_IP, IP_RECVORIGDSTADDR, 1)
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(10 * TIME)
        dispatcher.bind("dns", "udp", "127.0.0.53/32", 0)
        dispatcher.register("dns", receiver)
        for port in range(5300, 5310):
            sender.sendto(b"query %d" % port, ("127.0.0.53", port))
            data, ancillary, _, _ = receiver.recvmsg(100, socket.CMSG_SPACE(16))
            assert data == b"query %d" % port
            (level, kind, raw), = ancillary
            assert (level, kind) == (socket.SOL_IP, IP_ORIGDSTADDR)
            (family,), (dst_port,) = struct.unpack_from("=H", raw), struct.unpack_from("!H", raw, 2)
            assert (family, dst_port, socket.inet_ntoa(raw[4:8])) == (socket.AF_INET, port, "127.0.0.53")
        assert dispatcher.destinations()[0].protocol == "udp"
        assert [(m.lookups, m.misses) for m in dispatcher.metrics_list()] == [(10, 0)]


def test_ipv6_and_dual_stack(netns: str, dispatcher: Dispatcher) -> None:
    listener = server(netns, "::", socket.AF_INET6)
    with listener:
        dispatcher.bind("v6", "tcp", "::1", 0)
        dispatcher.bind("v6", "tcp", "127.0.0.0/8", 7000)
        dispatcher.register("v6", listener)
        assert connect(netns, ("::1", 9999), socket.AF_INET6) == 0
        listener.accept()[0].close()
        assert connect(netns, ("127.0.0.3", 7000)) == 0  # IPv4 to the dual-stack IPv6 socket
        listener.accept()[0].close()


def test_sockets_that_cannot_serve_are_refused_in_words(netns: str, dispatcher: Dispatcher) -> None:
    closed = server(netns)
    closed.close()
    with pytest.raises(ValueError, match="the socket is closed"):
        dispatcher.register("x", closed)
    quiet = made_in(netns)
    with quiet:
        quiet.bind(("127.0.0.1", 0))
        with pytest.raises(ValueError, match="not listening"):
            dispatcher.register("x", quiet)
    unbound = made_in(netns, kind=socket.SOCK_DGRAM)
    with unbound:
        with pytest.raises(ValueError, match="not bound"):
            dispatcher.register("x", unbound)
    for bad in (("tcp", "127.0.0.1/8", 0), ("sctp", "127.0.0.1", 0), ("tcp", "127.0.0.1", 70000), ("tcp", "nonsense", 1)):
        with pytest.raises(ValueError):
            dispatcher.bind("x", *bad)
    with pytest.raises(ValueError, match="label"):
        dispatcher.bind("has space", "tcp", "127.0.0.1", 1)


SERVE = r"""
import socket, sys, time
s = socket.create_server(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
conn, _ = s.accept()
conn.sendall(b"served by %d" % __import__("os").getpid())
conn.close()
time.sleep(1)
"""


def test_register_pid_takes_the_socket_of_another_process(netns: str, dispatcher: Dispatcher) -> None:
    proc = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-c", SERVE], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        dispatcher.bind("other", "tcp", "127.0.0.9", 0)
        dest = dispatcher.register_pid(proc.pid, "other", "tcp", "127.0.0.1", port)
        assert dest.label == "other"
        client = made_in(netns)
        with client:
            client.settimeout(10 * TIME)
            client.connect(("127.0.0.9", 1))
            assert client.recv(100) == b"served by %d" % proc.pid
        with pytest.raises(LookupError, match="no udp socket bound"):
            dispatcher.register_pid(proc.pid, "other", "udp", "127.0.0.1", port)
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()


def _serve_until(listener: socket.socket, stop: threading.Event, served: list[int]) -> None:
    """Answer each connection with b"ok" until ``stop``; then drain what is queued (slowly: the
    clients must still be running when the server restarts)."""
    listener.settimeout(0.05)
    while True:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            if stop.is_set():
                return
            continue
        with conn:
            conn.sendall(b"ok")
        served.append(1)
        time.sleep(0.002)


def test_server_restart_and_upgrade_drop_no_connection(netns: str, dispatcher: Dispatcher) -> None:
    dispatcher.bind("svc", "tcp", "127.0.0.0/8", 9000)
    old = server(netns)
    dispatcher.register("svc", old)
    old_stop, new_stop, served_old, served_new = threading.Event(), threading.Event(), [], []
    old_server = threading.Thread(target=_serve_until, args=(old, old_stop, served_old), daemon=True)
    old_server.start()
    failures: list[str] = []
    total = 300

    def clients() -> None:
        for i in range(total):
            client = made_in(netns)
            with client:
                client.settimeout(10 * TIME)
                try:
                    client.connect((f"127.0.0.{1 + i % 200}", 9000))
                    if client.recv(10) != b"ok":
                        failures.append(f"{i}: no answer")
                except OSError as err:
                    failures.append(f"{i}: {err}")
    runner = threading.Thread(target=clients)
    runner.start()
    deadline = time.monotonic() + 60 * TIME
    while len(served_old) < total // 3 and time.monotonic() < deadline:  # restart a third of the way in
        time.sleep(0.001)
    new = server(netns)
    new_server = threading.Thread(target=_serve_until, args=(new, new_stop, served_new), daemon=True)
    new_server.start()
    dispatcher.register("svc", new)  # from now on new connections go to `new` ...
    old_stop.set()                   # ... and the old server drains its queue, then closes
    old_server.join(30 * TIME)
    old.close()
    with Dispatcher.open(pin_dir=dispatcher.pin_dir) as again:
        again.upgrade()               # the dispatcher itself restarts its program
    runner.join(120 * TIME)
    new_stop.set()
    new_server.join(30 * TIME)
    new.close()
    assert failures == []
    assert len(served_old) + len(served_new) == total and served_new


def test_state_lives_in_bpffs_for_the_command(netns: str, pin_dir: Path) -> None:
    path = os.path.join(NETNS_DIR, netns)

    def cli(*words: str, json_out: bool = False) -> str:
        done = subprocess.run([sys.executable, "-m", "pybpf", *(["--json"] if json_out else []), "dispatch", "--netns", path,
                               "--pin-dir", str(pin_dir / "d"), *words], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    cli("load")
    try:
        with pytest.raises(FileExistsError):
            Dispatcher.load(path, pin_dir / "d")
        cli("bind", "web", "tcp", "127.0.0.0/8", "80")
        assert json.loads(cli("bindings", json_out=True)) == [{"label": "web", "protocol": "tcp", "prefix": "127.0.0.0/8", "port": 80}]
        listener = server(netns)
        with listener:
            done = subprocess.run([sys.executable, "-m", "pybpf", "dispatch", "--netns", path, "--pin-dir",
                                   str(pin_dir / "d"), "register", "web"], stdin=listener.fileno(), capture_output=True,
                                  text=True, timeout=60)  # the socket on standard input, as systemd hands it over
            assert done.returncode == 0 and "registered web tcp ipv4" in done.stdout, done.stderr
            assert json.loads(cli("list", json_out=True))[0]["label"] == "web"
            assert connect(netns, ("127.0.0.77", 80)) == 0
            listener.accept()[0].close()
            assert json.loads(cli("metrics", json_out=True)) == [{"label": "web", "lookups": 1, "misses": 0, "errors": 0}]
            assert "web" in cli("metrics")
            cli("unbind", "web", "tcp", "127.0.0.0/8", "80")
            assert connect(netns, ("127.0.0.77", 80)) == errno.ECONNREFUSED
    finally:
        cli("unload")
    assert not (pin_dir / "d").exists()
    done = subprocess.run([sys.executable, "-m", "pybpf", "dispatch", "--pin-dir", str(pin_dir / "d"), "list"],
                          capture_output=True, text=True)
    assert done.returncode == 1 and "no dispatcher is loaded" in done.stderr


def test_closed_servers_and_v6only_sockets_show_in_metrics(netns: str, dispatcher: Dispatcher) -> None:
    listener = server(netns)
    v6only = made_in(netns, socket.AF_INET6)
    with v6only:
        v6only.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        v6only.bind(("::1", 0))
        v6only.listen()
        dispatcher.bind("gone", "tcp", "127.0.0.0/8", 0)
        dispatcher.register("gone", listener)
        dispatcher.bind("v6only", "tcp", "127.0.0.42", 0)
        dispatcher.register("v6only", v6only)
        listener.close()  # leaves the SOCKMAP by itself
        assert connect(netns, ("127.0.0.5", 1)) == errno.ECONNREFUSED
        assert connect(netns, ("127.0.0.42", 1)) == errno.ECONNREFUSED  # bpf_sk_assign refuses it
        counts = {m.label: (m.lookups, m.misses, m.errors) for m in dispatcher.metrics_list()}
        assert counts == {"gone": (1, 1, 0), "v6only": (1, 0, 1)}
        assert [d.label for d in dispatcher.destinations()] == ["v6only"]
