"""``enable_stats``: the kernel counts run time and runs of every program while a handle is open."""

from __future__ import annotations

from .._fd import FdOwner
from .._sys.attrs import EnableStatsAttr
from .._sys.constants import Cmd, StatsType
from .._sys.syscall import bpf


class StatsHandle(FdOwner):
    """Keeps program run-time statistics on (``ProgramInfo.run_time_ns``/``run_cnt``) until closed."""

    _what = "stats handle"

    def __init__(self, fd: int) -> None:
        """Own the fd ``BPF_ENABLE_STATS`` returned."""
        self._own(fd)


def enable_stats(kind: StatsType = StatsType.RUN_TIME) -> StatsHandle:
    """Turn on the kernel's per-program statistics (``BPF_ENABLE_STATS``, Linux 5.8+) for as long as
    the returned handle is open; use it as a context manager."""
    return StatsHandle(bpf(Cmd.ENABLE_STATS, EnableStatsAttr(type=StatsType(kind)), "enable stats"))
