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
    ".programs.cgroup": "CgroupFlags",
    ".programs.sockfilter": "detach_socket",
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
        AttachType as AttachType,
        FileFlags as FileFlags,
        LinkType as LinkType,
        MapFlags as MapFlags,
        MapType as MapType,
        Pinning as Pinning,
        ProgramType as ProgramType,
        StatsType as StatsType,
        TestRunFlags as TestRunFlags,
        UpdateFlags as UpdateFlags,
    )
    from ._sys.rlimit import remove_memlock_limit as remove_memlock_limit
    from .btf import (
        BTF as BTF,
        BTFError as BTFError,
        BtfHandle as BtfHandle,
        BTFTypeWarning as BTFTypeWarning,
    )
    from .collection import Collection as Collection, CollectionSpec as CollectionSpec, load as load
    from .elf import ELFError as ELFError
    from .events import PerfBuffer as PerfBuffer, RingBuffer as RingBuffer, UserRingBuffer as UserRingBuffer
    from .errors import (
        BPFError as BPFError,
        BTFLoadError as BTFLoadError,
        IndexOutOfRangeError as IndexOutOfRangeError,
        KeyExistsError as KeyExistsError,
        KeyNotFoundError as KeyNotFoundError,
        MapFullError as MapFullError,
        NotSupportedError as NotSupportedError,
        PermissionDeniedError as PermissionDeniedError,
        VerifierError as VerifierError,
    )
    from .map import (
        BloomFilter as BloomFilter,
        Map as Map,
        MapInfo as MapInfo,
        MapOfMaps as MapOfMaps,
        MapSpec as MapSpec,
        ProgramArray as ProgramArray,
        QueueMap as QueueMap,
        ReuseportSockArray as ReuseportSockArray,
        SockHash as SockHash,
        SockMap as SockMap,
        XskMap as XskMap,
        maps as maps,
        possible_cpus as possible_cpus,
        socket_cookie as socket_cookie,
    )
    from .pins import UnsafePathError as UnsafePathError, make_pin_dir as make_pin_dir
    from .programs import (
        Link as Link,
        LinkInfo as LinkInfo,
        Program as Program,
        ProgramInfo as ProgramInfo,
        ProgramSpec as ProgramSpec,
        StatsHandle as StatsHandle,
        TestRun as TestRun,
        XdpMode as XdpMode,
        enable_stats as enable_stats,
    )
    from .programs.cgroup import CgroupFlags as CgroupFlags
    from .programs.sockfilter import detach_socket as detach_socket
