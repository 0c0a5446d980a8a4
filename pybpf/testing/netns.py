"""Network namespaces for tests, the demo and benchmarks: two fresh namespaces joined by a veth
pair, addressed and with pinned neighbour entries, entered from the calling thread with
``setns`` and removed afterwards.

Nothing is configured in the host namespace. Sockets made inside a namespace (``Side.socket``)
stay there after the thread comes back, so tests send and receive from the main thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import socket
import subprocess
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from .._sys.libc import setns

_Socket = socket.socket  # the method named socket below shadows the module in annotations

NETNS_DIR = "/var/run/netns"
PREFIX = "pybpf-ns-"

_counter = itertools.count()
T = TypeVar("T")


@contextlib.contextmanager
def inside(namespace: str) -> Iterator[None]:
    """Run the block in network namespace ``namespace`` (this thread only), then come back."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(os.path.join(NETNS_DIR, namespace), os.O_RDONLY)
        try:
            setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            setns(home)
    finally:
        os.close(home)


def ip(*args: str) -> str:
    """Run ``ip`` with ``args``; its stdout, or ``RuntimeError`` carrying its stderr."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if done.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


@dataclasses.dataclass(frozen=True)
class Side:
    """One end of the pair: its namespace, interface, address and MAC."""

    namespace: str
    ifname: str
    ip: str
    mac: str

    def inside(self) -> contextlib.AbstractContextManager[None]:
        """Enter this side's namespace for a block."""
        return inside(self.namespace)

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ``fn`` inside this side's namespace."""
        with inside(self.namespace):
            return fn(*args, **kwargs)

    def socket(self, family: int = socket.AF_INET, type: int = socket.SOCK_DGRAM, proto: int = 0) -> _Socket:
        """A socket created in this side's namespace (it stays there)."""
        return self.run(socket.socket, family, type, proto)

    def packet_socket(self, protocol: int = 0x0003) -> _Socket:
        """An AF_PACKET socket bound to this side's interface (ETH_P_ALL by default)."""
        sock = self.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(protocol))
        try:
            sock.bind((self.ifname, protocol))
        except BaseException:
            sock.close()
            raise
        return sock

    @property
    def ifindex(self) -> int:
        """The interface's index inside its namespace."""
        return self.run(socket.if_nametoindex, self.ifname)


@dataclasses.dataclass(frozen=True)
class VethPair:
    """``local`` (where the AF_XDP socket goes) and ``peer`` (where traffic comes from)."""

    local: Side
    peer: Side
    queues: int


def _write_sysctl(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _quiet_ipv6(namespace: str) -> None:
    """No IPv6 in the namespace: no router solicitations or DAD frames to surprise the tests."""
    with inside(namespace):
        for name in ("all", "default"):
            _write_sysctl(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6", "1")


def _sweep_stale() -> None:
    """Remove namespaces left by test processes that died before cleaning up."""
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return
    for name in names:
        pid = name[len(PREFIX):].split("-")[0]
        if name.startswith(PREFIX) and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


@contextlib.contextmanager
def veth_pair(queues: int = 1) -> Iterator[VethPair]:
    """Two new namespaces joined by a veth pair of ``queues`` queues each way, up, addressed
    10.199.0.1/24 (local) and 10.199.0.2/24 (peer), neighbours pinned both ways; all of it
    removed on exit, also after a failure half-way."""
    _sweep_stale()
    tag = f"{PREFIX}{os.getpid()}-{next(_counter)}"
    local = Side(f"{tag}-a", "xsk0", "10.199.0.1", "02:00:00:c7:00:01")
    peer = Side(f"{tag}-b", "peer0", "10.199.0.2", "02:00:00:c7:00:02")
    made: list[str] = []
    try:
        for side in (local, peer):
            ip("netns", "add", side.namespace)
            made.append(side.namespace)
            _quiet_ipv6(side.namespace)
        q = str(queues)
        ip("link", "add", local.ifname, "netns", local.namespace, "address", local.mac,
           "numtxqueues", q, "numrxqueues", q, "type", "veth",
           "peer", "name", peer.ifname, "netns", peer.namespace, "address", peer.mac,
           "numtxqueues", q, "numrxqueues", q)
        for side, other in ((local, peer), (peer, local)):
            ns = side.namespace
            ip("-n", ns, "addr", "add", f"{side.ip}/24", "dev", side.ifname)
            ip("-n", ns, "link", "set", side.ifname, "up")
            ip("-n", ns, "neigh", "replace", other.ip, "lladdr", other.mac, "dev", side.ifname, "nud", "permanent")
        yield VethPair(local, peer, queues)
    finally:
        if made:
            subprocess.run(["ip", "-n", local.namespace, "link", "del", local.ifname], capture_output=True, timeout=10)
        for namespace in made:
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=10)


@contextlib.contextmanager
def namespace(loopback: bool = True) -> Iterator[str]:
    """One new network namespace (its name), with ``lo`` up unless ``loopback`` is False; removed
    on exit. Enter it with ``inside(name)``; its path is ``/var/run/netns/NAME``."""
    _sweep_stale()
    name = f"{PREFIX}{os.getpid()}-{next(_counter)}-solo"
    ip("netns", "add", name)
    try:
        if loopback:
            ip("-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
