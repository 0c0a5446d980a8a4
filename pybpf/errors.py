"""The exception hierarchy: every kernel failure is a typed ``BPFError`` (an ``OSError``).

Each error names the operation and the object, keeps the kernel's errno, and carries a hint
when the cause is known. Input that is wrong before any syscall raises ``ValueError`` or
``TypeError`` instead.
"""

from __future__ import annotations

import errno as _errno
import os
from typing import Any

ENOTSUPP = 524
"""The kernel-internal "operation not supported" errno; Python's ``errno`` module has no name."""

_HINTS = {
    ENOTSUPP: "the kernel does not support this operation for this object",
    _errno.EOPNOTSUPP: "the kernel does not support this operation for this object",
}


def permission_hint() -> str:
    """Why the kernel said EPERM/EACCES, as far as the process can tell: a missing capability (only
    when it is missing), RLIMIT_MEMLOCK on old kernels, or a refusal capabilities cannot lift."""
    from ._sys import caps, rlimit

    if not caps.can_bpf():
        return "needs CAP_BPF (plus CAP_NET_ADMIN for networking programs, CAP_PERFMON for tracing), or CAP_SYS_ADMIN"
    if refused := rlimit.refusal():
        return refused
    have = ", ".join(caps.names())
    return (f"the process has {have}: the kernel refused it for another reason "
            "(its configuration, a security module or lockdown, or this object's own rules)")


def strerror(code: int) -> str:
    """``os.strerror`` that also names ENOTSUPP (524)."""
    if code == ENOTSUPP:
        return "Operation not supported (ENOTSUPP)"
    return os.strerror(code)


class BPFError(OSError):
    """A failed ``bpf(2)`` (or related) call: ``errno``, ``op``, ``name`` and an optional ``hint``.

    ``done`` is set by batch operations: how many elements were processed before the failure.
    """

    errno: int
    """The kernel's errno (always set for these errors)."""
    done: int | None = None

    def __init__(self, code: int, op: str, name: str = "", *, message: str = "", hint: str = "") -> None:
        self.op = op
        self.name = name
        if not hint:
            hint = permission_hint() if code in (_errno.EPERM, _errno.EACCES) else _HINTS.get(code, "")
        self.hint = hint
        what = f"{op} {name!r}" if name else op
        text = f"{what}: {message or strerror(code)}"
        if self.hint:
            text += f" (hint: {self.hint})"
        super().__init__(code, text)

    def __reduce__(self) -> tuple[Any, ...]:  # keep pickling (multiprocessing) working with our signature
        return (_rebuild, (type(self), self.errno, self.op, self.name, self.strerror, self.hint))

    def __str__(self) -> str:
        return f"[Errno {self.errno}] {self.strerror}"


def _rebuild(cls: type[BPFError], code: int, op: str, name: str, text: str, hint: str) -> BPFError:
    err = cls.__new__(cls)
    OSError.__init__(err, code, text)
    err.op, err.name, err.hint = op, name, hint
    return err


class KeyNotFoundError(BPFError, KeyError):
    """The key is not in the map (ENOENT on a lookup, delete or update with EXIST)."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return BPFError.__str__(self)


class IndexOutOfRangeError(BPFError, IndexError):
    """The index is past ``max_entries`` of an array-like map (E2BIG on ARRAY, SOCKMAP, XSKMAP, ...)."""


class KeyExistsError(BPFError):
    """The key is already in the map and ``UpdateFlags.NOEXIST`` was given (EEXIST)."""


class MapFullError(BPFError):
    """The map has no room for another element (E2BIG on a hash-like map)."""


class PermissionDeniedError(BPFError, PermissionError):
    """The process lacks a capability (EPERM/EACCES) or the object is read/write-only."""


class NotSupportedError(BPFError):
    """The kernel, or this map or program type, lacks the feature or the operation."""


class _LoggedError(BPFError):
    """A kernel refusal that comes with the kernel's own explanation in ``log``."""

    refused = "the kernel refused it"
    log_hint = "the kernel's log in .log says why"

    def __init__(self, code: int, op: str, name: str = "", *, log: str = "", message: str = "", hint: str = "") -> None:
        self.log = log
        super().__init__(code, op, name, message=message or f"{self.refused}: {_log_tail(log)}", hint=hint or self.log_hint)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_logged, (type(self), self.errno, self.op, self.name, self.strerror, self.hint, self.log))


def _rebuild_logged(cls: type[BPFError], code: int, op: str, name: str, text: str, hint: str, log: str) -> BPFError:
    err = _rebuild(cls, code, op, name, text, hint)
    err.log = log  # type: ignore[attr-defined]
    return err


class VerifierError(_LoggedError):
    """The verifier refused a program; ``log`` holds its text."""

    refused = "verifier rejected the program"
    log_hint = "the verifier's log in .log shows the path that failed"


class BTFLoadError(_LoggedError):
    """The kernel refused a BTF blob (``BPF_BTF_LOAD``); ``log`` holds the kernel's BTF log."""

    refused = "the kernel refused the BTF"


def _log_tail(log: str, lines: int = 2) -> str:
    """The last lines of a kernel log before its statistics: where the kernel stopped and why."""
    kept = [line.strip() for line in log.splitlines() if line.strip() and not line.startswith(("processed ", "verification time"))]
    return " | ".join(kept[-lines:]) if kept else "(empty log)"


_BY_ERRNO: dict[int, type[BPFError]] = {
    _errno.EPERM: PermissionDeniedError,
    _errno.EACCES: PermissionDeniedError,
    _errno.EOPNOTSUPP: NotSupportedError,
    ENOTSUPP: NotSupportedError,
}


def error_for(code: int, op: str, name: str = "", *, message: str = "", hint: str = "") -> BPFError:
    """The typed error for an errno that has the same meaning for every object."""
    return _BY_ERRNO.get(code, BPFError)(code, op, name, message=message, hint=hint)


class BTFError(ValueError):
    """BTF data that is malformed, truncated or inconsistent; the message says what and where."""


class ELFError(ValueError):
    """A malformed, truncated or unsupported BPF object file; the message names the file and the part."""
