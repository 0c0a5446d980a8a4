"""SO_REUSEPORT steering and zero-downtime restart over a REUSEPORT_SOCKARRAY.

Steering: ``reuseport_group`` builds a group of sockets on one address; ``Steering`` holds the
sockets in a ``ReuseportSockArray``, attaches ``pybpf.programs.reuseport_select`` to the group and
moves all new traffic with one update of its one-entry control map (``select``). An empty selected
slot falls back to the kernel's default (hash) selection.

Restart: ``Generation`` hands a listening address from one server process to the next. The maps
are pinned in ``<pin_root>/<name>/`` (``sockets``, ``control``, ``generations``); the protocol:

1. Join: the new generation opens (or creates and pins) the maps, binds a SO_REUSEPORT socket to
   the same address (same uid, so the kernel admits it to the group) and listens. Traffic still
   goes where the control map says: to the old generation.
2. Attach: it attaches its own copy of the select program to the group. The program belongs to
   the group, not to a socket or process, so this is a no-op swap while the group lives and
   re-arms it when this is the first generation.
3. Claim: it inserts its socket at a free slot (``NOEXIST``, so racing generations never share one)
   and records its generation number, pid and address in ``generations``.
4. Flip (``take_over``): one update of ``control`` makes it the target of every new connection.
5. Stand by (``standby``): the old generation sees the control map pointing at another live slot
   (``replaced``) and keeps its listener in the group for a grace period, accepting what still
   reaches it. If the new generation's process exits (a pidfd) or its socket leaves the group
   (its slot empties) meanwhile, the old one steers traffic back to itself and serves again.
6. Drain: after the grace period it accepts what is queued or still in handshake until none
   arrives for ``quiet`` seconds (``drain``), then closes; the kernel empties its slot.

The group's program is ``reuseport_migrate`` where the kernel has it (5.14): a listener that
closes, in an orderly way or because its process died, hands the connections in its accept queue
to the selected listener (or, when that slot is empty, to another by hash) instead of resetting
them. Without it, handshakes begun before the flip finish on the old listener and ``quiet`` must
exceed the clients' round trip; a new generation that dies resets what its queue held.

The pin directories follow ``pybpf.pins``: every directory on the way owned by this user or root,
writable by nobody else unless sticky, no symlinks; missing ones are made 0700.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import select
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pybpf.programs
from pybpf import BPFError, KeyExistsError, Map, MapType, ReuseportSockArray, UpdateFlags
from pybpf.pins import check_pin_dir, make_pin_dir

PIN_ROOT = "/sys/fs/bpf/pybpf/reuseport"
"""Where ``Generation`` pins a group's maps by default: ``PIN_ROOT/<name>/``."""

Address = tuple[str, int]
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def parse_address(text: str) -> Address:
    """``"127.0.0.1:8080"`` or ``"[::1]:8080"`` -> ``(host, port)``."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"address {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    return host.strip("[]"), int(port)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def reuseport_socket(address: Address, kind: socket.SocketKind = socket.SOCK_STREAM, backlog: int = 4096) -> socket.socket:
    """A socket with SO_REUSEPORT bound to ``address`` (and listening, for TCP): one member of
    that address's group. The caller owns it."""
    sock = socket.socket(_family(address[0]), kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        if kind == socket.SOCK_STREAM:
            sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def reuseport_group(address: Address, count: int, kind: socket.SocketKind = socket.SOCK_STREAM, backlog: int = 4096) -> list[socket.socket]:
    """``count`` sockets in one SO_REUSEPORT group on ``address`` (port 0: the first picks it)."""
    if count < 1:
        raise ValueError(f"count must be at least 1, not {count}")
    group = [reuseport_socket(address, kind, backlog)]
    try:
        bound = group[0].getsockname()[:2]
        group += [reuseport_socket(bound, kind, backlog) for _ in range(count - 1)]
    except BaseException:
        for sock in group:
            sock.close()
        raise
    return group


def _pinned(path: Path, make: Callable[[], Map] | None, **types: Any) -> Map:
    """The map pinned at ``path``; when absent and ``make`` is given, create and pin it (a racing
    process that pins first wins, and both end up with its map)."""
    for _ in range(3):
        try:
            return Map.from_pin(path, **types)
        except BPFError as err:
            if err.errno != errno.ENOENT or make is None:
                raise
        created = make()
        try:
            created.pin(path)
            return created
        except BPFError as err:
            created.close()
            if err.errno != errno.EEXIST:
                raise
    raise BPFError(errno.EAGAIN, "open pinned map", str(path), message="pinned and unpinned concurrently; try again")


def _expect(m: Map, kind: MapType, value_size: int, path: Path) -> None:
    if m.type != kind or m.value_size != value_size:
        raise ValueError(f"{path} holds a {MapType(m.type).name} map (value size {m.value_size}), not a reuseport {path.name} map")


class Steering:
    """A SO_REUSEPORT group steered by one index: sockets in a ``ReuseportSockArray``, the selected
    slot in a one-entry ARRAY ``control``, the select program attached to the group."""

    def __init__(self, sockets: ReuseportSockArray, control: Map) -> None:
        """Take ownership of both maps (see ``create`` and ``open``)."""
        self.sockets = sockets
        self.control = control
        self._program: pybpf.programs.Program | None = None

    @classmethod
    def create(cls, slots: int = 8) -> Steering:
        """Fresh, unpinned maps with room for ``slots`` sockets."""
        sockets = ReuseportSockArray.create(slots, name="rp_sockets")
        try:
            return cls(sockets, _make_control())  # type: ignore[arg-type]
        except BaseException:
            sockets.close()
            raise

    @classmethod
    def open(cls, directory: str | os.PathLike[str], slots: int = 8, *, create: bool = True) -> Steering:
        """The maps pinned in ``directory``; with ``create``, made and pinned there when absent."""
        path = make_pin_dir(directory) if create else check_pin_dir(directory)
        with contextlib.ExitStack() as stack:
            make_sockets = (lambda: ReuseportSockArray.create(slots, name="rp_sockets")) if create else None
            sockets = stack.enter_context(_pinned(path / "sockets", make_sockets))
            _expect(sockets, MapType.REUSEPORT_SOCKARRAY, 8, path / "sockets")
            control = stack.enter_context(_pinned(path / "control", _make_control if create else None, key=ctypes.c_uint32, value=ctypes.c_uint32))
            _expect(control, MapType.ARRAY, 4, path / "control")
            stack.pop_all()
            return cls(sockets, control)  # type: ignore[arg-type]

    def pin(self, directory: str | os.PathLike[str]) -> None:
        """Pin both maps in ``directory`` (as ``sockets`` and ``control``) for ``open``; the
        directory is made 0700 when missing and must be safe (``pybpf.pins``)."""
        path = make_pin_dir(directory)
        self.sockets.pin(path / "sockets")
        self.control.pin(path / "control")

    @property
    def slots(self) -> int:
        """How many sockets the array holds (its ``max_entries``)."""
        return self.sockets.max_entries

    @property
    def program(self) -> pybpf.programs.Program:
        """The select program over these maps, loaded on first use: ``reuseport_migrate`` (a
        listener that closes hands its queued connections to the selected one instead of
        resetting them) where the kernel has it (Linux 5.14), else ``reuseport_select``."""
        if self._program is None:
            try:
                self._program = pybpf.programs.reuseport_migrate(self.sockets, self.control)
            except BPFError as err:
                if err.errno != errno.EINVAL:
                    raise
                self._program = pybpf.programs.reuseport_select(self.sockets, self.control)
        return self._program

    def attach(self, sock: socket.socket | int) -> None:
        """Attach the select program to ``sock``'s group (it stays while any member lives)."""
        self.program.attach_reuseport(sock)

    def detach(self, sock: socket.socket | int) -> None:
        """Remove the group's program: the kernel's default selection again."""
        self.program.detach_reuseport(sock)

    def add(self, slot: int, sock: socket.socket | int, *, replace: bool = True) -> None:
        """Put ``sock`` at ``slot``; without ``replace``, ``KeyExistsError`` if the slot is taken."""
        self.sockets.update(slot, sock, UpdateFlags.ANY if replace else UpdateFlags.NOEXIST)

    def remove(self, slot: int) -> None:
        """Empty ``slot`` (``KeyNotFoundError`` if it is empty)."""
        del self.sockets[slot]

    def cookie(self, slot: int) -> int | None:
        """The cookie of the socket at ``slot``, or None when the slot is empty."""
        cookie = self.sockets.get(slot)
        return None if cookie is None else int(cookie)

    def occupied(self) -> dict[int, int]:
        """``{slot: cookie}`` of every filled slot."""
        return {slot: cookie for slot in range(self.slots) if (cookie := self.cookie(slot)) is not None}

    @property
    def selected(self) -> int:
        """The slot new traffic goes to."""
        return int(self.control[0])

    def select(self, slot: int) -> None:
        """Send all new traffic to ``slot``: one map update (an empty slot means default selection)."""
        if not 0 <= slot < self.slots:
            raise ValueError(f"slot {slot} is out of range (the array has {self.slots})")
        self.control[0] = slot

    def close(self) -> None:
        """Close the program and the maps (an attached program and pinned maps live on)."""
        if self._program is not None:
            self._program.close()
        self.control.close()
        self.sockets.close()

    def __enter__(self) -> Steering:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _make_control() -> Map:
    return Map.create(type=MapType.ARRAY, key=ctypes.c_uint32, value=ctypes.c_uint32, max_entries=1, name="rp_control")


class _Record(ctypes.Structure):
    """Who holds a slot: generation number, pid and bound address (``generations`` values)."""

    _fields_ = [
        ("generation", ctypes.c_uint64),
        ("pid", ctypes.c_uint32),
        ("port", ctypes.c_uint16),
        ("family", ctypes.c_uint16),
        ("addr", ctypes.c_uint8 * 16),
    ]

    def address(self) -> Address:
        size = 4 if self.family == socket.AF_INET else 16
        return socket.inet_ntop(self.family, bytes(self.addr)[:size]), self.port


def _record(number: int, sock: socket.socket) -> _Record:
    host, port = sock.getsockname()[:2]
    packed = socket.inet_pton(sock.family, host)
    return _Record(number, os.getpid(), port, sock.family, (ctypes.c_uint8 * 16)(*packed))


def group_directory(name: str, pin_root: str | os.PathLike[str] = PIN_ROOT) -> Path:
    """Where the group ``name`` is pinned."""
    if not _NAME.match(name) or name in (".", ".."):
        raise ValueError(f"group name {name!r}: use letters, digits, '_', '.' and '-'")
    return Path(pin_root) / name


@dataclass(frozen=True)
class SlotStatus:
    """One slot: the socket's cookie (None: empty) and the last generation recorded there."""

    slot: int
    cookie: int | None
    generation: int
    pid: int
    address: str


@dataclass(frozen=True)
class GroupStatus:
    """A pinned group: its directory, the selected slot and every slot."""

    directory: str
    selected: int
    slots: tuple[SlotStatus, ...]


class Generation:
    """One server generation of a pinned reuseport group: ``join``, ``take_over``, serve
    ``connections`` until ``replaced``, ``drain``, ``close``. See the module docstring."""

    def __init__(self, steering: Steering, records: Map, sock: socket.socket, slot: int, number: int) -> None:
        """Take ownership of the maps and the socket (see ``join``)."""
        self.steering = steering
        self.records = records
        self.sock = sock
        self.slot = slot
        self.number = number
        self.took_back = False

    @classmethod
    def join(cls, address: Address, name: str = "default", *, pin_root: str | os.PathLike[str] = PIN_ROOT,
             kind: socket.SocketKind = socket.SOCK_STREAM, backlog: int = 4096, slots: int = 8) -> Generation:
        """Join the group ``name`` on ``address`` and claim a free slot; traffic moves only at ``take_over``."""
        directory = group_directory(name, pin_root)
        with contextlib.ExitStack() as stack:
            steering = stack.enter_context(Steering.open(directory, slots))
            records = stack.enter_context(_pinned(directory / "generations", lambda: _make_records(steering.slots),
                                                  key=ctypes.c_uint32, value=_Record))
            sock = stack.enter_context(reuseport_socket(address, kind, backlog))
            _check_address(steering, records, sock, name)
            steering.attach(sock)
            slot = _claim(steering, sock)
            number = 1 + max(record.generation for record in records.values())
            records[slot] = _record(number, sock)
            stack.pop_all()
            return cls(steering, records, sock, slot, number)

    @property
    def address(self) -> Address:
        """The address this generation's socket is bound to."""
        host, port = self.sock.getsockname()[:2]
        return str(host), int(port)

    def take_over(self) -> int:
        """Steer every new connection to this generation; returns the slot steered before."""
        previous = self.steering.selected
        self.steering.select(self.slot)
        return previous

    @property
    def replaced(self) -> bool:
        """Whether the control map steers to another generation's live socket."""
        selected = self.steering.selected
        return selected != self.slot and self.steering.cookie(selected) is not None

    def connections(self, stop: Callable[[], bool] = lambda: False, poll: float = 0.05) -> Iterator[socket.socket]:
        """Accept connections until this generation is ``replaced`` (or ``stop()`` is true); the
        caller owns each one. The listener stays open: ``drain`` next."""
        self.sock.settimeout(poll)
        while not (self.replaced or stop()):
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            yield conn

    def successor(self) -> tuple[int, int | None, int]:
        """Who holds traffic now: ``(selected slot, its socket's cookie or None, the pid recorded
        there or 0)``."""
        slot = self.steering.selected
        record = self.records.get(slot)
        return slot, self.steering.cookie(slot), record.pid if record is not None and record.generation else 0

    def standby(self, grace: float = 5.0, poll: float = 0.05) -> Iterator[socket.socket]:
        """After being ``replaced``: keep the listener in the group for ``grace`` seconds, accepting
        whatever still reaches it (the caller owns each connection), and watch the successor. If
        its process exits (a pidfd says so) or its socket leaves the group (its slot empties)
        before the grace ends, steer traffic back here (``took_back`` becomes True) and stop; the
        caller serves ``connections`` again. A generation that replaces the successor meanwhile is
        watched in its turn. Without a failure, return after ``grace``: ``drain`` and ``close``."""
        self.took_back = False
        deadline = time.monotonic() + grace
        watched: tuple[int, int | None, int] | None = None
        pidfd = -1
        try:
            while True:
                slot, cookie, pid = self.successor()
                if slot == self.slot:  # traffic came back by itself (a flip)
                    self.took_back = True
                    return
                if cookie is None:  # the successor's socket left the group
                    self.take_over()
                    self.took_back = True
                    return
                if watched != (slot, cookie, pid):
                    if pidfd >= 0:
                        os.close(pidfd)
                    pidfd = _pidfd(pid)
                    watched = (slot, cookie, pid)
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                ready = select.select([self.sock] + ([pidfd] if pidfd >= 0 else []), [], [], min(poll, left))[0]
                if pidfd in ready:  # the successor's process ended: its socket is gone or going
                    self.take_over()
                    self.took_back = True
                    return
                if self.sock in ready:
                    try:
                        conn, _ = self.sock.accept()
                    except (BlockingIOError, TimeoutError):
                        continue
                    yield conn
        finally:
            if pidfd >= 0:
                os.close(pidfd)

    def drain(self, quiet: float = 0.2, timeout: float = 30.0) -> Iterator[socket.socket]:
        """Accept what is queued or still in handshake, until none comes for ``quiet`` seconds
        (at most ``timeout``); then ``close`` loses nothing."""
        self.sock.settimeout(quiet)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                return
            yield conn

    def close(self) -> None:
        """Close the socket (the kernel empties its slot) and the maps; the pins stay."""
        self.sock.close()
        self.records.close()
        self.steering.close()

    def __enter__(self) -> Generation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pidfd(pid: int) -> int:
    """A pidfd of ``pid`` (readable once it exits), or -1 when there is none to watch."""
    if pid <= 0:
        return -1
    try:
        return os.pidfd_open(pid)
    except (ProcessLookupError, PermissionError, OSError):
        return -1


def _make_records(slots: int) -> Map:
    return Map.create(type=MapType.ARRAY, key=ctypes.c_uint32, value=_Record, max_entries=slots, name="rp_generations")


def _check_address(steering: Steering, records: Map, sock: socket.socket, name: str) -> None:
    """Refuse to join when the live generation serves another address (another group)."""
    ours = sock.getsockname()[:2]
    for slot in steering.occupied():
        record = records[slot]
        theirs = record.address() if record.generation else ours
        if theirs != ours:
            raise ValueError(f"group {name!r} serves {theirs[0]}:{theirs[1]}; cannot add a socket bound to {ours[0]}:{ours[1]}")


def _claim(steering: Steering, sock: socket.socket) -> int:
    """Insert ``sock`` at the first free slot after the selected one (never the selected one while filled)."""
    start = steering.selected + 1
    for offset in range(steering.slots):
        slot = (start + offset) % steering.slots
        try:
            steering.add(slot, sock, replace=False)
            return slot
        except KeyExistsError:
            continue
    raise BPFError(errno.ENOSPC, "join reuseport group", message=f"all {steering.slots} slots hold live sockets")


def status(name: str, pin_root: str | os.PathLike[str] = PIN_ROOT) -> GroupStatus:
    """What the pinned group ``name`` holds now."""
    directory = group_directory(name, pin_root)
    if not directory.is_dir():
        raise FileNotFoundError(errno.ENOENT, f"no reuseport group {name!r} pinned", str(directory))
    with Steering.open(directory, create=False) as steering, contextlib.ExitStack() as stack:
        records: dict[int, _Record] = {}
        if (directory / "generations").exists():
            records = dict(stack.enter_context(_pinned(directory / "generations", None, key=ctypes.c_uint32, value=_Record)).items())
        slots = []
        for slot in range(steering.slots):
            record = records.get(slot, _Record())
            address = "{}:{}".format(*record.address()) if record.generation else ""
            slots.append(SlotStatus(slot, steering.cookie(slot), record.generation, record.pid, address))
        return GroupStatus(str(directory), steering.selected, tuple(slots))


def flip(name: str, slot: int, pin_root: str | os.PathLike[str] = PIN_ROOT, *, force: bool = False) -> int:
    """Steer the pinned group ``name`` to ``slot``; returns the slot steered before. An empty slot
    is refused unless ``force`` (it means: the kernel's default selection)."""
    with Steering.open(group_directory(name, pin_root), create=False) as steering:
        if not force and steering.cookie(slot) is None:
            raise ValueError(f"slot {slot} of group {name!r} is empty; forcing it means the kernel's default selection")
        previous = steering.selected
        steering.select(slot)
        return previous


def unpin(name: str, pin_root: str | os.PathLike[str] = PIN_ROOT) -> bool:
    """Remove the pins of group ``name`` (live sockets and an attached program are unaffected);
    returns whether there was anything to remove."""
    directory = group_directory(name, pin_root)
    if not directory.is_dir():
        return False
    check_pin_dir(directory)  # never unlink in a directory another user controls
    for pin in ("sockets", "control", "generations"):
        with contextlib.suppress(FileNotFoundError):
            (directory / pin).unlink()
    directory.rmdir()
    return True
