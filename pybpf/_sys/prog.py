"""Program commands: ``BPF_PROG_LOAD`` with the verifier log, ``BPF_PROG_TEST_RUN``, program and link info."""

from __future__ import annotations

import ctypes
import errno

from ..errors import BPFError, VerifierError, error_for
from .attrs import LinkInfoStruct, ProgInfoStruct, ProgLoadAttr, TestRunAttr
from .commands import obj_info
from .constants import Cmd
from .syscall import bpf, bpf_errno

LOG_LEVEL_FAILURE = 1
"""The log level used to explain a failed load: the verifier's path to the error."""
_LOG_START = 1 << 16
_LOG_MAX = 1 << 28  # the kernel caps log_size at UINT_MAX >> 2


def prog_load(attr: ProgLoadAttr, name: str = "", log_level: int = 0) -> tuple[int, str]:
    """``BPF_PROG_LOAD`` of a filled attr (no log fields): ``(fd, verifier log)``.

    With ``log_level`` 0 the load runs without a log; if it fails it runs again with a log so the
    ``VerifierError`` can say why. A log too small (ENOSPC) is grown and the load repeated.
    """
    if log_level == 0:
        fd = bpf_errno(Cmd.PROG_LOAD, attr)
        if fd >= 0:
            return fd, ""
        first = -fd
        if first in (errno.EPERM, errno.E2BIG):  # no log would tell more
            raise error_for(first, "load program", name)
        try:
            return _load_logged(attr, name, LOG_LEVEL_FAILURE)[0], ""  # a pass now is kept
        except VerifierError:
            raise
        except BPFError:
            raise error_for(first, "load program", name, message=_explain(first)) from None
    return _load_logged(attr, name, log_level)


def _load_logged(attr: ProgLoadAttr, name: str, log_level: int) -> tuple[int, str]:
    size = _LOG_START
    while True:
        buf = ctypes.create_string_buffer(size)
        attr.log_level, attr.log_size, attr.log_buf = log_level, size, ctypes.addressof(buf)
        attr.log_true_size = 0
        try:
            fd = bpf_errno(Cmd.PROG_LOAD, attr)
        finally:
            attr.log_level, attr.log_size, attr.log_buf = 0, 0, 0
        log = buf.value.decode(errors="replace")
        if fd >= 0:
            return fd, log
        code = -fd
        if code == errno.ENOSPC and size < _LOG_MAX:
            size = min(_LOG_MAX, max(size * 4, attr.log_true_size + 1))
            continue
        if log.strip():
            raise VerifierError(code, "load program", name, log=log)
        raise error_for(code, "load program", name, message=_explain(code))


def _explain(code: int) -> str:
    """What a failed load without a verifier log usually means."""
    if code == errno.EINVAL:
        return "the kernel refused the program's attributes (type, expected_attach_type, flags, license or name)"
    if code == errno.EBADF:
        return "an instruction refers to a closed or invalid map fd"
    return ""


def prog_test_run(attr: TestRunAttr, name: str = "") -> TestRunAttr:
    """``BPF_PROG_TEST_RUN`` with a filled attr; the kernel's outputs are in the returned attr."""
    bpf(Cmd.PROG_TEST_RUN, attr, "test run program", name)
    return attr


def prog_map_ids(fd: int, count: int, name: str = "") -> list[int]:
    """The ids of the maps a program uses (``count`` is ``nr_map_ids`` from a first info call)."""
    if count == 0:
        return []
    ids = (ctypes.c_uint32 * count)()
    info = ProgInfoStruct(nr_map_ids=count, map_ids=ctypes.addressof(ids))
    obj_info(fd, info, "get info of program", name)
    return list(ids[: min(count, info.nr_map_ids)])


def link_info(fd: int, name: str = "") -> LinkInfoStruct:
    """The kernel's ``struct bpf_link_info`` for a link fd."""
    return obj_info(fd, LinkInfoStruct(), "get info of link", name)  # type: ignore[return-value]
