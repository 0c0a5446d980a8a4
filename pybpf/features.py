"""What the running kernel can do: one matrix of feature -> (release that brought it, probe).

A probe asks the kernel directly (a tiny map, a two-instruction program, a BTF blob) through the
current door, never through pybpf's own checks, so "pybpf refuses this" never reads as "the kernel
lacks this". Answers are cached per door. Each map type, program type and helper is a feature;
so are named mechanisms (``"sockmap_link"``, ``"batch_ops"``, ...). ``require`` and ``lacking``
turn a missing feature into words: the release it needs, or that this kernel refuses it although
the process has the capabilities (configuration or policy).

Row names: ``map_type:HASH``, ``program_type:XDP``, ``helper:XDP:redirect_map`` and the names in
``FEATURES``. bpftool's ``feature probe`` is the reference for the probes.
"""

from __future__ import annotations

import dataclasses
import errno

from ._sys import caps, probes, rlimit
from ._sys.constants import AttachType, MapFlags, MapType, ProgramType
from ._sys.kernel import kernel_has, kernel_version, release_text
from ._sys.probes import Probe
from ._sys.syscall import door
from ._sys.traits import ATTACH_TYPES, MAP_TYPES, PROGRAM_TYPES, Release
from .errors import NotSupportedError

__all__ = [
    "FEATURES", "Feature", "have", "have_batch_ops", "have_helper", "have_map_flag", "have_map_type",
    "have_program_type", "kernel_has", "kernel_version", "lacking", "probe_all", "require",
]

@dataclasses.dataclass(frozen=True)
class Feature:
    """One row: the release that brought the feature (None: not tied to one) and how to ask."""

    since: Release | None
    probe: Probe
    what: str
    """How messages name it: "SOCKHASH maps", "sockmap links"."""


# ---- the matrix -----------------------------------------------------------------------------

FEATURES: dict[str, Feature] = {
    **{f"map_type:{t.name}": Feature(tr.since, probes.map_create(t), f"{t.name} maps") for t, tr in MAP_TYPES.items()},
    **{f"program_type:{t.name}": Feature(tr.since, probes.program_load(t), f"{t.name} programs")
       for t, tr in PROGRAM_TYPES.items()},
    **{f"sockmap_attach:{t.name}": Feature(ATTACH_TYPES[t].since, probes.sockmap_attach(t), f"{t.name} programs on socket maps")
       for t in (AttachType.SK_MSG_VERDICT, AttachType.SK_SKB_STREAM_PARSER, AttachType.SK_SKB_STREAM_VERDICT,
                 AttachType.SK_SKB_VERDICT)},
    "batch_ops": Feature((5, 6), probes.batch_ops(), "batch map operations"),
    **{f"batch_ops:{t.name}": Feature((5, 6), probes.batch_ops(t), f"batch operations on {t.name} maps")
       for t, tr in MAP_TYPES.items() if tr.batch},
    "hash_lookup_and_delete": Feature((5, 14), probes.hash_lookup_and_delete, "lookup-and-delete on hash maps"),
    "mmapable_array": Feature((5, 5), probes.map_create(MapType.ARRAY, MapFlags.MMAPABLE), "memory-mapped ARRAY maps"),
    "sockmap_link": Feature(ATTACH_TYPES[AttachType.SK_MSG_VERDICT].link_since, probes.sockmap_link, "sockmap links"),
    "sockmap_query": Feature((6, 0), probes.sockmap_query, "queries of a socket map's programs"),
    "memcg_accounting": Feature((5, 11), probes.memcg_accounting, "memory-cgroup accounting of BPF memory"),
}
"""Every feature pybpf can ask about. Other modules add rows with ``FEATURES[name] = Feature(...)``."""

_answers: dict[tuple[int, str], int] = {}


def _answer(name: str) -> int:
    """The feature's probe result (0: present, else an errno), cached per door."""
    key = (id(door()), name)
    if key not in _answers:
        try:
            feature = FEATURES[name]
        except KeyError:
            raise ValueError(f"unknown feature {name!r}") from None
        _answers[key] = feature.probe()
    return _answers[key]


def have(name: str) -> bool:
    """Whether the running kernel has the feature ``name`` (a row of ``FEATURES``)."""
    return _answer(name) == 0


def lacking(name: str, code: int = 0, what: str = "") -> str | None:
    """Why the kernel lacks feature ``name``, in words (None when it has it): the release that
    brought it, or that it refuses it although the process has the capabilities."""
    if name not in FEATURES or have(name):
        return None
    feature = FEATURES[name]
    what = what or feature.what
    running = release_text(kernel_version())
    if feature.since is not None and not kernel_has(feature.since):
        return f"{what} need Linux {release_text(feature.since)}; this is {running}"
    found = _answer(name)
    if found in (errno.EPERM, errno.EACCES):
        if not caps.can_bpf() or rlimit.refusal():
            return None  # the process is refused, not the feature: the error's hint says why
        return (f"this kernel ({running}) refuses {what} although the process has {', '.join(caps.names())} "
                f"(errno {found}: its configuration or a security policy)")
    return f"this kernel ({running}) lacks {what} (built without them, or refused: errno {found or code})"


def require(name: str, what: str = "") -> None:
    """Raise ``NotSupportedError`` saying why, when the kernel lacks feature ``name``."""
    why = lacking(name, what=what)
    if why is not None:
        raise NotSupportedError(_answer(name) or errno.EOPNOTSUPP, f"use {what or FEATURES[name].what}", message=why)


def have_map_type(map_type: MapType | int) -> bool:
    """Whether this kernel can create maps of ``map_type`` (by creating a tiny one). Linux 3.19+."""
    return have(f"map_type:{MapType(map_type).name}")


def have_program_type(prog_type: ProgramType | int) -> bool:
    """Whether this kernel loads programs of ``prog_type`` (a two-instruction program)."""
    return have(f"program_type:{ProgramType(prog_type).name}")


def have_map_flag(map_type: MapType | int, flag: MapFlags | int) -> bool:
    """Whether ``map_type`` accepts ``flag`` at creation (e.g. ARRAY with MMAPABLE)."""
    name = f"map_flag:{MapType(map_type).name}:{MapFlags(flag).name}"
    if name not in FEATURES:
        FEATURES[name] = Feature(None, probes.map_create(MapType(map_type), int(flag)),
                                 f"{MapType(map_type).name} maps with {flag!r}")
    return have(name)


def have_batch_ops() -> bool:
    """Whether ``BPF_MAP_*_BATCH`` works on hash maps (Linux 5.6+)."""
    return have("batch_ops")


def have_helper(prog_type: ProgramType | int, helper: int) -> bool:
    """Whether programs of ``prog_type`` may call helper number ``helper`` (bpftool's probe: the
    verifier's log must not say "invalid func" or "unknown func"). Types that load only against a
    kernel BTF target (tracing, LSM, EXT, STRUCT_OPS) are not probed: False, as bpftool."""
    kind = ProgramType(prog_type)
    name = f"helper:{kind.name}:{int(helper)}"
    if name not in FEATURES:
        FEATURES[name] = Feature(None, probes.helper(kind, int(helper)), f"helper {int(helper)} in {kind.name} programs")
    return have(name)


def probe_all() -> dict[str, object]:
    """Every map type, program type and helper answer, shaped for comparing with bpftool's
    ``feature probe``: ``{"map_types": {name: bool}, "program_types": {...}, "helpers": {prog: [ids]}}``."""
    from .asm.helpers import Helper

    programs = {t.name: have_program_type(t) for t in PROGRAM_TYPES}
    helpers = {t.name: [h.name for h in Helper if h and have_helper(t, h)] for t in PROGRAM_TYPES if programs[t.name]}
    return {"map_types": {t.name: have_map_type(t) for t in MAP_TYPES}, "program_types": programs, "helpers": helpers}
