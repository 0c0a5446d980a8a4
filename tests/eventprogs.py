"""Programs that produce events, assembled (no compiler): tc programs driven by ``test_run``."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pybpf import Program, ProgramSpec, ProgramType
from pybpf.asm import DW, FP, R0, R1, R2, R3, R4, R5, R6, R7, Assembler, Helper

BPF_F_CURRENT_CPU = 0xFFFFFFFF


def ringbuf_copy(ring: Any, size: int, stamp: bool = False, discard: bool = False) -> Program:
    """Reserve ``size`` bytes in ``ring``, copy the packet's first ``size`` bytes there, submit
    (or discard). With ``stamp`` bytes 0..8 become ``bpf_ktime_get_ns()``. Returns the verdict 0."""
    a = Assembler()
    a.mov64(R6, R1)
    a.ld_map_fd(R1, ring).mov64(R2, size).mov64(R3, 0).call(Helper.ringbuf_reserve)
    a.jeq(R0, 0, "out").mov64(R7, R0)
    a.mov64(R1, R6).mov64(R2, 0).mov64(R3, R7).mov64(R4, size).call(Helper.skb_load_bytes)
    if stamp:
        a.call(Helper.ktime_get_ns).stx(DW, R7, R0, 0)
    a.mov64(R1, R7).mov64(R2, 0).call(Helper.ringbuf_discard if discard else Helper.ringbuf_submit)
    a.label("out").mov64(R0, 0).exit()
    return Program.load(ProgramSpec(ProgramType.SCHED_CLS, a, name="ring_copy"))


def ringbuf_output(ring: Any, size: int, flags: int = 0) -> Program:
    """``bpf_ringbuf_output`` of the packet's first ``size`` bytes (<= 256) copied to the stack."""
    a = Assembler()
    a.mov64(R6, R1)
    a.mov64(R1, R6).mov64(R2, 0).mov64(R3, FP).add64(R3, -256).mov64(R4, size).call(Helper.skb_load_bytes)
    a.ld_map_fd(R1, ring).mov64(R2, FP).add64(R2, -256).mov64(R3, size).mov64(R4, flags).call(Helper.ringbuf_output)
    a.mov64(R0, 0).exit()
    return Program.load(ProgramSpec(ProgramType.SCHED_CLS, a, name="ring_output"))


def perf_output(events: Any, size: int, stamp: bool = False) -> Program:
    """``bpf_perf_event_output`` on the current CPU: 8 bytes from the stack (``bpf_ktime_get_ns()``
    with ``stamp``, else the packet's first 8 bytes) then ``size - 8`` bytes of the packet."""
    if size < 8:
        raise ValueError("size must be >= 8")
    a = Assembler()
    a.mov64(R6, R1)
    if stamp:
        a.call(Helper.ktime_get_ns).stx(DW, FP, R0, -8)
    else:
        a.mov64(R1, R6).mov64(R2, 0).mov64(R3, FP).add64(R3, -8).mov64(R4, 8).call(Helper.skb_load_bytes)
    a.mov64(R1, R6).ld_map_fd(R2, events).ld_imm64(R3, (size - 8) << 32 | BPF_F_CURRENT_CPU)
    a.mov64(R4, FP).add64(R4, -8).mov64(R5, 8).call(Helper.perf_event_output)
    a.mov64(R0, 0).exit()
    return Program.load(ProgramSpec(ProgramType.SCHED_CLS, a, name="perf_output"))


def reporter(ring: Any, prog_type: ProgramType, tag: int = 0, *, pid: int | None = None, ctx_offset: int | None = None,
             **spec: Any) -> Program:
    """A program that sends 16 bytes to ``ring``: ``bpf_get_current_pid_tgid()`` then ``tag`` (or
    the u64 at ``ctx_offset`` in its context); with ``pid``, only when that process runs it."""
    a = Assembler()
    a.mov64(R6, R1)
    a.call(Helper.get_current_pid_tgid).stx(DW, FP, R0, -16)
    if pid is not None:
        a.rsh64(R0, 32).jne(R0, pid, "out")
    if ctx_offset is not None:
        a.ldx(DW, R1, R6, ctx_offset).stx(DW, FP, R1, -8)
    else:
        a.mov64(R1, tag).stx(DW, FP, R1, -8)
    a.ld_map_fd(R1, ring).mov64(R2, FP).add64(R2, -16).mov64(R3, 16).mov64(R4, 0).call(Helper.ringbuf_output)
    a.label("out").mov64(R0, 0).exit()
    return Program.load(ProgramSpec(prog_type, a, name=spec.pop("name", "reporter"), **spec))


def counter(counts: Any, prog_type: ProgramType) -> Program:
    """A program that adds 1 to slot 0 of the ARRAY ``counts`` each time it runs."""
    a = Assembler()
    a.st(4, FP, -4, 0).ld_map_fd(R1, counts).mov64(R2, FP).add64(R2, -4).call(Helper.map_lookup_elem)
    a.jeq(R0, 0, "out").mov64(R1, 1).atomic_add(DW, R0, R1)
    a.label("out").mov64(R0, 0).exit()
    return Program.load(ProgramSpec(prog_type, a, name="counter"))


def records_of(records: list[bytes], pid: int) -> list[int]:
    """The second u64 of each 16-byte ``reporter`` record sent by process ``pid``."""
    return [int.from_bytes(r[8:16], "little") for r in records if int.from_bytes(r[4:8], "little") == pid]


def perf_record(packet: bytes, size: int) -> bytes:
    """What ``perf_output(events, size)`` sends for ``packet`` (without ``stamp``)."""
    return packet[:8] + packet[: size - 8]


# ---- compiled objects and processes --------------------------------------------------------------

HERE = Path(__file__).resolve().parent
_BUILT: dict[str, Path] = {}


def need_tool(name: str, path: str | None) -> str:
    """The tool's path; a missing tool skips the test, or fails it under PYBPF_REQUIRE_KERNEL=1."""
    if path is None:
        message = f"{name} is not installed"
        if os.environ.get("PYBPF_REQUIRE_KERNEL") == "1":
            pytest.fail(f"PYBPF_REQUIRE_KERNEL=1 but {message}")
        pytest.skip(message)
    return path


def bpf_object(directory: Path, source: str, *flags: str) -> Path:
    """Compile ``tests/bpf/<source>`` with clang (once per run and flags)."""
    key = source + " ".join(flags)
    if key in _BUILT:
        return _BUILT[key]
    clang = need_tool("clang-16", shutil.which("clang-16") or shutil.which("clang"))
    out = directory / f"{Path(source).stem}{len(_BUILT)}.o"
    include = f"/usr/include/{platform.machine()}-linux-gnu"
    subprocess.run([clang, "-g", "-O2", "-target", "bpf", f"-I{include}", *flags, "-c", str(HERE / "bpf" / source), "-o", str(out)],
                   check=True, capture_output=True, text=True)
    _BUILT[key] = out
    return out


def uprobe_target(directory: Path) -> tuple[Path, Path]:
    """Build ``tests/c/uprobe_target.c``: (the PIE executable, its shared library)."""
    gcc = need_tool("gcc", shutil.which("gcc") or shutil.which("cc"))
    source = HERE / "c" / "uprobe_target.c"
    lib = directory / "libpybpftarget.so"
    exe = directory / "uprobe_target"
    if not exe.exists():
        subprocess.run([gcc, "-O1", "-shared", "-fPIC", "-DLIBRARY", str(source), "-o", str(lib)], check=True)
        subprocess.run([gcc, "-O1", "-fPIE", "-pie", str(source), f"-L{directory}", "-lpybpftarget",
                        f"-Wl,-rpath,{directory}", "-o", str(exe)], check=True)
    return exe, lib
