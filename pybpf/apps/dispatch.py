"""sk_lookup dispatch: one socket serves any set of addresses and ports, changed at run time
without rebinding (Cloudflare's tubular, with its verbs where they fit).

A SK_LOOKUP program (``pybpf.programs.sk_lookup_dispatch``) is attached to a network namespace.
For each new TCP connection or UDP datagram it looks up (protocol, local address, port) in the
*bindings* (an LPM trie: the longest prefix wins, a binding for the port before one for every
port) to find a *label*, and hands the packet to the socket registered under that label in
*sockets* (a SOCKMAP). Everything lives in bpffs under one directory, so the dispatcher (this
module, the ``pybpf dispatch`` command) and the servers restart independently: every call opens
the pins, acts and lets go.

- ``Dispatcher.load(netns, pin_dir)`` creates the maps and the program, links it to the
  namespace and pins it all; ``Dispatcher.open(...)`` finds it again; ``unload()`` removes it.
- ``bind(label, "tcp", "127.0.0.0/8", 0)``: every TCP port of 127/8 goes to ``label``;
  ``unbind`` removes a binding (then nothing catches the traffic: ECONNREFUSED, as without us).
- ``register(label, sock)``: ``sock`` (listening TCP, or bound unconnected UDP) now serves the
  label for its protocol and family, replacing the previous one atomically: a server restart
  registers its new socket, then drains the old one's accept queue, and no connection is lost.
- ``register_pid(pid, label, protocol, address, port)`` takes the socket out of another process
  (``pidfd_getfd``).
- ``metrics()``: per label, lookups, misses (no socket registered) and errors (the kernel refused
  the socket), summed over the CPUs of a per-CPU map.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import ipaddress
import os
import socket
import stat
from pathlib import Path
from typing import Any, cast

from pybpf._sys.constants import MapFlags, MapType
from pybpf.errors import BPFError
from pybpf.map import Map, MapSpec, SockMap
from pybpf.programs import Link
from pybpf.pins import make_pin_dir
from pybpf.programs import BindingKey, DispatchMetrics, sk_lookup_dispatch
from pybpf.programs.ready_sockets import SLOTS_PER_LABEL, socket_slot
from pybpf._sys.pidfd import pidfd_getfd, pidfd_open

BPFFS = "/sys/fs/bpf"
LABEL_SIZE = 32
"""Label names are at most 31 bytes of UTF-8."""
PROTOCOLS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}
_NAMES = {number: name for name, number in PROTOCOLS.items()}
_FAMILIES = {socket.AF_INET: "ipv4", socket.AF_INET6: "ipv6"}
_PINS = ("link", "bindings", "sockets", "labels", "metrics")
_V4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
SO_ACCEPTCONN = 30
MAX_FDS_SEARCHED = 1 << 16


class LabelName(ctypes.Structure):
    """The key of the labels map: a NUL-padded name."""

    _fields_ = [("name", ctypes.c_char * LABEL_SIZE)]


@dataclasses.dataclass(frozen=True)
class Binding:
    """One binding: traffic of ``protocol`` to ``prefix`` on ``port`` (0: every port) goes to ``label``."""

    label: str
    protocol: str
    prefix: ipaddress.IPv4Network | ipaddress.IPv6Network
    port: int

    def __str__(self) -> str:
        return f"{self.label} {self.protocol} {self.prefix} {self.port}"


@dataclasses.dataclass(frozen=True)
class Destination:
    """A socket registered for a label: its protocol, family and cookie."""

    label: str
    protocol: str
    family: str
    cookie: int


@dataclasses.dataclass(frozen=True)
class Metrics:
    """A label's counters since it was created."""

    label: str
    lookups: int
    misses: int
    errors: int


def default_pin_dir(netns: str | os.PathLike[str] | int | None = None) -> Path:
    """``/sys/fs/bpf/pybpf-dispatch-<namespace inode>``: one dispatcher per namespace."""
    path = "/proc/thread-self/ns/net" if netns is None else netns
    inode = os.fstat(path).st_ino if isinstance(path, int) else os.stat(path).st_ino
    return Path(BPFFS) / f"pybpf-dispatch-{inode}"


def _label_key(label: str) -> LabelName:
    if not isinstance(label, str):
        raise TypeError(f"label must be a str, not {label!r}")
    raw = label.encode()
    if not raw or len(raw) >= LABEL_SIZE or b"\0" in raw or any(c.isspace() for c in label):
        raise ValueError(f"label {label!r} must be 1 to {LABEL_SIZE - 1} bytes without spaces or NUL")
    return LabelName(raw)


def _protocol(protocol: str) -> int:
    try:
        return PROTOCOLS[protocol.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"protocol must be 'tcp' or 'udp', not {protocol!r}") from None


def _port(port: Any) -> int:
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be 0 (every port) to 65535, not {port!r}")
    return port


def _prefix(prefix: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(prefix, strict=True)
    except (ValueError, TypeError) as err:
        raise ValueError(f"prefix {prefix!r} is not an address or a network (e.g. 127.0.0.0/8): {err}") from None


def binding_key(protocol: str, prefix: Any, port: Any) -> BindingKey:
    """The LPM trie key of a binding (IPv4 prefixes stored v4-mapped)."""
    network, number, port = _prefix(prefix), _protocol(protocol), _port(port)
    if isinstance(network, ipaddress.IPv4Network):
        address, bits = b"\0" * 10 + b"\xff\xff" + network.network_address.packed, 96 + network.prefixlen
    else:
        address, bits = network.network_address.packed, network.prefixlen
    return BindingKey(32 + bits, number, 0, socket.htons(port), (ctypes.c_uint8 * 16)(*address))


def _binding_of(key: BindingKey, label: str) -> Binding:
    address = bytes(key.address)
    bits = key.prefixlen - 32
    v6 = ipaddress.IPv6Network((address, bits))
    network: ipaddress.IPv4Network | ipaddress.IPv6Network = v6
    if bits >= 96 and v6.subnet_of(_V4_MAPPED):
        network = ipaddress.IPv4Network((address[12:], bits - 96))
    return Binding(label, _NAMES.get(key.protocol, str(key.protocol)), network, socket.ntohs(key.port))


def _check_socket(sock: socket.socket) -> tuple[int, int]:
    """``(protocol, family)`` of a socket that can serve a label; ValueError saying why not."""
    if not isinstance(sock, socket.socket):
        raise TypeError(f"expected a socket, not {sock!r}")
    if sock.fileno() < 0:
        raise ValueError("the socket is closed")
    if sock.family not in _FAMILIES:
        raise ValueError(f"only IPv4 and IPv6 sockets can serve a label, not {sock.family!r}")
    kind = sock.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
    if kind == socket.SOCK_STREAM:
        if not sock.getsockopt(socket.SOL_SOCKET, SO_ACCEPTCONN):
            raise ValueError("the TCP socket is not listening: call listen() before registering it")
        return socket.IPPROTO_TCP, sock.family
    if kind == socket.SOCK_DGRAM:
        if sock.getsockname()[1] == 0:
            raise ValueError("the UDP socket is not bound: bind() it before registering it")
        try:
            sock.getpeername()
        except OSError:
            return socket.IPPROTO_UDP, sock.family
        raise ValueError("the UDP socket is connected: the kernel gives connected sockets no new traffic")
    raise ValueError("only TCP (SOCK_STREAM) and UDP (SOCK_DGRAM) sockets can serve a label")


class Dispatcher:
    """A dispatcher's pinned state, opened: its link, maps and labels."""

    def __init__(self, pin_dir: Path, link: Link, bindings: Map, sockets: SockMap, labels: Map, metrics: Map) -> None:
        """Use ``load`` or ``open``."""
        self.pin_dir = pin_dir
        self.link, self.bindings, self.sockets, self.labels, self.metrics = link, bindings, sockets, labels, metrics

    # ---- life cycle --------------------------------------------------------------------------

    @classmethod
    def load(cls, netns: str | os.PathLike[str] | int | None = None, pin_dir: str | os.PathLike[str] | None = None,
             max_labels: int = 1024, max_bindings: int = 65536) -> Dispatcher:
        """Create the maps and the program, link it to ``netns`` (a path, an fd, or None: this
        thread's namespace) and pin everything under ``pin_dir``; FileExistsError if a
        dispatcher is pinned there already."""
        for name, value, top in (("max_labels", max_labels, 1 << 20), ("max_bindings", max_bindings, 1 << 24)):
            if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= top:
                raise ValueError(f"{name} must be an int in 2..{top}, not {value!r}")
        where = Path(pin_dir) if pin_dir is not None else default_pin_dir(netns)
        if (where / "link").exists():
            raise FileExistsError(f"a dispatcher is already loaded at {where} (open it, or unload it first)")
        made: list[Any] = []
        try:
            bindings = Map.create(MapSpec(MapType.LPM_TRIE, key_size=ctypes.sizeof(BindingKey), value_size=4,
                                          max_entries=max_bindings, flags=MapFlags.NO_PREALLOC, name="disp_bindings"))
            made.append(bindings)
            sockets = cast(SockMap, SockMap.create(max_labels * SLOTS_PER_LABEL, name="disp_sockets"))
            made.append(sockets)
            labels = Map.create(MapSpec(MapType.HASH, key_size=LABEL_SIZE, value_size=4, max_entries=max_labels,
                                        name="disp_labels"))
            made.append(labels)
            metrics = Map.create(MapSpec(MapType.PERCPU_ARRAY, key_size=4, value_size=ctypes.sizeof(DispatchMetrics),
                                         max_entries=max_labels, name="disp_metrics"))
            made.append(metrics)
            with sk_lookup_dispatch(bindings, sockets, metrics) as prog:
                link = prog.attach_netns(netns)
            made.append(link)
            make_pin_dir(where)
            for name, obj in zip(("bindings", "sockets", "labels", "metrics", "link"), made):
                obj.pin(where / name)
        except BaseException:
            for obj in made:
                obj.close()
            _unpin(where)
            raise
        return cls(where, link, bindings, sockets, labels, metrics)

    @classmethod
    def open(cls, netns: str | os.PathLike[str] | int | None = None, pin_dir: str | os.PathLike[str] | None = None) -> Dispatcher:
        """Open the dispatcher pinned under ``pin_dir`` (default: the one of ``netns``)."""
        where = Path(pin_dir) if pin_dir is not None else default_pin_dir(netns)
        if not (where / "link").exists():
            raise FileNotFoundError(f"no dispatcher is loaded at {where} (pybpf dispatch load)")
        opened: list[Any] = []
        try:
            opened.append(Link.from_pin(where / "link"))
            opened.append(Map.from_pin(where / "bindings", owner_only=True))
            opened.append(cast(SockMap, SockMap.from_pin(where / "sockets", owner_only=True)))
            opened.append(Map.from_pin(where / "labels", owner_only=True))
            opened.append(Map.from_pin(where / "metrics", owner_only=True))
        except BaseException:
            for obj in opened:
                obj.close()
            raise
        link, bindings, sockets, labels, metrics = opened
        return cls(where, link, bindings, sockets, labels, metrics)

    def upgrade(self) -> None:
        """Load the program again and swap it in under the link (``BPF_LINK_UPDATE``): a new
        pybpf's program, with no moment without one."""
        with sk_lookup_dispatch(self.bindings, self.sockets, self.metrics) as prog:
            self.link.update(prog)

    def unload(self) -> None:
        """Remove the pins: the link goes (the namespace's lookups are the kernel's own again),
        and the maps and sockets with the last user."""
        self.close()
        _unpin(self.pin_dir)

    def close(self) -> None:
        """Let go of the fds (the pins keep everything)."""
        for obj in (self.link, self.bindings, self.sockets, self.labels, self.metrics):
            obj.close()

    def __enter__(self) -> Dispatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- labels ------------------------------------------------------------------------------

    def _labels(self) -> dict[str, int]:
        return {bytes(k)[:LABEL_SIZE].split(b"\0", 1)[0].decode(): int.from_bytes(v, "little")
                for k, v in self.labels.items()}

    def _label_id(self, label: str, create: bool) -> int | None:
        key = bytes(_label_key(label))
        found = self.labels.get(key)
        if found is not None:
            return int.from_bytes(found, "little")
        if not create:
            return None
        used = set(self._labels().values())
        for candidate in range(1, self.sockets.max_entries // SLOTS_PER_LABEL):
            if candidate not in used:
                self.metrics[candidate] = [bytes(ctypes.sizeof(DispatchMetrics))] * len(self.metrics[candidate])
                self.labels[key] = candidate.to_bytes(4, "little")
                return candidate
        raise ValueError(f"no room for label {label!r}: all {self.sockets.max_entries // SLOTS_PER_LABEL - 1} labels are taken")

    def _name_of(self) -> dict[int, str]:
        return {number: name for name, number in self._labels().items()}

    # ---- verbs -------------------------------------------------------------------------------

    def bind(self, label: str, protocol: str, prefix: Any, port: Any) -> Binding:
        """Send ``protocol`` traffic to ``prefix`` on ``port`` (0: every port) to ``label``."""
        key = binding_key(protocol, prefix, port)
        number = self._label_id(label, create=True)
        assert number is not None
        self.bindings[bytes(key)] = number.to_bytes(4, "little")
        return _binding_of(key, label)

    def unbind(self, label: str, protocol: str, prefix: Any, port: Any) -> None:
        """Remove a binding (KeyError if there is no such binding for ``label``)."""
        key = bytes(binding_key(protocol, prefix, port))
        number = self._label_id(label, create=False)
        current = self.bindings.get(key)
        if number is None or current is None or int.from_bytes(current, "little") != number:
            raise KeyError(f"no binding {label} {protocol} {prefix} {port}")
        del self.bindings[key]

    def bindings_list(self) -> list[Binding]:
        """Every binding, sorted by label, protocol, prefix and port."""
        names = self._name_of()
        found = []
        for key, value in self.bindings.items():
            parsed = BindingKey.from_buffer_copy(bytes(key))
            found.append(_binding_of(parsed, names.get(int.from_bytes(value, "little"), "?")))
        return sorted(found, key=lambda b: (b.label, b.protocol, b.prefix.version, b.prefix, b.port))

    def register(self, label: str, sock: socket.socket) -> Destination:
        """``sock`` (a listening TCP or a bound, unconnected UDP socket) serves ``label`` for its
        protocol and family from now on, replacing any socket before it."""
        protocol, family = _check_socket(sock)
        number = self._label_id(label, create=True)
        assert number is not None
        try:
            self.sockets[socket_slot(number, protocol, family)] = sock
        except BPFError as err:
            raise BPFError(err.errno or errno.EIO, f"register a socket for {label}",
                           message=f"the kernel refused the socket ({err.strerror})") from None
        return Destination(label, _NAMES[protocol], _FAMILIES[socket.AddressFamily(family)],
                           int(self.sockets[socket_slot(number, protocol, family)]))

    def unregister(self, label: str, protocol: str, family: str = "ipv4") -> None:
        """Remove the socket serving ``label`` for ``protocol`` and ``family`` ("ipv4"/"ipv6")."""
        number = self._label_id(label, create=False)
        families = {v: k for k, v in _FAMILIES.items()}
        if number is None or family not in families:
            raise KeyError(f"no socket registered for {label} {protocol} {family}")
        try:
            del self.sockets[socket_slot(number, _protocol(protocol), families[family])]
        except (KeyError, BPFError):
            raise KeyError(f"no socket registered for {label} {protocol} {family}") from None

    def register_pid(self, pid: int, label: str, protocol: str, address: str, port: Any) -> Destination:
        """Register the socket of process ``pid`` that is bound to ``address``:``port`` (listening,
        for TCP), taken with ``pidfd_getfd`` (needs ptrace access to the process)."""
        number, port = _protocol(protocol), _port(port)
        wanted = ipaddress.ip_address(address)
        pidfd = pidfd_open(pid)
        try:
            for fd in _socket_fds(pid):
                try:
                    dup = pidfd_getfd(pidfd, fd)
                except OSError:
                    continue
                sock = socket.socket(fileno=dup)
                with sock:
                    if _matches(sock, number, wanted, port):
                        return self.register(label, sock)
        finally:
            os.close(pidfd)
        raise LookupError(f"process {pid} has no {protocol} socket bound to {address} port {port}"
                          + (" that is listening" if number == socket.IPPROTO_TCP else ""))

    def destinations(self) -> list[Destination]:
        """Every registered socket, by label."""
        found = []
        for name, number in sorted(self._labels().items()):
            for protocol in (socket.IPPROTO_TCP, socket.IPPROTO_UDP):
                for family in _FAMILIES:
                    cookie = self.sockets.get(socket_slot(number, protocol, family))
                    if cookie is not None:
                        found.append(Destination(name, _NAMES[protocol], _FAMILIES[family], int(cookie)))
        return found

    def metrics_list(self) -> list[Metrics]:
        """Lookups, misses and errors per label, summed over the CPUs."""
        found = []
        for name, number in sorted(self._labels().items()):
            totals = [0, 0, 0]
            for per_cpu in self.metrics[number]:
                counters = DispatchMetrics.from_buffer_copy(bytes(per_cpu))
                totals = [totals[0] + counters.lookups, totals[1] + counters.misses, totals[2] + counters.errors]
            found.append(Metrics(name, *totals))
        return found


def _socket_fds(pid: int) -> list[int]:
    fds = []
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        raise ProcessLookupError(f"no process {pid}") from None
    for name in names[:MAX_FDS_SEARCHED]:
        try:
            if os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:"):
                fds.append(int(name))
        except OSError:
            continue
    return sorted(fds)


def _matches(sock: socket.socket, protocol: int, address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> bool:
    try:
        kind = sock.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
        if sock.family not in _FAMILIES:
            return False
        local = sock.getsockname()
    except OSError:
        return False
    if (kind == socket.SOCK_STREAM) != (protocol == socket.IPPROTO_TCP) or kind not in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        return False
    if protocol == socket.IPPROTO_TCP and not sock.getsockopt(socket.SOL_SOCKET, SO_ACCEPTCONN):
        return False
    bound = ipaddress.ip_address(local[0].split("%", 1)[0])
    return local[1] == port and (bound == address or getattr(bound, "ipv4_mapped", None) == address)


def _unpin(where: Path) -> None:
    """Remove the dispatcher's pins and its directory (what is missing is skipped)."""
    for name in _PINS:
        try:
            if stat.S_ISLNK(os.lstat(where / name).st_mode):
                raise PermissionError(f"refusing to follow a symlink at {where / name}")
            os.unlink(where / name)
        except FileNotFoundError:
            pass
    try:
        os.rmdir(where)
    except FileNotFoundError:
        pass
    except OSError as err:
        if err.errno != errno.ENOTEMPTY:
            raise
