"""Tracing attach points on the real kernel: tracepoints, raw tracepoints, kprobes, uprobes,
fentry/fexit, perf-event sampling, and attaching a collection by section names.

Kernels differ here: this machine's 6.18 has no kprobes (CONFIG_KPROBES off) and refuses every
fentry load with EPERM; Debian's 6.1 and 6.12 (scripts/kernel-matrix) have both. Where a kernel
lacks a mechanism, a raw probe (a file in /sys, a raw bpf(2) call) decides, and the test checks
pybpf's refusal instead or skips naming the mechanism.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import pybpf
from pybpf import AttachType, Map, MapType, NotSupportedError, Program, ProgramSpec, ProgramType, RingBuffer
from pybpf.asm import R0, Assembler
from pybpf.programs import tracing
from pybpf.programs.symbols import SymbolNotFoundError, function_offset, parse_symbol
import probes
from eventprogs import bpf_object, counter, records_of, reporter, uprobe_target
from scale import TIME

PT_REGS_DI = 112  # struct pt_regs (x86-64): the first argument
PT_REGS_AX = 80  # the return value
KPROBE_PMU = Path("/sys/bus/event_source/devices/kprobe")
UPROBE_PMU = Path("/sys/bus/event_source/devices/uprobe")

x86_only = pytest.mark.skipif(platform.machine() != "x86_64", reason="pt_regs offsets here are x86-64's")


@pytest.fixture
def ring() -> Iterator[Map]:
    with Map.create(type=MapType.RINGBUF, max_entries=64 * 4096, name="trace_ring") as m:
        yield m


_EXIT_0 = struct.pack("=BBhiBBhi", 0xB7, 0, 0, 0, 0x95, 0, 0, 0)  # r0 = 0; exit


def _raw_load(prog_type: int, attach_type: int = 0, btf_id: int = 0) -> tuple[int, int]:
    """Raw BPF_PROG_LOAD of ``r0 = 0; exit`` (struct packed here): ``(fd, errno)``."""
    insns, lic = ctypes.create_string_buffer(_EXIT_0, len(_EXIT_0)), ctypes.create_string_buffer(b"GPL")
    attr = bytearray(128)
    struct.pack_into("=IIQQ", attr, 0, prog_type, 2, ctypes.addressof(insns), ctypes.addressof(lic))
    struct.pack_into("=I", attr, 68, attach_type)  # expected_attach_type
    struct.pack_into("=I", attr, 108, btf_id)  # attach_btf_id
    return probes._bpf(5, bytes(attr))


def _no_perf_link() -> str | None:
    """Raw probe: BPF_LINK_CREATE with attach type PERF_EVENT and a bad fd (EBADF: the kernel
    knows the attach type for links); why there are no perf-event links, or None."""
    fd, code = _raw_load(ProgramType.KPROBE)
    assert fd >= 0, f"cannot load a KPROBE program: errno {code}"
    try:
        link, got = probes._bpf(28, struct.pack("=III", fd, (1 << 32) - 1, AttachType.PERF_EVENT) + bytes(52))
        if link >= 0:
            os.close(link)
        if got == errno.EBADF:
            return None
        return f"perf-event BPF links need Linux 5.15; this is {probes.running()} (BPF_LINK_CREATE: {errno.errorcode.get(got, got)})"
    finally:
        os.close(fd)


def _raw_fentry_errno() -> int:
    """Raw probe: 0 if the kernel loads an fentry program on do_unlinkat, else the errno."""
    from pybpf.btf import Kind, vmlinux

    (target,) = vmlinux().find("do_unlinkat", Kind.FUNC)
    fd, code = _raw_load(ProgramType.TRACING, AttachType.TRACE_FENTRY, target.id)
    if fd >= 0:
        os.close(fd)
        return 0
    return code


# ---- tracepoints --------------------------------------------------------------------------------


@pytest.mark.parametrize("use_link", [True, False], ids=["link", "ioctl"])
def test_tracepoint_events_until_detached(ring: Map, use_link: bool, no_fd_leak: None) -> None:
    if use_link:
        probes.skip_if(_no_perf_link())
    me = os.getpid()
    with reporter(ring, ProgramType.TRACEPOINT, 7, pid=me, name="tp") as prog, RingBuffer(ring) as reader:
        link = tracing.attach_tracepoint(prog, "syscalls", "sys_enter_getppid", use_link=use_link)
        assert isinstance(link, tracing.PerfEventLink) != use_link
        for _ in range(3):
            os.getppid()
        assert records_of(reader.poll(1), me) == [7, 7, 7]
        link.close()
        os.getppid()
        assert records_of(reader.poll(0.05), me) == []


def test_tracepoint_through_the_program_method(ring: Map) -> None:
    me = os.getpid()
    with reporter(ring, ProgramType.TRACEPOINT, 1, pid=me) as prog, RingBuffer(ring) as reader:
        with prog.attach_tracepoint("syscalls", "sys_enter_getppid"):
            os.getppid()
            assert records_of(reader.poll(1), me) == [1]


def test_a_pinned_tracepoint_link_outlives_its_fd(ring: Map, pin_dir: Path) -> None:
    probes.skip_if(_no_perf_link())
    me = os.getpid()
    with reporter(ring, ProgramType.TRACEPOINT, 2, pid=me) as prog, RingBuffer(ring) as reader:
        with prog.attach_tracepoint("syscalls", "sys_enter_getppid") as link:
            link.pin(pin_dir / "tp")
            assert link.info().type == pybpf.LinkType.PERF_EVENT
        os.getppid()
        assert records_of(reader.poll(1), me) == [2]
        os.unlink(pin_dir / "tp")
        assert _stops(os.getppid, reader, me), "still attached after the pin was removed"


def _stops(trigger: object, reader: RingBuffer, pid: int) -> bool:
    """Whether events of ``pid`` stop within a second: a link whose last reference was a removed
    pin is released by a kernel work item, a moment later."""
    deadline = time.monotonic() + 1 * TIME
    while time.monotonic() < deadline:
        reader.poll(0)
        trigger()  # type: ignore[operator]
        if not records_of(reader.poll(0.01), pid):
            return True
    return False


def test_an_ioctl_attachment_cannot_be_pinned(ring: Map, pin_dir: Path) -> None:
    with reporter(ring, ProgramType.TRACEPOINT) as prog:
        with tracing.attach_tracepoint(prog, "syscalls", "sys_enter_getppid", use_link=False) as link:
            with pytest.raises(NotSupportedError, match="PERF_EVENT_IOC_SET_BPF.*no kernel link"):
                link.pin(pin_dir / "no")
            with pytest.raises(NotSupportedError, match="no kernel link"):
                link.info()
        assert not (pin_dir / "no").exists()


def test_tracepoint_errors(ring: Map) -> None:
    with reporter(ring, ProgramType.TRACEPOINT) as prog:
        with pytest.raises(pybpf.BPFError, match=r"no such tracepoint: /.*/events/syscalls/sys_enter_nothing/id does not exist"):
            prog.attach_tracepoint("syscalls", "sys_enter_nothing")
        with pytest.raises(ValueError, match="tracepoint category '../x'"):
            prog.attach_tracepoint("../x", "y")
        with pytest.raises(TypeError, match="tracepoint name must be a str"):
            prog.attach_tracepoint("syscalls", None)  # type: ignore[arg-type]
    with reporter(ring, ProgramType.KPROBE) as wrong:
        with pytest.raises(ValueError, match="attach_tracepoint takes TRACEPOINT programs; 'reporter' is KPROBE"):
            wrong.attach_tracepoint("syscalls", "sys_enter_getppid")
    closed = reporter(ring, ProgramType.TRACEPOINT)
    closed.close()
    with pytest.raises(ValueError, match="closed program"):
        closed.attach_tracepoint("syscalls", "sys_enter_getppid")


# ---- raw tracepoints ----------------------------------------------------------------------------


@x86_only
def test_raw_tracepoint_sees_the_syscall_number(ring: Map, pin_dir: Path) -> None:
    me = os.getpid()
    getppid = 110  # x86-64
    with reporter(ring, ProgramType.RAW_TRACEPOINT, pid=me, ctx_offset=8) as prog, RingBuffer(ring) as reader:
        with prog.attach_raw_tracepoint("sys_enter") as link:
            os.getppid()
            assert getppid in records_of(reader.poll(1), me)
            link.pin(pin_dir / "raw")  # a real BPF link
            assert link.info().type == pybpf.LinkType.RAW_TRACEPOINT
        os.unlink(pin_dir / "raw")
        assert _stops(os.getppid, reader, me), "still attached after the pin was removed"
        with pytest.raises(pybpf.BPFError, match="the kernel has no tracepoint 'no_such_tracepoint'"):
            prog.attach_raw_tracepoint("no_such_tracepoint")


# ---- kprobes ------------------------------------------------------------------------------------


@x86_only
def test_kprobe_and_kretprobe_events(ring: Map, tmp_path: Path) -> None:
    if not KPROBE_PMU.exists():
        probes.skip(f"this kernel ({probes.running()}) has no kprobes (CONFIG_KPROBES): {KPROBE_PMU} is missing")
    me = os.getpid()
    missing = tmp_path / "missing"
    with reporter(ring, ProgramType.KPROBE, pid=me, ctx_offset=PT_REGS_DI, name="entry") as entry, \
            reporter(ring, ProgramType.KPROBE, pid=me, ctx_offset=PT_REGS_AX, name="exit") as exit_, RingBuffer(ring) as reader:
        with entry.attach_kprobe("do_unlinkat"), exit_.attach_kprobe("do_unlinkat", retprobe=True):
            with pytest.raises(FileNotFoundError):
                os.unlink(missing)
            values = records_of(reader.poll(1), me)
            time.sleep(0.01)
            values += records_of(reader.poll(0), me)
        assert len(values) == 2
        dfd, result = values
        assert dfd & 0xFFFFFFFF == -100 & 0xFFFFFFFF  # AT_FDCWD
        assert result & 0xFFFFFFFF == -errno.ENOENT & 0xFFFFFFFF
        os.getppid()
        with pytest.raises(FileNotFoundError):
            os.unlink(missing)
        assert records_of(reader.poll(0.05), me) == []


def test_kprobe_refusals(ring: Map) -> None:
    with reporter(ring, ProgramType.KPROBE) as prog:
        if not KPROBE_PMU.exists():
            with pytest.raises(NotSupportedError, match="no kprobe PMU .*built without CONFIG_KPROBES"):
                prog.attach_kprobe("do_unlinkat")
        else:
            with pytest.raises(pybpf.BPFError, match="no kernel function 'pybpf_no_such_function' can be probed"):
                prog.attach_kprobe("pybpf_no_such_function")
        with pytest.raises(ValueError, match="kernel function name"):
            prog.attach_kprobe("")
    with reporter(ring, ProgramType.TRACEPOINT) as wrong:
        with pytest.raises(ValueError, match="attach_kprobe takes KPROBE programs"):
            wrong.attach_kprobe("do_unlinkat")


# ---- uprobes ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return uprobe_target(tmp_path_factory.mktemp("uprobe"))


def _run_target(exe: Path, count: int, attach: object) -> tuple[int, int]:
    """Start the target, let ``attach(pid)`` attach, release it; its pid and printed sum."""
    child = subprocess.Popen([str(exe), str(count)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        attach(child.pid)  # type: ignore[operator]
        out, _ = child.communicate("go\n", timeout=30 * TIME)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0
    return child.pid, int(out)


@x86_only
def test_uprobe_and_uretprobe_in_a_pie_executable(ring: Map, target: tuple[Path, Path], no_fd_leak: None) -> None:
    if not UPROBE_PMU.exists():
        probes.skip(f"this kernel ({probes.running()}) has no uprobes (CONFIG_UPROBES): {UPROBE_PMU} is missing")
    exe, _ = target
    links: list[pybpf.Link] = []
    with reporter(ring, ProgramType.KPROBE, ctx_offset=PT_REGS_DI, name="args") as args, \
            reporter(ring, ProgramType.KPROBE, ctx_offset=PT_REGS_AX, name="rets") as rets, RingBuffer(ring) as reader:
        def attach(pid: int) -> None:
            links.append(args.attach_uprobe(exe, "pybpf_exe_target", pid=pid))
            links.append(rets.attach_uprobe(exe, "pybpf_exe_target", retprobe=True, pid=pid))

        try:
            pid, _ = _run_target(exe, 5, attach)
        finally:
            for link in links:
                link.close()
        values = [v & 0xFFFFFFFF for v in records_of(reader.poll(1) + reader.poll(0.05), pid)]
        assert sorted(values) == sorted([*range(5), *(2 * i for i in range(5))])  # arguments and results


@x86_only
def test_uprobe_in_a_shared_library_only_for_one_process(ring: Map, target: tuple[Path, Path]) -> None:
    exe, lib = target
    links: list[pybpf.Link] = []
    with reporter(ring, ProgramType.KPROBE, ctx_offset=PT_REGS_DI) as prog, RingBuffer(ring) as reader:
        try:
            first, _ = _run_target(exe, 3, lambda pid: links.append(prog.attach_uprobe(lib, "pybpf_lib_target", pid=pid)))
            other, _ = _run_target(exe, 3, lambda pid: None)  # not probed: another pid
        finally:
            for link in links:
                link.close()
        records = reader.poll(1) + reader.poll(0.05)
        assert records_of(records, first) == [0, 1, 2]
        assert records_of(records, other) == []


def test_uprobe_symbols_and_errors(ring: Map, target: tuple[Path, Path]) -> None:
    exe, lib = target
    base = function_offset(str(exe), "pybpf_exe_target")
    assert base > 0
    assert function_offset(str(exe), "pybpf_exe_target+0x2") == base + 2
    assert parse_symbol("malloc") == ("malloc", 0) and parse_symbol("f+16") == ("f", 16)
    libc = "libc.so.6"
    assert function_offset(tracing.resolve_binary(libc), "malloc") > 0
    with reporter(ring, ProgramType.KPROBE) as prog:
        with pytest.raises(SymbolNotFoundError, match=r"no function 'pybpf_nothing' defined in .*uprobe_target \(searched .symtab and .dynsym\)"):
            prog.attach_uprobe(exe, "pybpf_nothing")
        with pytest.raises(FileNotFoundError, match="no such file"):
            prog.attach_uprobe(exe.parent / "missing", "main")
        with pytest.raises(ValueError, match="not an ELF file"):
            prog.attach_uprobe(Path(__file__), "main")
        with pytest.raises(ValueError, match="expected a function name"):
            prog.attach_uprobe(exe, "bad name")
        with pytest.raises(ValueError, match="pid must be in"):
            prog.attach_uprobe(exe, "main", pid=0)
        with pytest.raises(pybpf.BPFError, match="no process"):
            prog.attach_uprobe(exe, "main", pid=_dead_pid())


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


# ---- fentry / fexit -----------------------------------------------------------------------------


def _fentry(ring: Map, kind: AttachType, tag: int) -> Program:
    return reporter(ring, ProgramType.TRACING, tag, pid=os.getpid(), name=f"f{tag}", expected_attach_type=kind,
                    attach_to="do_unlinkat")


def test_fentry_and_fexit_events(ring: Map, tmp_path: Path) -> None:
    refused = _raw_fentry_errno()
    if refused:
        probes.skip(f"this kernel ({probes.running()}) refuses TRACING (fentry) programs with {errno.errorcode.get(refused, refused)} even with "
                    "CAP_BPF and CAP_PERFMON (BPF trampolines: lockdown, an LSM or the build)")
    me = os.getpid()
    with _fentry(ring, AttachType.TRACE_FENTRY, 4) as entry, _fentry(ring, AttachType.TRACE_FEXIT, 5) as exit_, \
            RingBuffer(ring) as reader:
        with entry.attach_tracing(), exit_.attach_tracing() as link:
            info = link.info()
            assert info.type == pybpf.LinkType.TRACING and info.attach_type == AttachType.TRACE_FEXIT
            from pybpf.btf import Kind, vmlinux

            if probes.release() >= (5, 13):  # the link's target ids in bpf_link_info came with 5.13
                assert info.target_btf_id == vmlinux().find("do_unlinkat", Kind.FUNC)[0].id and info.target_obj_id > 0
            with pytest.raises(FileNotFoundError):
                os.unlink(tmp_path / "missing")
            assert sorted(records_of(reader.poll(1) + reader.poll(0.05), me)) == [4, 5]
        with pytest.raises(FileNotFoundError):
            os.unlink(tmp_path / "missing")
        assert records_of(reader.poll(0.05), me) == []


def test_fentry_refusals(ring: Map) -> None:
    if _raw_fentry_errno() == errno.EPERM:
        with pytest.raises(NotSupportedError, match="refuses TRACING programs although the process has CAP_BPF and CAP_PERFMON") as caught:
            _fentry(ring, AttachType.TRACE_FENTRY, 1)
        assert "needs CAP_BPF" not in str(caught.value)
    with pytest.raises(ValueError, match="no func 'pybpf_no_such_function' in the kernel's BTF"):
        reporter(ring, ProgramType.TRACING, expected_attach_type=AttachType.TRACE_FENTRY, attach_to="pybpf_no_such_function")
    with pytest.raises(ValueError, match="attach_to: a TRACE_FEXIT program needs the kernel function"):
        reporter(ring, ProgramType.TRACING, expected_attach_type=AttachType.TRACE_FEXIT)
    with reporter(ring, ProgramType.KPROBE) as wrong:
        with pytest.raises(ValueError, match="attach_tracing takes TRACING or LSM programs"):
            wrong.attach_tracing()


# ---- perf events --------------------------------------------------------------------------------


@pytest.mark.parametrize("use_link", [None, False], ids=["default", "ioctl"])
def test_cpu_clock_sampling(use_link: bool | None, no_fd_leak: None) -> None:
    with Map.create(type=MapType.ARRAY, key=ctypes.c_uint32, value=ctypes.c_uint64, max_entries=1) as counts, \
            counter(counts, ProgramType.PERF_EVENT) as prog:
        cpu = os.sched_getaffinity(0)
        events = [tracing.PerfEvent.cpu_clock(c, frequency=1000) for c in sorted(cpu)]
        try:
            links = [tracing.attach_perf_event(prog, e, use_link=use_link) for e in events]
        finally:
            for e in events:
                e.close()  # a link keeps the event; the ioctl fallback holds its own fd
        try:
            deadline = time.monotonic() + 5 * TIME
            while counts[0] < 5 and time.monotonic() < deadline:
                sum(range(10000))
            assert counts[0] >= 5
        finally:
            for link in links:
                link.close()
        stopped = counts[0]
        time.sleep(0.02)
        assert counts[0] - stopped <= len(links)  # at most one in flight per CPU


def test_attach_cpu_clock_on_every_cpu(no_fd_leak: None) -> None:
    with Map.create(type=MapType.ARRAY, key=ctypes.c_uint32, value=ctypes.c_uint64, max_entries=1) as counts, \
            counter(counts, ProgramType.PERF_EVENT) as prog:
        links = tracing.attach_cpu_clock(prog, frequency=500)
        try:
            assert len(links) == len(os.sched_getaffinity(0)) or len(links) >= 1
            deadline = time.monotonic() + 5 * TIME
            while counts[0] < 3 and time.monotonic() < deadline:
                sum(range(10000))
            assert counts[0] >= 3
        finally:
            for link in links:
                link.close()
        with pytest.raises(ValueError, match="frequency must be"):
            tracing.PerfEvent.cpu_clock(0, frequency=0)
        with pytest.raises(TypeError, match="PerfEvent or a perf event fd"):
            prog.attach_perf_event("x")


# ---- section names and collections --------------------------------------------------------------


@pytest.mark.nokernel
def test_section_names_as_libbpf_spells_them() -> None:
    for section in ("tracepoint/syscalls/sys_enter_openat", "tp/sched/sched_switch", "kprobe/do_unlinkat",
                    "kretprobe/do_unlinkat", "kprobe/do_unlinkat+0x10", "uprobe//usr/lib/libc.so.6:malloc",
                    "uretprobe//usr/lib/x86_64-linux-gnu/libc.so.6:malloc", "uprobe/libc.so.6:free", "raw_tp/sched_switch",
                    "raw_tracepoint/sys_enter", "fentry/do_unlinkat", "fexit/do_unlinkat", "fmod_ret/security_file_open",
                    "fentry.s/do_unlinkat", "tp_btf/sched_switch", "lsm/file_open"):
        assert tracing.section_attach(section) is not None, section
    for section in ("kprobe", "tracepoint/syscalls", "uprobe//usr/lib/libc.so.6", "xdp", "socket", "tc/ingress",
                    "fentry", "sk_msg", "raw_tp"):
        assert tracing.section_attach(section) is None, section


def test_collection_attach_all(tmp_path_factory: pytest.TempPathFactory) -> None:
    kprobes = KPROBE_PMU.exists() and _raw_fentry_errno() == 0
    path = bpf_object(tmp_path_factory.mktemp("tracing"), "tracing.c", *(["-DKPROBES"] if kprobes else []))
    me = os.getpid()
    with pybpf.load(path) as loaded:
        links = loaded.attach_all()
        assert sorted(links) == sorted(name for name in loaded.programs)
        with RingBuffer(loaded.maps["events"]) as reader:
            os.getppid()
            with pytest.raises(FileNotFoundError):
                os.unlink(os.path.join(tempfile.gettempdir(), f"pybpf-missing-{uuid.uuid4().hex}"))
            tags = records_of(reader.poll(1) + reader.poll(0.05), me)
            assert sorted(tags) == ([1, 2, 3, 4] if kprobes else [1])
            loaded.close()
            os.getppid()
            assert records_of(reader.poll(0.05), me) == []
