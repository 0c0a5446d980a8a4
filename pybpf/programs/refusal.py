"""Kernel refusals of an attachment, in words: the program type an attach type takes, the release
that brought it, the capability that is missing."""

from __future__ import annotations

import errno
from typing import Any, TypeVar

from .._sys import caps
from .._sys.constants import AttachType
from .._sys.kernel import kernel_version, release_text
from .._sys.traits import ATTACH_TYPES, program_type_name
from ..errors import BPFError, NotSupportedError, PermissionDeniedError, error_for

E = TypeVar("E", bound=BPFError)


def type_name(value: Any) -> str:
    """A program or attach type's name, or its number when this library does not know it."""
    return str(getattr(value, "name", value))


def this_release() -> str:
    """``"6.1"``: the running kernel's release."""
    return release_text(kernel_version())


def known(code: int, where: str, message: str, cls: type[E] = BPFError) -> E:  # type: ignore[assignment]
    """A ``cls`` error whose cause is known and said in ``message``: no generic hint (an EPERM
    from an exclusive attachment is not about capabilities)."""
    err = cls(code, where, message=message, hint="-")
    err.hint = ""
    OSError.__init__(err, code, f"{where}: {message}")
    return err


def too_old(attach_type: AttachType, code: int, where: str, what: str = "") -> NotSupportedError | None:
    """``NotSupportedError`` naming the release if the running kernel predates ``attach_type``
    (or, with ``what="link"``, its link), else None. Called after the kernel refused (the probe)."""
    row = ATTACH_TYPES.get(attach_type)
    if row is None:
        return None
    since = row.link_since if what == "link" else row.since
    if since is None or kernel_version() >= since:
        return None
    subject = f"{attach_type.name} links need" if what == "link" else f"{attach_type.name} needs"
    return known(code, where, f"{subject} Linux {release_text(since)}; this is {this_release()}", NotSupportedError)


def mismatch(prog: Any, attach_type: AttachType) -> str:
    """Why ``prog`` does not fit ``attach_type`` by type or expected attach type, or ""."""
    row = ATTACH_TYPES.get(attach_type)
    if row is None:
        return ""
    if prog.type not in row.program_types:
        takes = " or ".join(t.name for t in row.program_types)
        return f"{attach_type.name} takes {takes} programs, not {program_type_name(prog.type)}"
    expected = getattr(prog, "expected_attach_type", None)
    if row.expected_at_load and expected is not None and expected != attach_type:
        return (f"the program was loaded with expected_attach_type {type_name(expected)}; "
                f"{attach_type.name} takes programs loaded with expected_attach_type {attach_type.name}")
    if row.expected_at_load and expected is None:
        return (f"{attach_type.name} takes programs loaded with expected_attach_type {attach_type.name} "
                "(ProgramSpec.expected_attach_type)")
    return ""


def permission(code: int, where: str) -> BPFError | None:
    """``PermissionDeniedError`` naming the capability when the process lacks it, else None."""
    if code not in (errno.EPERM, errno.EACCES):
        return None
    mask = caps.effective()
    if mask >> caps.CAP_SYS_ADMIN & 1:
        return None
    missing = [name for name, cap in (("CAP_BPF", caps.CAP_BPF), ("CAP_NET_ADMIN", caps.CAP_NET_ADMIN)) if not mask >> cap & 1]
    if missing:
        return PermissionDeniedError(code, where, hint=f"needs {' and '.join(missing)} (or CAP_SYS_ADMIN)")
    return None


def generic(code: int, where: str) -> BPFError:
    """The typed error for ``code`` without a known cause (no capability hint when the process has them)."""
    if code in (errno.EPERM, errno.EACCES):
        return PermissionDeniedError(code, where, hint=f"the kernel refused although the process has {', '.join(caps.names())}: "
                                     "configuration or policy (LSM)")
    return error_for(code, where)
