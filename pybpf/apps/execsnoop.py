"""execsnoop: every ``execve`` on the system, with pid, parent pid, uid, result, command name and
arguments, as bcc's tool prints them. No compiler: the two programs are assembled here, with the
tracepoints' field offsets read from tracefs and ``task_struct``'s from the kernel's BTF.

``sys_enter_execve`` stores the caller's pid, parent pid, uid, file name and up to ``max_args``
arguments in a hash map keyed by thread id; ``sys_exit_execve`` adds the result and the command
name (the new program's, once the exec succeeded), sends the record to a ring buffer and deletes
the entry. Python reads the ring buffer.
"""

from __future__ import annotations

import ctypes
import dataclasses
import time
from typing import Any

from ..asm import DW, FP, R0, R1, R2, R3, R4, R6, R7, R8, R9, W, Assembler
from ..btf import Kind, Struct, vmlinux
from ..events import RingBuffer
from ..map import Map
from .. import MapType, ProgramType
from ..programs import Link, Program, ProgramSpec, tracepoint_fields

ARG_SIZE = 128
"""The longest argument kept (bytes, with its NUL); longer ones are cut, as bcc's ``ARGSIZE``."""
ARGS_SPACE = 1024
"""Bytes of arguments kept per exec; arguments past it are dropped."""
MAX_ARGS = 20
"""Arguments read per exec by default (bcc's ``--max-args`` default)."""
_HEAD = 40


class _Event(ctypes.Structure):
    _fields_ = [
        ("pid", ctypes.c_uint32),
        ("ppid", ctypes.c_uint32),
        ("uid", ctypes.c_uint32),
        ("args_len", ctypes.c_uint32),
        ("ret", ctypes.c_int64),
        ("comm", ctypes.c_char * 16),
        ("args", ctypes.c_uint8 * (ARGS_SPACE + ARG_SIZE)),
    ]


@dataclasses.dataclass(frozen=True)
class Exec:
    """One ``execve``: who ran it, what, and its result (0, or a negative errno)."""

    time: float
    pid: int
    ppid: int
    uid: int
    ret: int
    comm: str
    args: tuple[str, ...]
    truncated: bool

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dataclasses.asdict(self) | {"args": list(self.args)}


def _member_offset(struct_name: str, member: str) -> int:
    """The byte offset of ``member`` in the kernel's ``struct struct_name`` (vmlinux BTF)."""
    found = [t for t in vmlinux().find(struct_name, Kind.STRUCT) if isinstance(t, Struct)]
    if not found:
        raise RuntimeError(f"the kernel's BTF has no struct {struct_name}")
    for m in found[0].members:
        if m.name == member:
            return m.offset // 8
    raise RuntimeError(f"the kernel's struct {struct_name} has no member {member!r}")


def _enter_program(scratch: Map, execs: Map, max_args: int) -> Program:
    fields = tracepoint_fields("syscalls", "sys_enter_execve")
    filename, argv = fields["filename"].offset, fields["argv"].offset
    real_parent, tgid = _member_offset("task_struct", "real_parent"), _member_offset("task_struct", "tgid")
    a = Assembler()
    a.mov64(R6, R1)
    a.call("get_current_pid_tgid").mov64(R7, R0).stx(W, FP, R0, -4)
    a.st(W, FP, -8, 0).ld_map_fd(R1, scratch).mov64(R2, FP).add64(R2, -8).call("map_lookup_elem")
    a.jeq(R0, 0, "out").mov64(R8, R0)
    a.mov64(R1, R7).rsh64(R1, 32).stx(W, R8, R1, 0)
    a.call("get_current_uid_gid").stx(W, R8, R0, 8)
    a.st(DW, R8, 16, 0)
    # parent pid: current->real_parent->tgid, read with probe_read_kernel
    a.st(DW, FP, -16, 0)
    a.call("get_current_task").mov64(R3, R0).add64(R3, real_parent)
    a.mov64(R1, FP).add64(R1, -16).mov64(R2, 8).call("probe_read_kernel")
    a.ldx(DW, R3, FP, -16).st(DW, FP, -16, 0).jeq(R3, 0, "no_parent").add64(R3, tgid)
    a.mov64(R1, FP).add64(R1, -16).mov64(R2, 4).call("probe_read_kernel")
    a.label("no_parent").ldx(W, R1, FP, -16).stx(W, R8, R1, 4)
    # the file name, then argv[1..]: NUL-terminated strings one after another
    a.mov64(R9, 0)
    a.mov64(R1, R8).add64(R1, _HEAD).mov64(R2, ARG_SIZE).ldx(DW, R3, R6, filename).call("probe_read_user_str")
    a.jsle(R0, 0, "args_done").add64(R9, R0)
    for i in range(1, max_args):
        a.jge(R9, ARGS_SPACE, "truncated")
        a.ldx(DW, R3, R6, argv).add64(R3, 8 * i).mov64(R1, FP).add64(R1, -24).mov64(R2, 8).call("probe_read_user")
        a.jne(R0, 0, "args_done").ldx(DW, R3, FP, -24).jeq(R3, 0, "args_done")
        a.mov64(R1, R9).and64(R1, ARGS_SPACE - 1).add64(R1, R8).add64(R1, _HEAD).mov64(R2, ARG_SIZE)
        a.call("probe_read_user_str")
        a.jsle(R0, 0, "args_done").add64(R9, R0)
    a.jge(R9, ARGS_SPACE, "truncated").ldx(DW, R3, R6, argv).add64(R3, 8 * max_args)
    a.mov64(R1, FP).add64(R1, -24).mov64(R2, 8).call("probe_read_user")
    a.jne(R0, 0, "args_done").ldx(DW, R3, FP, -24).jeq(R3, 0, "args_done")
    a.label("truncated").add64(R9, ARGS_SPACE + ARG_SIZE)  # arguments were left out: a marker above any length
    a.label("args_done").stx(W, R8, R9, 12)
    a.ld_map_fd(R1, execs).mov64(R2, FP).add64(R2, -4).mov64(R3, R8).mov64(R4, 0).call("map_update_elem")
    a.label("out").mov64(R0, 0).exit()
    return Program.load(ProgramSpec(ProgramType.TRACEPOINT, a, name="execsnoop_in"))


def _exit_program(execs: Map, events: Map) -> Program:
    ret = tracepoint_fields("syscalls", "sys_exit_execve")["ret"].offset
    a = Assembler()
    a.mov64(R6, R1)
    a.call("get_current_pid_tgid").stx(W, FP, R0, -4)
    a.ld_map_fd(R1, execs).mov64(R2, FP).add64(R2, -4).call("map_lookup_elem")
    a.jeq(R0, 0, "out").mov64(R7, R0)
    a.ldx(DW, R1, R6, ret).stx(DW, R7, R1, 16)
    a.mov64(R1, R7).add64(R1, 24).mov64(R2, 16).call("get_current_comm")
    a.ld_map_fd(R1, events).mov64(R2, R7).mov64(R3, ctypes.sizeof(_Event)).mov64(R4, 0).call("ringbuf_output")
    a.ld_map_fd(R1, execs).mov64(R2, FP).add64(R2, -4).call("map_delete_elem")
    a.label("out").mov64(R0, 0).exit()
    return Program.load(ProgramSpec(ProgramType.TRACEPOINT, a, name="execsnoop_exit"))


class ExecSnoop:
    """Watches every ``execve`` from creation until ``close()``: ``poll(timeout)`` returns ``Exec``
    records; iteration blocks for the next. ``max_args`` (1..64) bounds the arguments read."""

    def __init__(self, max_args: int = MAX_ARGS, ring_size: int = 1 << 20) -> None:
        if isinstance(max_args, bool) or not isinstance(max_args, int) or not 1 <= max_args <= 64:
            raise ValueError(f"max_args must be 1 .. 64, not {max_args!r}")
        self._owned: list[Any] = []
        try:
            scratch = self._own(Map.create(type=MapType.PERCPU_ARRAY, key_size=4, value_size=ctypes.sizeof(_Event),
                                           max_entries=1, name="execsnoop_tmp"))
            execs = self._own(Map.create(type=MapType.HASH, key_size=4, value_size=ctypes.sizeof(_Event),
                                         max_entries=10240, name="execsnoop_run"))
            events = self._own(Map.create(type=MapType.RINGBUF, max_entries=ring_size, name="execsnoop_out"))
            self._reader = self._own(RingBuffer(events, type=_Event))
            enter = self._own(_enter_program(scratch, execs, max_args))
            leave = self._own(_exit_program(execs, events))
            self.links: list[Link] = [self._own(leave.attach_tracepoint("syscalls", "sys_exit_execve")),
                                      self._own(enter.attach_tracepoint("syscalls", "sys_enter_execve"))]
        except BaseException:
            self.close()
            raise

    def _own(self, obj: Any) -> Any:
        self._owned.append(obj)
        return obj

    def poll(self, timeout: float | None = None) -> list[Exec]:
        """The execs finished since the last call; waits up to ``timeout`` seconds for the first."""
        now = time.time()
        return [_decode(event, now) for event in self._reader.poll(timeout)]

    def fileno(self) -> int:
        """Readable when execs are waiting (for selectors)."""
        return int(self._reader.fileno())

    def __iter__(self) -> Any:
        while True:
            yield from self.poll(None)

    def close(self) -> None:
        """Detach and free everything. Idempotent."""
        for obj in reversed(self._owned):
            obj.close()
        self._owned.clear()

    def __enter__(self) -> ExecSnoop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _decode(event: _Event, now: float) -> Exec:
    used = event.args_len
    truncated = used >= ARGS_SPACE + ARG_SIZE
    raw = bytes(event.args)[: min(used - ARGS_SPACE - ARG_SIZE if truncated else used, ARGS_SPACE + ARG_SIZE)]
    args = tuple(part.decode(errors="replace") for part in raw.split(b"\0") if part)
    return Exec(now, event.pid, event.ppid, event.uid, event.ret, event.comm.decode(errors="replace"), args, truncated)


def header() -> str:
    """bcc's column header."""
    return f"{'PCOMM':<16} {'PID':<7} {'PPID':<7} {'RET':>3} ARGS"


def line(record: Exec) -> str:
    """One exec as bcc's execsnoop prints it."""
    args = " ".join(record.args) + (" ..." if record.truncated else "")
    return f"{record.comm:<16} {record.pid:<7} {record.ppid:<7} {record.ret:>3} {args}"
