"""Events: data BPF programs send to user space (RINGBUF, PERF_EVENT_ARRAY) and data user space
sends to programs (USER_RINGBUF)."""

from ._reader import ReaderBusyError
from .perfbuf import PerfBuffer
from .ringbuf import RingBuffer
from .user_ringbuf import UserRingBuffer

__all__ = ["PerfBuffer", "ReaderBusyError", "RingBuffer", "UserRingBuffer"]
