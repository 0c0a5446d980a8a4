"""Kernel refusals of an attachment, in words: the program type an attach type takes, the release
that brought it, the capability that is missing."""

from __future__ import annotations

import errno
from typing import Any, cast

from .._sys.constants import AttachType, ProgramType
from .._sys.kernel import kernel_version
from ..errors import BPFError, NotSupportedError, PermissionDeniedError, error_for
from .attach_types import ATTACH_TYPES, release

CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_BPF = 12, 21, 39


def has_capability(cap: int) -> bool:
    """Whether the calling thread has ``cap`` in its effective set (``/proc/thread-self/status``)."""
    try:
        with open("/proc/thread-self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> cap & 1)
    except OSError:
        pass
    return True  # cannot tell: do not blame capabilities


def type_name(value: Any) -> str:
    """A program or attach type's name, or its number when this library does not know it."""
    return str(getattr(value, "name", value))


def this_release() -> str:
    """``"6.1"``: the running kernel's release."""
    major, minor = kernel_version()
    return f"{major}.{minor}"


def too_old(attach_type: AttachType, code: int, where: str, what: str = "") -> NotSupportedError | None:
    """``NotSupportedError`` naming the release if the running kernel predates ``attach_type``
    (or, with ``what="link"``, its link), else None."""
    row = ATTACH_TYPES.get(attach_type)
    if row is None:
        return None
    since = row.link_since if what == "link" else row.since
    if since is None or kernel_version() >= since:
        return None
    subject = f"{attach_type.name} links need" if what == "link" else f"{attach_type.name} needs"
    return cast(NotSupportedError, known(code, where, f"{subject} {release(since)}; this is {this_release()}", NotSupportedError))


def mismatch(prog: Any, attach_type: AttachType) -> str:
    """Why ``prog`` does not fit ``attach_type`` by type or expected attach type, or ""."""
    row = ATTACH_TYPES.get(attach_type)
    if row is None:
        return ""
    if prog.type != row.program_type and not (attach_type.name.startswith("TCX") and prog.type == ProgramType.SCHED_ACT):
        return f"{attach_type.name} takes {row.program_type.name} programs, not {type_name(prog.type)}"
    expected = getattr(prog, "expected_attach_type", None)
    if row.expected_at_load and expected is not None and expected != attach_type:
        return (f"the program was loaded with expected_attach_type {type_name(expected)}; "
                f"{attach_type.name} takes programs loaded with expected_attach_type {attach_type.name}")
    if row.expected_at_load and expected is None and prog.type == row.program_type:
        return (f"{attach_type.name} takes programs loaded with expected_attach_type {attach_type.name} "
                "(ProgramSpec.expected_attach_type)")
    return ""


def permission(code: int, where: str, needs: str = "CAP_NET_ADMIN") -> BPFError | None:
    """``PermissionDeniedError`` naming the capability when the process lacks it, else None."""
    if code not in (errno.EPERM, errno.EACCES):
        return None
    missing = [name for name, cap in (("CAP_BPF", CAP_BPF), (needs, CAP_NET_ADMIN if needs == "CAP_NET_ADMIN" else CAP_SYS_ADMIN))
               if not has_capability(cap)]
    if missing and not has_capability(CAP_SYS_ADMIN):
        return PermissionDeniedError(code, where, hint=f"needs {' and '.join(missing)} (or CAP_SYS_ADMIN)")
    return None


def generic(code: int, where: str) -> BPFError:
    """The typed error for ``code`` without a known cause (no capability hint when the process has them)."""
    if code in (errno.EPERM, errno.EACCES):
        return PermissionDeniedError(code, where, hint="the kernel refused although the process has CAP_BPF and "
                                     "CAP_NET_ADMIN: configuration or policy (LSM)")
    return error_for(code, where)


def known(code: int, where: str, message: str, cls: type[BPFError] = BPFError) -> BPFError:
    """A ``cls`` error whose cause is known and said in ``message``: no generic hint (an EPERM
    from an exclusive attachment is not about capabilities)."""
    err = cls(code, where, message=message, hint="-")
    err.hint = ""
    OSError.__init__(err, code, f"{where}: {message}")
    return err
