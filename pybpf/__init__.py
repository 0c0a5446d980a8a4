"""pybpf: eBPF maps, socket maps and AF_XDP from pure Python, over the real ``bpf(2)``."""

from ._sys.constants import AttachType, FileFlags, LinkType, MapFlags, MapType, Pinning, ProgramType, UpdateFlags
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

from .programs import Link, LinkInfo, Program, ProgramInfo, ProgramSpec, TestRun, XdpMode
from .programs import CgroupFlags, detach_socket

__version__ = "0.1.0"

_LAZY = {
    "BTF": "btf", "BTFError": "btf", "BtfHandle": "btf",
    "CollectionSpec": "collection", "Collection": "collection", "load": "collection", "ELFError": "elf",
}


def __getattr__(name: str) -> object:
    """BTF and ELF names are imported on first use: most programs need neither (they cost ~45 ms
    and pyelftools)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'pybpf' has no attribute {name!r}")

__all__ = [
    "AttachType",
    "BPFError",
    "BTF",
    "BTFError",
    "BTFLoadError",
    "BtfHandle",
    "Collection",
    "CollectionSpec",
    "ELFError",
    "Link",
    "LinkInfo",
    "Program",
    "ProgramInfo",
    "ProgramSpec",
    "TestRun",
    "XdpMode",
    "BloomFilter",
    "FileFlags",
    "IndexOutOfRangeError",
    "KeyExistsError",
    "KeyNotFoundError",
    "LinkType",
    "Map",
    "MapFlags",
    "MapFullError",
    "MapInfo",
    "MapOfMaps",
    "MapSpec",
    "MapType",
    "NotSupportedError",
    "PermissionDeniedError",
    "Pinning",
    "ProgramArray",
    "ProgramType",
    "QueueMap",
    "ReuseportSockArray",
    "SockHash",
    "SockMap",
    "UpdateFlags",
    "VerifierError",
    "XskMap",
    "load",
    "maps",
    "possible_cpus",
    "socket_cookie",
    "CgroupFlags",
    "detach_socket",
]
