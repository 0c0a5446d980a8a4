"""pybpf: eBPF maps, socket maps and AF_XDP from pure Python, over the real ``bpf(2)``.

Names are imported on first use (PEP 562), so ``import pybpf`` costs almost nothing and a program
pays only for what it touches (``pybpf.Map`` does not load BTF, ELF, AF_XDP or the programs).
"""

from __future__ import annotations

import importlib
TYPE_CHECKING = False  # typing costs ~3 ms to import; type checkers read the block below anyway

__version__ = "0.1.0"

_WHERE = {
    "._sys.constants": "AttachType FileFlags LinkType MapFlags MapType Pinning ProgramType StatsType TestRunFlags UpdateFlags",
    "._sys.rlimit": "remove_memlock_limit",
    ".errors": "BPFError BTFLoadError IndexOutOfRangeError KeyExistsError KeyNotFoundError MapFullError "
               "NotSupportedError PermissionDeniedError VerifierError",
    ".map": "BloomFilter Map MapInfo MapOfMaps MapSpec ProgramArray QueueMap ReuseportSockArray SockHash SockMap "
            "XskMap maps possible_cpus socket_cookie",
    ".pins": "UnsafePathError make_pin_dir",
    ".programs": "Link LinkInfo Program ProgramInfo ProgramSpec StatsHandle TestRun XdpMode enable_stats",
    ".btf": "BTF BTFError BtfHandle BTFTypeWarning",
    ".collection": "Collection CollectionSpec load",
    ".elf": "ELFError",
    ".events": "PerfBuffer RingBuffer UserRingBuffer",
}
_NAMES = {name: module for module, names in _WHERE.items() for name in names.split()}
_SUBMODULES = {"apps", "asm", "btf", "cli", "collection", "elf", "errors", "events", "features", "map", "pins",
               "programs", "testing", "xdp"}


def __getattr__(name: str) -> object:
    """Import a public name (or a subpackage) the first time it is used."""
    if name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name], __name__), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'pybpf' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_NAMES, *_SUBMODULES])


__all__ = sorted(_NAMES)

if TYPE_CHECKING:  # the same names, for type checkers and editors
    from ._sys.constants import (
        AttachType,
        FileFlags,
        LinkType,
        MapFlags,
        MapType,
        Pinning,
        ProgramType,
        StatsType,
        TestRunFlags,
        UpdateFlags,
    )
    from ._sys.rlimit import remove_memlock_limit
    from .btf import BTF, BTFError, BtfHandle, BTFTypeWarning
    from .collection import Collection, CollectionSpec, load
    from .elf import ELFError
    from .events import PerfBuffer, RingBuffer, UserRingBuffer
    from .errors import (
        BPFError,
        BTFLoadError,
        IndexOutOfRangeError,
        KeyExistsError,
        KeyNotFoundError,
        MapFullError,
        NotSupportedError,
        PermissionDeniedError,
        VerifierError,
    )
    from .map import (
        BloomFilter,
        Map,
        MapInfo,
        MapOfMaps,
        MapSpec,
        ProgramArray,
        QueueMap,
        ReuseportSockArray,
        SockHash,
        SockMap,
        XskMap,
        maps,
        possible_cpus,
        socket_cookie,
    )
    from .pins import UnsafePathError, make_pin_dir
    from .programs import Link, LinkInfo, Program, ProgramInfo, ProgramSpec, StatsHandle, TestRun, XdpMode, enable_stats
