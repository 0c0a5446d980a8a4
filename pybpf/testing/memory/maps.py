"""The common ground of the memory kernel's maps: the create request, the checks every map type
shares (``map_create`` in the kernel's ``syscall.c``), and the element interface each type
implements with the kernel's errnos.

Keys and values cross this interface as ``bytes`` of the sizes the kernel copies from and to user
space (``value_in``: per-CPU values are one 8-byte-aligned slot per possible CPU, maps of maps and
program arrays take a 4-byte fd). Every refusal raises ``Errno``.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from ..._sys.constants import Cmd, MapFlags, MapType, UpdateFlags
from ..._sys.traits import map_traits
from ..._sys.cpus import possible_cpus
from .objects import ENOTSUPP, Errno, MemObject

if TYPE_CHECKING:
    from .kernel import MemoryKernel
    from .programs import MemBtf

ACCESS_MASK = int(MapFlags.RDONLY | MapFlags.WRONLY | MapFlags.RDONLY_PROG | MapFlags.WRONLY_PROG)
"""``BPF_F_ACCESS_MASK``."""
FD_ONLY_FLAGS = int(MapFlags.RDONLY | MapFlags.WRONLY)
"""Flags that belong to the fd, not the map: the kernel drops them from the map's own flags."""
LOCK = int(UpdateFlags.LOCK)
NOEXIST, EXIST = int(UpdateFlags.NOEXIST), int(UpdateFlags.EXIST)


@dataclasses.dataclass
class CreateRequest:
    """The fields of ``BPF_MAP_CREATE`` the memory kernel uses, with the fds already resolved."""

    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    name: str
    numa_node: int = -1
    map_extra: int = 0
    inner: MemMap | None = None
    btf: MemBtf | None = None
    btf_key_type_id: int = 0
    btf_value_type_id: int = 0


@functools.cache
def online_nodes() -> frozenset[int]:
    """The NUMA nodes online (``node_online``): node 0 on a machine without NUMA."""
    try:
        with open("/sys/devices/system/node/online") as f:
            text = f.read().strip()
    except OSError:
        return frozenset({0})
    nodes: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        nodes.update(range(int(lo), int(hi or lo) + 1))
    return frozenset(nodes)


def access_ok(flags: int) -> bool:
    """``bpf_map_flags_access_ok``: not both read-only and write-only for programs."""
    both = int(MapFlags.RDONLY_PROG | MapFlags.WRONLY_PROG)
    return flags & both != both


def round8(size: int) -> int:
    return (size + 7) & ~7


class MemMap(MemObject):
    """A map of the memory kernel. Subclasses implement the element operations of their types."""

    kind = "map"
    types: ClassVar[tuple[MapType, ...]] = ()
    batch_commands: ClassVar[frozenset[int]] = frozenset()
    """Which ``BPF_MAP_*_BATCH`` commands the type has (the others are ENOTSUPP)."""
    fd_values: ClassVar[bool] = False
    """Values are written as a 4-byte fd (``IS_FD_MAP``)."""

    def __init__(self, req: CreateRequest, kernel: MemoryKernel) -> None:
        super().__init__(req.name)
        self.kernel = kernel
        self.type = req.type
        self.key_size = req.key_size
        self.value_size = req.value_size
        self.max_entries = req.max_entries
        self.flags = req.flags & ~FD_ONLY_FLAGS
        self.map_extra = req.map_extra
        self.numa_node = req.numa_node
        self.btf_id = req.btf.id if req.btf is not None else 0
        self.btf_key_type_id = req.btf_key_type_id
        self.btf_value_type_id = req.btf_value_type_id
        self.btf = req.btf
        if req.btf is not None:
            kernel.hold(req.btf)
        self.frozen = False
        self.percpu = bool(map_traits(req.type) and map_traits(req.type).percpu)  # type: ignore[union-attr]
        self.value_in = self._value_in()
        """Bytes of a value as user space passes and receives it (``bpf_map_value_size``)."""

    def _value_in(self) -> int:
        if self.percpu:
            return round8(self.value_size) * possible_cpus()
        if self.fd_values:
            return 4
        return self.value_size

    @classmethod
    def check(cls, req: CreateRequest) -> None:
        """The type's ``map_alloc_check`` and ``map_alloc`` refusals (Errno), before anything exists."""

    def released(self) -> list[MemObject]:
        return [self.btf] if self.btf is not None else []

    def info(self) -> dict[str, Any]:
        return {
            "type": self.type, "id": self.id, "key_size": self.key_size, "value_size": self.value_size,
            "max_entries": self.max_entries, "map_flags": self.flags, "name": self.name.encode(),
            "btf_id": self.btf_id, "btf_key_type_id": self.btf_key_type_id,
            "btf_value_type_id": self.btf_value_type_id, "map_extra": self.map_extra,
        }

    # ---- elements: the kernel's ops, over bytes ------------------------------------------------

    def lookup(self, key: bytes | None, flags: int = 0) -> bytes:
        """``bpf_map_copy_value``: the value user space reads for ``key``."""
        raise Errno(errno.EINVAL)

    def update(self, key: bytes | None, value: bytes, flags: int) -> None:
        """``bpf_map_update_value``."""
        raise Errno(errno.EINVAL)

    def delete(self, key: bytes | None) -> None:
        """``map_delete_elem``."""
        raise Errno(errno.EINVAL)

    def next_key(self, key: bytes | None) -> bytes:
        """``map_get_next_key``: the key after ``key`` (the first when None or when absent, as the
        kernel's hash maps restart)."""
        raise Errno(errno.EINVAL)

    def lookup_and_delete(self, key: bytes | None, flags: int) -> bytes:
        """``BPF_MAP_LOOKUP_AND_DELETE_ELEM``: only hash maps, queues and stacks have it."""
        raise Errno(ENOTSUPP)

    def writable_mappings(self) -> int:
        """Writable ``mmap`` mappings of the map (``freeze`` refuses them: EBUSY)."""
        return 0

    # ---- the fast path --------------------------------------------------------------------------

    def fast_ops(self, key_view: Any, value_view: Any, lock: Any) -> dict[int, Callable[[], int]] | None:
        """Per-command closures over one thread's prebuilt key and value buffers (ctypes views) for
        the door's bound path, or None when the type has no fast path. Each returns 0, or the errno
        (positive) of a refusal, checks ``frozen`` before a write and takes ``lock`` (the kernel's)
        where it changes more than one thing."""
        return None


MAP_CLASSES: dict[int, type[MemMap]] = {}
"""The memory kernel's map types: every type here behaves as the kernel's."""


def register(cls: type[MemMap]) -> type[MemMap]:
    """Class decorator: the memory kernel creates ``cls`` for its ``types``."""
    for map_type in cls.types:
        MAP_CLASSES[map_type] = cls
    return cls


def check_common(req: CreateRequest, btf_vmlinux_value_type_id: int) -> None:
    """``map_create``'s checks before the type's own, in the kernel's order."""
    if btf_vmlinux_value_type_id:
        if req.type != MapType.STRUCT_OPS or req.btf_key_type_id or req.btf_value_type_id:
            raise Errno(errno.EINVAL)
    elif req.btf_key_type_id and not req.btf_value_type_id:
        raise Errno(errno.EINVAL)
    if req.type not in (MapType.BLOOM_FILTER, MapType.ARENA) and req.map_extra:
        raise Errno(errno.EINVAL)
    if req.flags & MapFlags.RDONLY and req.flags & MapFlags.WRONLY:
        raise Errno(errno.EINVAL)
    if req.numa_node != -1 and req.numa_node not in online_nodes():
        raise Errno(errno.EINVAL)


def check_name(raw: bytes) -> str:
    """``bpf_obj_name_cpy``: letters, digits, ``_`` and ``.``, NUL-terminated within 16 bytes."""
    end = raw.find(b"\0")
    if end < 0:
        raise Errno(errno.EINVAL)
    name = raw[:end]
    if any(not (chr(c).isalnum() and c < 128) and c not in b"_." for c in name):
        raise Errno(errno.EINVAL)
    return name.decode()


BATCH_ALL = frozenset({Cmd.MAP_LOOKUP_BATCH, Cmd.MAP_LOOKUP_AND_DELETE_BATCH, Cmd.MAP_UPDATE_BATCH,
                       Cmd.MAP_DELETE_BATCH})
BATCH_ARRAY = frozenset({Cmd.MAP_LOOKUP_BATCH, Cmd.MAP_UPDATE_BATCH})
BATCH_GENERIC = frozenset({Cmd.MAP_LOOKUP_BATCH, Cmd.MAP_UPDATE_BATCH, Cmd.MAP_DELETE_BATCH})
