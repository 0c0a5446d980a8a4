"""``Program``: a loaded BPF program that owns its fd."""

from __future__ import annotations

import ctypes
import os
import socket
import struct
from collections.abc import Iterator
from typing import Any, NamedTuple

from .._fd import FdOwner, fd_of
from .._sys import commands, prog
from .._sys.attrs import ProgLoadAttr, TestRunAttr, check_uint
from .._sys.constants import AttachType, Cmd, ProgramType, TestRunFlags, known
from ..errors import BPFError
from . import attach as _attach
from . import cgroup as _cgroup
from . import netns as _netns
from . import sockfilter as _sockfilter
from . import tc as _tc
from . import tracing as _tracing
from .info import ProgramInfo
from .link import Link
from .spec import ProgramSpec

_FUNC_INFO = struct.Struct("=II")  # struct bpf_func_info
_LINE_INFO = struct.Struct("=IIII")  # struct bpf_line_info


class TestRun(NamedTuple):
    """What ``Program.test_run`` gives back: the return value, the output packet, ns per run."""

    retval: int
    data: bytes
    duration: int


class Program(FdOwner):
    """A loaded BPF program. Load with ``Program.load(spec)``; open with ``from_pin``, ``from_id``,
    ``from_fd``. Closing the last fd unloads it unless it is pinned or attached.

    ``verifier_log`` holds the verifier's text when loaded with ``log_level`` > 0.
    """

    _what = "program"

    def __init__(self, fd: int, type: ProgramType | int, name: str = "", *,
                 expected_attach_type: AttachType | int | None = None, verifier_log: str = "") -> None:
        """Wrap a program fd this object now owns."""
        self._own(fd)
        self.type: ProgramType | int = known(ProgramType, type)
        self.name = name
        self.expected_attach_type = expected_attach_type
        self.verifier_log = verifier_log
        self.section = ""
        """The ELF section the program was loaded from (libbpf's name says where it attaches), or ""."""
        self._id: int | None = None

    # ---- construction -----------------------------------------------------------------------

    @classmethod
    def load(cls, spec: ProgramSpec, log_level: int = 0) -> Program:
        """Load ``spec`` (``BPF_PROG_LOAD``); a refusal raises ``VerifierError`` with the log.

        ``log_level`` 1 or 2 keeps the verifier's log of a successful load in ``verifier_log``.
        """
        spec.validate()
        insns = spec.instructions()
        code = ctypes.create_string_buffer(insns, len(insns))
        license = ctypes.create_string_buffer(spec.license.encode())
        attr = ProgLoadAttr(
            prog_type=spec.type,
            insn_cnt=len(code) // 8,
            insns=ctypes.addressof(code),
            license=ctypes.addressof(license),
            kern_version=spec.kern_version,
            prog_flags=spec.flags,
            prog_name=spec.name.encode(),
            expected_attach_type=spec.expected_attach_type or 0,
        )
        _keep = _set_btf(attr, spec)  # noqa: F841 - the record buffers must outlive the syscall
        attr.attach_btf_id = _tracing.attach_btf_id(spec)
        try:
            fd, log = prog.prog_load(attr, spec.name, log_level)
        except BPFError as err:
            refused = _tracing.explain_tracing_refusal(err.errno, spec)
            if refused is not None:
                raise refused from None
            raise
        loaded = cls(fd, spec.type, spec.name, expected_attach_type=spec.expected_attach_type, verifier_log=log)
        loaded.section = getattr(spec, "section", "")
        return loaded

    @classmethod
    def from_pin(cls, path: str | os.PathLike[str]) -> Program:
        """Open a program pinned in bpffs."""
        return cls._from_owned_fd(commands.obj_get(os.fspath(path), what="program"))

    @classmethod
    def from_id(cls, prog_id: int) -> Program:
        """Open the program with kernel id ``prog_id``."""
        return cls._from_owned_fd(commands.fd_by_id(Cmd.PROG_GET_FD_BY_ID, prog_id, "open program"))

    @classmethod
    def from_fd(cls, fd: int) -> Program:
        """A ``Program`` for a duplicate of ``fd`` (the caller keeps its own fd)."""
        return cls._from_owned_fd(os.dup(fd_of(fd, "fd")))

    @classmethod
    def _from_owned_fd(cls, fd: int) -> Program:
        try:
            kind = commands.object_kind(fd)
            if kind != "program":
                raise TypeError(f"fd {fd} holds {'a ' + kind if kind else 'no BPF object'}, not a program")
            raw = commands.prog_info(fd)
        except BaseException:
            os.close(fd)
            raise
        new = cls(fd, raw.type, raw.name.decode(errors="replace"))
        new._id = raw.id
        return new

    # ---- lifetime ---------------------------------------------------------------------------

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"fd={self._fd}"
        return f"<Program {self.name!r} {getattr(self.type, 'name', self.type)} {state}>"

    # ---- identity ---------------------------------------------------------------------------

    @property
    def id(self) -> int:
        """The kernel's id for this program."""
        if self._id is None:
            self._id = self.info().id
        return self._id

    @property
    def tag(self) -> str:
        """The program's tag: a hash of its instructions, in hex (as bpftool shows it)."""
        return self.info().tag

    def info(self) -> ProgramInfo:
        """What the kernel reports about this program, with the ids of the maps it uses."""
        raw = commands.prog_info(self.fd, self.name)
        return ProgramInfo.from_struct(raw, prog.prog_map_ids(self.fd, raw.nr_map_ids, self.name))

    def pin(self, path: str | os.PathLike[str]) -> None:
        """Pin the program at ``path`` in bpffs so it outlives this fd and process."""
        commands.obj_pin(self.fd, os.fspath(path), what=f"program {self.name!r}" if self.name else "program")

    # ---- running and attaching --------------------------------------------------------------

    def test_run(self, data: bytes = b"", repeat: int = 0, ctx: bytes | None = None, *, flags: int = 0,
                 cpu: int = 0, batch_size: int = 0) -> TestRun:
        """Run the program in the kernel (``BPF_PROG_TEST_RUN``) on ``data`` and ``ctx``.

        ``repeat`` 0 runs once and is what every type accepts (raw tracepoint and syscall programs
        refuse any other); ``flags`` are ``TestRunFlags`` (e.g. ``XDP_LIVE_FRAMES``, Linux 5.18+,
        with ``batch_size``); ``cpu`` with ``TestRunFlags.RUN_ON_CPU``. Supported for socket
        filter, tc, XDP, flow dissector, raw tracepoint, syscall and a few more types; others
        raise ``NotSupportedError``.
        """
        repeat, flags = check_uint(repeat, "repeat"), check_uint(flags, "flags")
        cpu, batch_size = check_uint(cpu, "cpu"), check_uint(batch_size, "batch_size")
        data = bytes(data)
        data_in = ctypes.create_string_buffer(data, len(data))
        out_size = len(data) + 4096 if data and not flags & TestRunFlags.XDP_LIVE_FRAMES else 0
        data_out = ctypes.create_string_buffer(out_size)
        ctx_in = ctypes.create_string_buffer(bytes(ctx), len(ctx)) if ctx is not None else None
        attr = TestRunAttr(
            prog_fd=self.fd,
            data_size_in=len(data),
            data_in=ctypes.addressof(data_in) if data else 0,
            data_size_out=out_size,
            data_out=ctypes.addressof(data_out) if out_size else 0,
            repeat=repeat,
            ctx_size_in=len(ctx) if ctx is not None else 0,
            ctx_in=ctypes.addressof(ctx_in) if ctx_in is not None else 0,
            flags=flags,
            cpu=cpu,
            batch_size=batch_size,
        )
        prog.prog_test_run(attr, self.name)
        return TestRun(attr.retval, data_out.raw[: attr.data_size_out], attr.duration)

    def attach(self, target: Any, attach_type: AttachType | int, flags: int = 0) -> None:
        """Attach to a SOCKMAP/SOCKHASH (``BPF_PROG_ATTACH``) as ``SK_MSG_VERDICT``,
        ``SK_SKB_STREAM_PARSER``, ``SK_SKB_STREAM_VERDICT`` or ``SK_SKB_VERDICT``."""
        _attach.attach_map(self, target, attach_type, flags)

    def detach(self, target: Any, attach_type: AttachType | int) -> None:
        """Undo ``attach`` (``BPF_PROG_DETACH``)."""
        _attach.detach_map(self, target, attach_type)

    def link(self, target: Any, attach_type: AttachType | int) -> Link:
        """Attach to a socket map with a link (Linux 6.10+): closing the ``Link`` detaches."""
        return _attach.link_map(self, target, attach_type)

    def attach_xdp(self, interface: str | int, mode: _attach.XdpMode | int = _attach.XdpMode.AUTO) -> Link:
        """Attach this XDP program to an interface (name or index) with a link; close it to detach.

        ``mode`` is ``XdpMode.SKB``, ``DRV`` or ``HW`` (default: the kernel picks). To swap programs
        without a gap use ``Link.update``.
        """
        return _attach.attach_xdp(self, interface, mode)

    def attach_reuseport(self, sock: socket.socket | int) -> None:
        """Select sockets of ``sock``'s SO_REUSEPORT group with this program (``SO_ATTACH_REUSEPORT_EBPF``)."""
        _attach.attach_reuseport(self, sock)

    def detach_reuseport(self, sock: socket.socket | int) -> None:
        """Remove the program of ``sock``'s SO_REUSEPORT group (``SO_DETACH_REUSEPORT_BPF``)."""
        _attach.detach_reuseport(sock)

    def attach_cgroup(self, cgroup: str | os.PathLike[str] | int, attach_type: AttachType | int,
                      flags: int | None = None) -> Link:
        """Attach to a cgroup v2 directory (path or fd) at ``attach_type``; close the ``Link`` to
        detach. A kernel link, or ``BPF_PROG_ATTACH`` (unpinnable Link) where links are missing
        or ``flags`` (``CgroupFlags``) are given."""
        return _cgroup.attach_cgroup(self, cgroup, attach_type, flags)

    def attach_netns(self, netns: str | os.PathLike[str] | int | None = None) -> Link:
        """Attach this SK_LOOKUP or FLOW_DISSECTOR program to a network namespace (a path such
        as ``/run/netns/NAME``, an fd the caller keeps, or None: this thread's)."""
        return _netns.attach_netns(self, netns)

    def attach_tc(self, interface: str | int, direction: str = "ingress", *, mechanism: str = "auto",
                  priority: int | None = None) -> Link:
        """Attach this SCHED_CLS program to ``interface`` on "ingress" or "egress": a tcx link
        (Linux 6.6+) or a clsact qdisc with a direct-action bpf filter over rtnetlink."""
        return _tc.attach_tc(self, interface, direction, mechanism=mechanism, priority=priority)

    def attach_socket(self, sock: socket.socket | int) -> None:
        """Filter what ``sock`` receives with this SOCKET_FILTER program (``SO_ATTACH_BPF``);
        ``pybpf.detach_socket(sock)`` removes it."""
        _sockfilter.attach_socket(self, sock)

    def attach_tracepoint(self, category: str, name: str) -> Link:
        """Attach this TRACEPOINT program to ``category:name`` (e.g. ``syscalls``, ``sys_enter_openat``)."""
        return _tracing.attach_tracepoint(self, category, name)

    def attach_raw_tracepoint(self, name: str) -> Link:
        """Attach this RAW_TRACEPOINT program to the kernel tracepoint ``name`` (e.g. ``sched_switch``)."""
        return _tracing.attach_raw_tracepoint(self, name)

    def attach_kprobe(self, symbol: str, retprobe: bool = False) -> Link:
        """Attach this KPROBE program to kernel function ``symbol`` (its return with ``retprobe``).
        ``NotSupportedError`` on a kernel built without kprobes."""
        return _tracing.attach_kprobe(self, symbol, retprobe)

    def attach_uprobe(self, path: str | os.PathLike[str], symbol: str | int, retprobe: bool = False,
                      pid: int | None = None) -> Link:
        """Attach this KPROBE program to function ``symbol`` of executable or library ``path``
        (its return with ``retprobe``); with ``pid``, in that process only."""
        return _tracing.attach_uprobe(self, path, symbol, retprobe, pid)

    def attach_tracing(self) -> Link:
        """Attach this fentry/fexit/fmod_ret/tp_btf/LSM program at the target it was loaded for."""
        return _tracing.attach_tracing(self)

    def attach_perf_event(self, fd: Any) -> Link:
        """Attach to a perf event (a ``PerfEvent`` or an event fd, not taken over), e.g. a sampling clock."""
        return _tracing.attach_perf_event(self, fd)


def _set_btf(attr: ProgLoadAttr, spec: ProgramSpec) -> list[ctypes.Array[ctypes.c_char]]:
    """Fill ``prog_btf_fd``, ``func_info`` and ``line_info`` from ``spec``; the buffers to keep alive."""
    if spec.btf is None:
        return []
    attr.prog_btf_fd = spec.btf.fd
    funcs = b"".join(_FUNC_INFO.pack(f.insn_off, f.type_id) for f in spec.func_info)
    lines = b"".join(_LINE_INFO.pack(i.insn_off, i.file_name_off, i.line_off, i.line << 10 | i.column) for i in spec.line_info)
    kept = []
    if funcs:
        kept.append(buf := ctypes.create_string_buffer(funcs, len(funcs)))
        attr.func_info_rec_size, attr.func_info, attr.func_info_cnt = _FUNC_INFO.size, ctypes.addressof(buf), len(spec.func_info)
    if lines:
        kept.append(buf := ctypes.create_string_buffer(lines, len(lines)))
        attr.line_info_rec_size, attr.line_info, attr.line_info_cnt = _LINE_INFO.size, ctypes.addressof(buf), len(spec.line_info)
    return kept


def loaded_programs() -> Iterator[ProgramInfo]:
    """Every program loaded on the system (via ``BPF_PROG_GET_NEXT_ID``), holding no fds;
    programs unloaded meanwhile are skipped."""
    for fd in commands.each_fd(Cmd.PROG_GET_NEXT_ID, Cmd.PROG_GET_FD_BY_ID, "program"):
        with Program._from_owned_fd(fd) as found:
            info = found.info()
        yield info
