"""cgroup v2 for tests, examples and benchmarks: a child cgroup with a unique name (never the root),
processes and sockets made inside it, everything removed afterwards."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence

from .._sys.cgroupfs import cgroup2_root

SCM_MAX_FD = 253
"""The most fds one SCM_RIGHTS message carries (so at most this many sockets per ``sockets_in``)."""


@contextlib.contextmanager
def child_cgroup(prefix: str = "pybpf-test") -> Iterator[str]:
    """A new cgroup under the cgroup v2 mount, named ``<prefix>-<uuid>``; its processes are
    killed and the cgroup removed on exit."""
    path = os.path.join(cgroup2_root(), f"{prefix}-{uuid.uuid4().hex[:12]}")
    os.mkdir(path)
    try:
        yield path
    finally:
        remove_cgroup(path)


def remove_cgroup(path: str, timeout: float = 10.0) -> None:
    """Kill what runs in ``path`` (a cgroup this test made) and remove it, children first."""
    for entry in sorted((e.path for e in os.scandir(path) if e.is_dir(follow_symlinks=False)), reverse=True):
        remove_cgroup(entry, timeout)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(os.path.join(path, "cgroup.kill"), "w") as f:
                f.write("1")
        except OSError:
            for pid in _pids(path):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _pids(path: str) -> list[int]:
    with open(os.path.join(path, "cgroup.procs")) as f:
        return [int(line) for line in f if line.strip()]


def enter(cgroup: str, pid: int = 0) -> None:
    """Move process ``pid`` (0: the caller) into ``cgroup``."""
    with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
        f.write(str(pid or os.getpid()))


def sockets_in(cgroup: str, make: Callable[[], Sequence[socket.socket]], timeout: float = 10.0) -> list[socket.socket]:
    """Sockets created by ``make`` in a child process that lives in ``cgroup`` (so the kernel
    charges them to it, and cgroup programs run for them), handed back over SCM_RIGHTS."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            parent.close()
            enter(cgroup)
            made = list(make())
            socket.send_fds(child, [b"%d" % len(made)], [s.fileno() for s in made])
            code = 0
        finally:
            os._exit(code)
    child.close()
    try:
        parent.settimeout(timeout)
        data, fds, _, _ = socket.recv_fds(parent, 64, SCM_MAX_FD)
    finally:
        parent.close()
        os.waitpid(pid, 0)
    if not data:
        raise RuntimeError("the child in the cgroup made no sockets")
    return [socket.socket(fileno=fd) for fd in fds]


def spawn_in(cgroup: str, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
    """Start ``argv`` as a process inside ``cgroup`` (it moves itself there before exec)."""
    procs = os.path.join(cgroup, "cgroup.procs")
    script = 'echo $$ > "$0" && exec "$@"'
    return subprocess.Popen(["sh", "-c", script, procs, *argv], **kwargs)  # type: ignore[call-overload,no-any-return]
