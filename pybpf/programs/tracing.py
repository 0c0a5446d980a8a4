"""Attaching programs to the kernel's event sources: tracepoints, raw tracepoints, kprobes,
uprobes, fentry/fexit/fmod_ret (BTF-typed tracing) and perf events (sampling).

Perf-event based attachments (tracepoints, kprobes, uprobes, perf events) open a perf event and
attach the program with a BPF link where the kernel has perf-event links (Linux 5.15+), else
with ``PERF_EVENT_IOC_SET_BPF``: that attachment has no kernel link, lasts as long as the event's
fd, and cannot be pinned. Which one is found by probing the kernel, not from its version.

``section_attach(section)`` maps a program's ELF section name, spelled as libbpf spells it
(``tracepoint/syscalls/sys_enter_openat``, ``kprobe/do_unlinkat``, ``uretprobe//lib/libc.so.6:malloc``,
``fentry/do_unlinkat``), to the call that attaches it, for ``Collection.attach_all()``.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import os
from collections.abc import Callable, Iterator
from typing import Any

from .. import features
from .._fd import FdOwner, fd_of
from .._sys import caps, commands, perf, tracefs
from .._sys.cpus import online_cpus
from .._sys.attrs import LinkCreateAttr, ProgLoadAttr, RawTracepointOpenAttr
from .._sys.constants import AttachType, Cmd, ProgramType
from .._sys.kernel import kernel_version, release_text
from .._sys.syscall import bpf, bpf_errno
from .._sys.traits import BTF_TARGETS, EVENT_SOURCES
from ..errors import BPFError, NotSupportedError, error_for
from .link import Link
from .symbols import function_offset, resolve_binary


_SECTION_TARGET_TYPES = {"fentry": AttachType.TRACE_FENTRY, "fexit": AttachType.TRACE_FEXIT,
                         "fmod_ret": AttachType.MODIFY_RETURN, "tp_btf": AttachType.TRACE_RAW_TP, "lsm": AttachType.LSM_MAC}


# ---- links without a kernel link --------------------------------------------------------------


class PerfEventLink(Link):
    """A program attached to a perf event with ``PERF_EVENT_IOC_SET_BPF`` (kernels before perf-event
    links, 5.15): owns the event's fd; closing it detaches. It has no kernel link, so it cannot be
    pinned, updated or described by ``info()``."""

    def _refuse(self, what: str) -> NotSupportedError:
        return NotSupportedError(errno.EOPNOTSUPP, what, self.name,
                                 message="this attachment was made with PERF_EVENT_IOC_SET_BPF because the kernel has no "
                                         "perf-event BPF links (Linux 5.15+): there is no kernel link; it lasts as long as "
                                         "this object's perf event fd",
                                 hint="keep this Link open for as long as the program should stay attached")

    def pin(self, path: str | os.PathLike[str]) -> None:
        """Refused: there is no kernel link to pin."""
        raise self._refuse("pin link")

    def info(self) -> Any:
        """Refused: there is no kernel link to describe."""
        raise self._refuse("get info of link")

    def update(self, program: Any, old: Any = None) -> None:
        """Refused: a perf event's program cannot be swapped."""
        raise self._refuse("update link")

    def detach(self) -> None:
        """Detach now by disabling the event (the fd stays open until ``close()``)."""
        perf.disable(self.fd)

    def __repr__(self) -> str:
        return f"<PerfEventLink {self.name!r} {'closed' if self.closed else f'fd={self._fd}'}>"


class PerfLink(Link):
    """A BPF link of a perf event (Linux 5.15+) that also keeps the event's fd, as libbpf does, so
    ``bpftool perf`` and ``pybpf perf list`` show the attachment; ``close()`` closes both."""

    def __init__(self, fd: int, name: str, event: PerfEvent) -> None:
        """Own the link fd and ``event``."""
        super().__init__(fd, name)
        self.event = event

    def close(self) -> None:
        """Detach (unless pinned) and close the event. Idempotent."""
        super().close()
        self.event.close()


class PerfEvent(FdOwner):
    """A perf event this process opened (a tracepoint, kprobe, uprobe or sampling event), to pass
    to ``Program.attach_perf_event``. Closing it destroys the event unless a link holds it."""

    _what = "perf event"

    def __init__(self, fd: int, name: str) -> None:
        """Wrap an event fd this object now owns."""
        self._own(fd)
        self.name = name

    @classmethod
    def cpu_clock(cls, cpu: int, frequency: int | None = 99, period: int | None = None) -> PerfEvent:
        """A software cpu-clock event on ``cpu`` that fires ``frequency`` times a second (or every
        ``period`` ns): a profiler's sampling clock."""
        _int_arg(cpu, "cpu", 0, 1 << 31)
        attr = perf.PerfEventAttr(type=perf.PERF_TYPE_SOFTWARE, config=perf.PERF_COUNT_SW_CPU_CLOCK)
        if period is not None:
            attr.sample_period = _int_arg(period, "period", 1, 1 << 63)
        elif frequency is not None:
            attr.sample_period = _int_arg(frequency, "frequency", 1, 1 << 31)
            attr.flags = perf.FLAG_FREQ
        else:
            raise ValueError("give frequency or period")
        name = f"cpu-clock on CPU {cpu}"
        return cls(perf.perf_event_open(attr, -1, cpu, "open perf event", name), name)

    def __repr__(self) -> str:
        return f"<PerfEvent {self.name!r} {'closed' if self.closed else f'fd={self._fd}'}>"


def _int_arg(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {value!r}")
    if not low <= value < high:
        raise ValueError(f"{what} must be in [{low}, {high}), not {value}")
    return value


# ---- probes -----------------------------------------------------------------------------------


def _perf_link_probe() -> int:
    """BPF_LINK_CREATE with attach type PERF_EVENT and a bad target fd: EBADF where the kernel
    knows the attach type for links (5.15+), EINVAL where not (cilium/ebpf's probe); 0 or errno."""
    code = (ctypes.c_uint64 * 2)(0xB7, 0x95)  # r0 = 0; exit
    license = ctypes.create_string_buffer(b"GPL")
    major, minor = kernel_version()
    prog_fd = bpf_errno(Cmd.PROG_LOAD, ProgLoadAttr(prog_type=ProgramType.KPROBE, insn_cnt=2, insns=ctypes.addressof(code),
                                                    license=ctypes.addressof(license), kern_version=major << 16 | minor << 8))
    if prog_fd < 0:
        return -prog_fd
    try:
        ret = bpf_errno(Cmd.LINK_CREATE, LinkCreateAttr(prog_fd=prog_fd, target_fd=(1 << 32) - 1, attach_type=AttachType.PERF_EVENT))
    finally:
        os.close(prog_fd)
    if ret >= 0:  # pragma: no cover - cannot happen with a bad fd
        os.close(ret)
        return 0
    return 0 if ret == -errno.EBADF else -ret


def _pmu_probe(pmu: str) -> Callable[[], int]:
    return lambda: 0 if perf.pmu_type(pmu) is not None else errno.ENOENT


features.FEATURES["perf_link"] = features.Feature(EVENT_SOURCES["tracepoint"].link_since, _perf_link_probe, "perf-event links")
features.FEATURES["kprobe_pmu"] = features.Feature(None, _pmu_probe("kprobe"), "kprobes (CONFIG_KPROBES)")
features.FEATURES["uprobe_pmu"] = features.Feature(None, _pmu_probe("uprobe"), "uprobes (CONFIG_UPROBES)")


def have_perf_link() -> bool:
    """Whether ``BPF_LINK_CREATE`` takes perf events (Linux 5.15+), by probing."""
    return features.have("perf_link")


def _need_pmu(pmu: str, config: str) -> int:
    found = perf.pmu_type(pmu)
    if found is None or not features.have(f"{pmu}_pmu"):
        raise NotSupportedError(errno.ENOENT, f"attach {pmu}",
                                message=f"this kernel has no {pmu} PMU ({perf.PMU_DEVICES}/{pmu} is missing): it was built "
                                        f"without {config}")
    return found


def _check_type(prog: Any, kind: str, how: str) -> None:
    if not hasattr(prog, "fd") or not hasattr(prog, "type"):
        raise TypeError(f"{how} needs a Program, not {prog!r}")
    prog.fd  # noqa: B018 - a closed program raises ValueError here, before any syscall
    allowed = EVENT_SOURCES[kind].program_types
    if prog.type not in allowed:
        got = getattr(prog.type, "name", prog.type)
        raise ValueError(f"{how} takes {' or '.join(t.name for t in allowed)} programs; {prog.name or 'this program'!r} is {got}")


# ---- perf-event attachments ------------------------------------------------------------------


def _attach_event(prog: Any, event_fd: int, name: str, use_link: bool | None, owned: bool) -> Link:
    """Attach ``prog`` to the perf event ``event_fd`` (closed here if ``owned`` and a kernel link
    now holds the event; otherwise owned by the returned ``PerfEventLink``)."""
    link = have_perf_link() if use_link is None else use_link
    try:
        if link:
            try:
                link_fd = commands.link_create(prog.fd, event_fd, AttachType.PERF_EVENT, name=prog.name)
            except BPFError as err:
                raise _explain_attach(err, prog, name) from None
            if not owned:
                return Link(link_fd, name)
            return PerfLink(link_fd, name, PerfEvent(event_fd, name))
        fd = event_fd if owned else os.dup(event_fd)
        made = PerfEventLink(fd, name)
        try:
            perf.set_bpf(fd, prog.fd, name)
            perf.enable(fd, name)
        except BPFError as err:
            made.close()
            raise _explain_attach(err, prog, name) from None
        return made
    except BaseException:
        if owned:
            perf.close_quietly(event_fd)
        raise


def _explain_attach(err: BPFError, prog: Any, name: str) -> BPFError:
    code = err.errno
    if code == errno.EEXIST:
        return BPFError(code, "attach program to", name, message="the program is already attached to this event")
    if code == errno.EINVAL:
        got = getattr(prog.type, "name", prog.type)
        return BPFError(code, "attach program to", name, message=f"the kernel refused a {got} program for this event "
                        "(a tracepoint takes TRACEPOINT programs, kprobes and uprobes KPROBE ones, sampling events PERF_EVENT ones)")
    return error_for(code or errno.EIO, "attach program to", name)


def attach_tracepoint(prog: Any, category: str, name: str, *, use_link: bool | None = None) -> Link:
    """Attach a TRACEPOINT program to tracepoint ``category:name`` (id from tracefs, which is
    mounted at /sys/kernel/tracing if needed)."""
    _check_type(prog, "tracepoint", "attach_tracepoint")
    where = f"tracepoint {category}:{name}"
    tp_id = tracefs.tracepoint_id(category, name)
    attr = perf.PerfEventAttr(type=perf.PERF_TYPE_TRACEPOINT, config=tp_id, sample_period=1, wakeup_events=1)
    fd = perf.perf_event_open(attr, -1, 0, "open perf event for", where)
    return _attach_event(prog, fd, where, use_link, owned=True)


def attach_kprobe(prog: Any, symbol: str, retprobe: bool = False, *, offset: int = 0, use_link: bool | None = None) -> Link:
    """Attach a KPROBE program to kernel function ``symbol`` (entry, or return with ``retprobe``)."""
    _check_type(prog, "kprobe", "attach_kprobe")
    if not isinstance(symbol, str) or not symbol or "\0" in symbol:
        raise ValueError(f"symbol must be a kernel function name, not {symbol!r}")
    _int_arg(offset, "offset", 0, 1 << 32)
    where = f"{'kretprobe' if retprobe else 'kprobe'} {symbol}" + (f"+{offset:#x}" if offset else "")
    pmu = _need_pmu("kprobe", "CONFIG_KPROBES")
    name = ctypes.create_string_buffer(symbol.encode())
    attr = perf.PerfEventAttr(type=pmu, sample_period=1, wakeup_events=1, config1=ctypes.addressof(name), config2=offset)
    if retprobe:
        attr.config = 1 << perf.retprobe_bit("kprobe")
    code = perf.perf_event_open_errno(attr, -1, 0)
    if code < 0:
        code = -code
        if code in (errno.ENOENT, errno.EINVAL):
            raise BPFError(code, "open", where, message=f"no kernel function {symbol!r} can be probed (it does not exist in "
                           "/proc/kallsyms, is inlined, or is on the kprobe blacklist)")
        raise error_for(code, "open", where, hint=perf._perf_hint(code))
    return _attach_event(prog, code, where, use_link, owned=True)


def attach_uprobe(prog: Any, path: str | os.PathLike[str], symbol: str | int, retprobe: bool = False,
                  pid: int | None = None, *, use_link: bool | None = None) -> Link:
    """Attach a KPROBE program to function ``symbol`` (``name``, ``name+off`` or a file offset) of
    the executable or shared library ``path``; with ``pid``, only in that process."""
    _check_type(prog, "uprobe", "attach_uprobe")
    if pid is not None:
        _int_arg(pid, "pid", 1, 1 << 31)
    binary = resolve_binary(path)
    if isinstance(symbol, str):
        offset = function_offset(binary, symbol)
    else:
        offset = _int_arg(symbol, "symbol offset", 0, 1 << 63)
    where = f"{'uretprobe' if retprobe else 'uprobe'} {binary}:{symbol}" + (f" pid {pid}" if pid else "")
    pmu = _need_pmu("uprobe", "CONFIG_UPROBES")
    encoded = ctypes.create_string_buffer(os.fsencode(binary))
    attr = perf.PerfEventAttr(type=pmu, sample_period=1, wakeup_events=1, config1=ctypes.addressof(encoded), config2=offset)
    if retprobe:
        attr.config = 1 << perf.retprobe_bit("uprobe")
    code = perf.perf_event_open_errno(attr, -1 if pid is None else pid, 0 if pid is None else -1)
    if code < 0:
        code = -code
        if code == errno.ESRCH:
            raise BPFError(code, "open", where, message=f"no process {pid}")
        raise error_for(code, "open", where, hint=perf._perf_hint(code))
    return _attach_event(prog, code, where, use_link, owned=True)


def attach_perf_event(prog: Any, event: Any, *, use_link: bool | None = None) -> Link:
    """Attach a program to a perf event (a ``PerfEvent`` or an event fd, not taken over: with the
    ``PERF_EVENT_IOC_SET_BPF`` fallback the program stays attached while any fd of it is open)."""
    _check_type(prog, "perf_event", "attach_perf_event")
    if isinstance(event, str):
        raise TypeError(f"event must be a PerfEvent or a perf event fd, not {event!r}")
    fd = fd_of(event, "event (a PerfEvent or a perf event fd)")
    return _attach_event(prog, fd, getattr(event, "name", f"perf event fd {fd}"), use_link, owned=False)


def attach_cpu_clock(prog: Any, frequency: int = 99, cpus: list[int] | None = None) -> list[Link]:
    """Sample every online CPU (or ``cpus``) ``frequency`` times a second with a PERF_EVENT
    program: one link per CPU (close them all to stop)."""
    _check_type(prog, "perf_event", "attach_cpu_clock")
    chosen = sorted(online_cpus()) if cpus is None else list(cpus)
    links: list[Link] = []
    try:
        for cpu in chosen:
            with PerfEvent.cpu_clock(cpu, frequency) as event:
                links.append(attach_perf_event(prog, event))
    except BaseException:
        for link in links:
            link.close()
        raise
    return links


@dataclasses.dataclass(frozen=True)
class PerfAttachment:
    """A program a process has attached through a perf event or raw tracepoint fd, as
    ``bpftool perf`` lists it: ``name`` is the tracepoint, kernel function or file."""

    pid: int
    fd: int
    prog_id: int
    fd_type: str
    name: str
    offset: int
    addr: int


def perf_attachments() -> Iterator[PerfAttachment]:
    """Every perf-event and raw-tracepoint attachment held by a process on the system (each
    process's fds asked with ``BPF_TASK_FD_QUERY``, as ``bpftool perf list``)."""
    for entry in sorted(os.listdir("/proc"), key=lambda e: (len(e), e)):
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:
            continue
        for fd in sorted(fds, key=int):
            try:
                target = os.readlink(f"/proc/{entry}/fd/{fd}")
            except OSError:
                continue
            if target not in ("anon_inode:[perf_event]", "anon_inode:bpf_link"):
                continue
            found = perf.task_fd_query(int(entry), int(fd))
            if found is not None:
                yield PerfAttachment(int(entry), int(fd), *found)


def tracepoint_fields(category: str, name: str) -> dict[str, tracefs.Field]:
    """The fields of tracepoint ``category:name``'s record (offset, size, signedness) by name, from
    tracefs: what a TRACEPOINT program reads from its context."""
    return tracefs.tracepoint_fields(category, name)


# ---- raw tracepoints and BTF-typed tracing -------------------------------------------------------


def attach_raw_tracepoint(prog: Any, name: str) -> Link:
    """Attach a RAW_TRACEPOINT program to the kernel tracepoint ``name`` (``sched_switch``)."""
    _check_type(prog, "raw_tracepoint", "attach_raw_tracepoint")
    tracefs.check_name(name, "raw tracepoint name")
    encoded = ctypes.create_string_buffer(name.encode())
    attr = RawTracepointOpenAttr(name=ctypes.addressof(encoded), prog_fd=prog.fd)
    where = f"raw tracepoint {name}"
    code = bpf_errno(Cmd.RAW_TRACEPOINT_OPEN, attr)
    if code == -errno.ENOENT:
        raise BPFError(errno.ENOENT, "attach", where, message=f"the kernel has no tracepoint {name!r}")
    if code < 0:
        raise error_for(-code, "attach", where)
    return Link(code, where)


def attach_tracing(prog: Any) -> Link:
    """Attach a TRACING (fentry/fexit/fmod_ret/tp_btf) or LSM program at the target it was loaded
    for (``ProgramSpec.attach_to``, else its section name)."""
    if not hasattr(prog, "fd") or prog.type not in (ProgramType.TRACING, ProgramType.LSM):
        got = getattr(getattr(prog, "type", None), "name", prog)
        raise ValueError(f"attach_tracing takes TRACING or LSM programs (fentry, fexit, fmod_ret, tp_btf, lsm), not {got}")
    attr = RawTracepointOpenAttr(name=0, prog_fd=prog.fd)
    where = f"tracing program {prog.name!r}"
    return Link(bpf(Cmd.RAW_TRACEPOINT_OPEN, attr, "attach", where), where)


def attach_btf_id(spec: Any) -> int:
    """The vmlinux BTF id of a BTF-typed program's target, from ``spec.attach_to`` or its section
    (``fentry/do_unlinkat``); 0 when the program type needs none."""
    kind = spec.expected_attach_type
    if spec.type not in (ProgramType.TRACING, ProgramType.LSM) or kind not in BTF_TARGETS:
        return 0
    target = getattr(spec, "attach_to", "") or _section_target(getattr(spec, "section", ""))
    if not target:
        raise ValueError(f"ProgramSpec.attach_to: a {AttachType(kind).name} program needs the kernel function (or "
                         "tracepoint) it attaches to")
    from ..btf import Kind, vmlinux

    prefix, kind_name = BTF_TARGETS[AttachType(kind)]
    try:
        found = vmlinux().find(prefix + target, Kind[kind_name])
    except OSError as err:
        raise NotSupportedError(err.errno or errno.ENOENT, "read vmlinux BTF", message="BTF-typed programs need the kernel's "
                                "BTF (/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF)") from None
    if not found:
        raise ValueError(f"ProgramSpec.attach_to: no {kind_name.lower()} {prefix + target!r} in the kernel's BTF "
                         "(/sys/kernel/btf/vmlinux; functions of modules are not supported)")
    return int(found[0].id)


def _section_target(section: str) -> str:
    head, _, rest = section.partition("/")
    return rest if head.removesuffix(".s") in _SECTION_TARGET_TYPES else ""


def explain_tracing_refusal(code: int, spec: Any) -> BPFError | None:
    """For a BTF-typed program the kernel refused with EPERM although the process has CAP_BPF and
    CAP_PERFMON: a NotSupportedError saying the kernel refuses tracing programs; else None."""
    if code != errno.EPERM or spec.type not in (ProgramType.TRACING, ProgramType.LSM):
        return None
    if not (caps.has(caps.CAP_BPF) and caps.has(caps.CAP_PERFMON)) and not caps.has(caps.CAP_SYS_ADMIN):
        return None
    release = release_text(kernel_version())
    held = "CAP_BPF and CAP_PERFMON" if caps.has(caps.CAP_BPF) and caps.has(caps.CAP_PERFMON) else ", ".join(caps.names())
    return NotSupportedError(code, "load program", spec.name, message=(
        f"this kernel ({release}) refuses {getattr(spec.type, 'name', spec.type)} programs although the process has "
        f"{held} (checked with capget): kernel lockdown, an LSM, or a build without BPF trampolines "
        "(CONFIG_FUNCTION_TRACER, DYNAMIC_FTRACE_WITH_DIRECT_CALLS)"), hint="use a kprobe or a tracepoint instead")


# ---- section names ---------------------------------------------------------------------------


def _tracepoint_section(rest: str) -> Callable[[Any], Link] | None:
    category, _, name = rest.partition("/")
    if not category or not name:
        return None
    return lambda prog: attach_tracepoint(prog, category, name)


def _probe_section(rest: str, retprobe: bool) -> Callable[[Any], Link] | None:
    if not rest:
        return None
    symbol, _, offset = rest.partition("+")
    return lambda prog: attach_kprobe(prog, symbol, retprobe, offset=int(offset, 0) if offset else 0)


def _uprobe_section(rest: str, retprobe: bool) -> Callable[[Any], Link] | None:
    path, sep, symbol = rest.rpartition(":")
    if not sep or not path or not symbol:
        return None
    return lambda prog: attach_uprobe(prog, path, symbol, retprobe)


_SECTIONS: dict[str, Callable[[str], Callable[[Any], Link] | None]] = {
    "tracepoint": _tracepoint_section,
    "tp": _tracepoint_section,
    "raw_tracepoint": lambda rest: (lambda prog: attach_raw_tracepoint(prog, rest)) if rest else None,
    "raw_tp": lambda rest: (lambda prog: attach_raw_tracepoint(prog, rest)) if rest else None,
    "raw_tracepoint.w": lambda rest: (lambda prog: attach_raw_tracepoint(prog, rest)) if rest else None,
    "raw_tp.w": lambda rest: (lambda prog: attach_raw_tracepoint(prog, rest)) if rest else None,
    "kprobe": lambda rest: _probe_section(rest, False),
    "kretprobe": lambda rest: _probe_section(rest, True),
    "uprobe": lambda rest: _uprobe_section(rest, False),
    "uretprobe": lambda rest: _uprobe_section(rest, True),
    "uprobe.s": lambda rest: _uprobe_section(rest, False),
    "uretprobe.s": lambda rest: _uprobe_section(rest, True),
    **{kind: (lambda rest: (lambda prog: attach_tracing(prog)) if rest else None) for kind in
       ("fentry", "fexit", "fmod_ret", "fentry.s", "fexit.s", "fmod_ret.s", "tp_btf", "lsm", "lsm.s")},
}


def section_attach(section: str) -> Callable[[Any], Link] | None:
    """The call that attaches a program of ELF section ``section`` (libbpf's spelling), or None
    when the section does not say where (``kprobe`` alone, ``xdp``, ``socket``, ...)."""
    head, sep, rest = section.partition("/")
    if not sep:
        return None
    make = _SECTIONS.get(head)
    return make(rest) if make is not None else None


def attach_programs(programs: dict[str, Any]) -> dict[str, Link]:
    """Attach each program whose ``section`` says where (see ``section_attach``), by name; if one
    fails, the ones attached so far are detached and the error says which program failed."""
    links: dict[str, Link] = {}
    try:
        for name, prog in programs.items():
            attach = section_attach(getattr(prog, "section", ""))
            if attach is None:
                continue
            try:
                links[name] = attach(prog)
            except BPFError as err:
                err.add_note(f"while attaching program {name!r} (section {prog.section!r})")
                raise
    except BaseException:
        for link in links.values():
            link.close()
        raise
    return links
