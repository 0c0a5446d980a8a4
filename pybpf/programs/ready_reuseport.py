"""``reuseport_migrate``: the reuseport select program, loaded so that it also migrates.

Loaded as ``SK_REUSEPORT_SELECT_OR_MIGRATE`` (Linux 5.14), the program of a SO_REUSEPORT group is
also asked where the connections queued on a listener that closes should go, instead of the
kernel resetting them. It picks the slot the control map names; when that fails (the slot is
empty, or it is the closing socket's own) the kernel picks among the remaining listeners by hash.
"""

from __future__ import annotations

from typing import Any

from .._sys.constants import AttachType, ProgramType
from ..asm import R0, R3, Assembler
from .program import Program
from .ready import _control, _load, _select_epilogue, _select_prologue


def reuseport_migrate(sockarray: Any, control: Any) -> Program:
    """SK_REUSEPORT program picking the socket at the index held in ``control`` (a one-entry ARRAY,
    u32 key 0 -> u32 index) for new connections and for those of a closing listener; an empty slot
    falls back to the kernel's choice."""
    array_fd, control_fd = _control(sockarray, control, "control")
    a = Assembler()
    _select_prologue(a, control_fd)
    a.mov64(R3, R0)
    _select_epilogue(a, array_fd)
    return _load(a, ProgramType.SK_REUSEPORT, "reuseport_migr", AttachType.SK_REUSEPORT_SELECT_OR_MIGRATE)
