"""Socket-to-socket acceleration of local TCP connections in a cgroup.

A SOCK_OPS program (``sockops_insert``) attached to the cgroup puts every TCP connection of its
processes into a SOCKHASH when it becomes established; an SK_MSG program (``sk_msg_to_peer``)
on that SOCKHASH puts what a socket writes straight into its peer's receive queue, so bytes
between two local processes skip TCP/IP. What the kernel does on the way, measured, and why the
app is built as it is: docs/accelerate.md. In short:

- connections established before ``start`` are left alone (they are not in the map);
- ``detach`` stops new connections from being accelerated; accelerated ones keep their maps
  until they close, because the kernel frees the bytes a peer has not read yet when a socket
  leaves the map (measured: they are gone, and later bytes come through TCP after the gap);
- a keeper process (forked at ``start``) holds the maps if this process is killed, until the
  last accelerated connection closes, then exits: nothing is left in the kernel, and no live
  connection loses a byte. The SOCK_OPS link belongs to this process only, so a kill stops
  acceleration of new connections at once.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import select
import signal
import time
from typing import Any, cast

from pybpf import programs
from pybpf._sys.constants import AttachType
from pybpf.map import SockHash
from pybpf.programs import Link, Program
from pybpf.programs.ready_sockets import SockTuple

DEFAULT_MAX_CONNECTIONS = 65536


@dataclasses.dataclass(frozen=True)
class Status:
    """What the accelerator holds: sockets in the map (two per local connection), attached or not."""

    sockets: int
    attached: bool
    keeper_pid: int | None


class Accelerator:
    """Accelerates local TCP connections of the processes in ``cgroup`` (a cgroup v2 path or fd).

    ``start()`` attaches (a context manager does it, and on exit leaves live connections to the
    keeper); ``detach()`` stops accelerating new connections; ``close(timeout)`` waits for the
    accelerated ones to end (their bytes live in the maps), then frees everything.
    ``loopback_only`` (default) accelerates only connections whose both ends are loopback
    addresses.
    """

    def __init__(self, cgroup: str | os.PathLike[str] | int, *, loopback_only: bool = True,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS, keeper: bool = True) -> None:
        """Describe the acceleration; nothing reaches the kernel before ``start()``."""
        if isinstance(max_connections, bool) or not isinstance(max_connections, int) or not 1 <= max_connections <= 1 << 24:
            raise ValueError(f"max_connections must be an int in 1..{1 << 24}, not {max_connections!r}")
        self.cgroup = cgroup
        self.loopback_only = loopback_only
        self.max_connections = max_connections
        self.keeper = keeper
        self.sockets: SockHash | None = None
        self._sk_msg: Program | None = None
        self._sockops: Program | None = None
        self._link: Link | None = None
        self._keeper_pid: int | None = None
        self._keeper_fd: int | None = None
        self._handover: int | None = None

    def start(self) -> Accelerator:
        """Make the maps and programs and attach them: the SK_MSG program to the SOCKHASH first,
        then the SOCK_OPS program to the cgroup (a link)."""
        if self.sockets is not None:
            raise RuntimeError("the accelerator is already started")
        try:
            sockets = self.sockets = cast(SockHash, SockHash.create(2 * self.max_connections, key_size=ctypes.sizeof(SockTuple)))
            sk_msg = self._sk_msg = programs.sk_msg_to_peer(sockets)
            sk_msg.attach(sockets, AttachType.SK_MSG_VERDICT)
            self._sockops = programs.sockops_insert(sockets, loopback_only=self.loopback_only)
            if self.keeper:
                self._keeper_pid, self._keeper_fd, self._handover = _fork_keeper(sockets, sk_msg)
            self._link = self._sockops.attach_cgroup(self.cgroup, AttachType.CGROUP_SOCK_OPS)
        except BaseException:
            self._release()
            raise
        return self

    @property
    def attached(self) -> bool:
        """Whether new connections are being accelerated."""
        return self._link is not None and not self._link.closed

    def status(self) -> Status:
        """How many sockets are accelerated now, and whether new ones will be."""
        count = sum(1 for _ in self.sockets.keys()) if self.sockets is not None else 0
        return Status(count, self.attached, self._keeper_pid)

    def detach(self) -> None:
        """Stop accelerating new connections; accelerated ones go on until they close."""
        if self._link is not None:
            self._link.close()
            self._link = None

    def drained(self) -> bool:
        """Whether no accelerated connection is left."""
        return self.sockets is None or next(iter(self.sockets.keys()), None) is None

    def close(self, timeout: float | None = None, poll: float = 0.05) -> bool:
        """Detach, wait up to ``timeout`` seconds (None: no limit) for the accelerated connections
        to close, then free the maps and programs; True if none was left. Past the timeout the
        maps stay with the keeper process (if there is one) until the connections end."""
        self.detach()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.drained():
            if deadline is not None and time.monotonic() >= deadline:
                break
            time.sleep(poll)
        drained = self.drained()
        self._release(handover=not drained)
        return drained

    def _release(self, handover: bool = False) -> None:
        """Close what this process holds; the keeper either goes (nothing to keep) or, with
        ``handover``, keeps the maps until the accelerated connections end."""
        for owned in (self._link, self._sockops, self._sk_msg, self.sockets):
            if owned is not None:
                owned.close()
        self._link = self._sockops = self._sk_msg = None
        self.sockets = None
        if self._handover is not None:
            with contextlib.suppress(OSError):
                if handover:
                    os.write(self._handover, b"k")
            os.close(self._handover)
            self._handover = None
        if self._keeper_fd is not None:
            if not handover:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(self._keeper_fd, signal.SIGKILL)
            os.close(self._keeper_fd)
            self._keeper_fd = None

    def __enter__(self) -> Accelerator:
        return self.start() if self.sockets is None else self

    def __exit__(self, *exc: object) -> None:
        """Detach; connections still accelerated are left to the keeper (without one: waited for)."""
        self.close(timeout=0 if self.keeper else None)


def _fork_keeper(sockets: SockHash, sk_msg: Program) -> tuple[int, int, int]:
    """Start a process (double-forked: nobody has to reap it) that keeps ``sockets`` and the
    program attached to it alive once this process dies or hands over, until the map is empty.
    Returns its pid, a pidfd for it, and the write end of the hand-over pipe."""
    pidfd = os.pidfd_open(os.getpid())
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    pid_read, pid_write = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the intermediate child and the keeper
        try:
            keeper = os.fork()
            if keeper:
                os.write(pid_write, keeper.to_bytes(4, "little"))
            else:
                _become_keeper(sockets, sk_msg, pidfd, read_end)
        finally:
            os._exit(0)
    os.close(pidfd)
    os.close(read_end)
    os.close(pid_write)
    try:
        os.waitpid(pid, 0)
        data = os.read(pid_read, 4)
    finally:
        os.close(pid_read)
    if len(data) != 4:
        os.close(write_end)
        raise OSError("could not start the keeper process")
    keeper = int.from_bytes(data, "little")
    return keeper, os.pidfd_open(keeper), write_end


def _become_keeper(sockets: SockHash, sk_msg: Program, pidfd: int, handover: int) -> None:  # pragma: no cover
    """In the keeper: close every other fd, leave the session, wait."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)  # a pipe held open by the keeper would keep its reader waiting
    start = 3
    for fd in sorted({pidfd, handover, sockets.fd, sk_msg.fd}):
        os.closerange(start, fd)
        start = fd + 1
    os.closerange(start, 65536)
    with contextlib.suppress(OSError):
        os.setsid()
    _keep(sockets, pidfd, handover)


def _keep(sockets: SockHash, pidfd: int, handover: int, poll: float = 0.2) -> None:
    """Wait for the parent to end or hand over, then for the map to empty."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    poller.register(handover, select.POLLIN)
    while not poller.poll(None):
        pass
    while next(iter(sockets.keys()), None) is not None:
        time.sleep(poll)


def run(cgroup: str, *, loopback_only: bool = True, max_connections: int = DEFAULT_MAX_CONNECTIONS,
        report: Any = print, interval: float = 5.0) -> int:
    """The ``pybpf accelerate`` loop: attach, report the number of accelerated sockets every
    ``interval`` seconds until SIGINT/SIGTERM, then detach and wait for the accelerated
    connections to end (a second signal leaves them to the keeper process and returns)."""
    stop = {"count": 0}

    def on_signal(signum: int, frame: object) -> None:
        stop["count"] += 1
        if stop["count"] > 1:
            raise KeyboardInterrupt

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    accel = Accelerator(cgroup, loopback_only=loopback_only, max_connections=max_connections).start()
    try:
        report(f"accelerating local TCP connections in {cgroup} (keeper pid {accel.status().keeper_pid}); Ctrl-C to stop")
        last = -1
        while not stop["count"]:
            now = accel.status().sockets
            if now != last:
                report(f"{now // 2} accelerated connections ({now} sockets)")
                last = now
            _sleep_until(stop, interval)
        accel.detach()
        left = accel.status().sockets
        if left:
            report(f"detached: no new connection is accelerated; waiting for {left // 2} accelerated connections "
                   "to close (Ctrl-C again leaves them to the keeper process)")
        try:
            accel.close()
        except KeyboardInterrupt:
            report(f"left {accel.status().sockets // 2} accelerated connections to keeper pid {accel.status().keeper_pid}")
            accel.close(timeout=0)
        return 0
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if accel.sockets is not None:
            accel.close(timeout=0)


def _sleep_until(stop: dict[str, int], interval: float) -> None:
    deadline = time.monotonic() + interval
    while not stop["count"] and time.monotonic() < deadline:
        time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
