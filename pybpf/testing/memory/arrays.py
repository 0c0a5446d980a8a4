"""ARRAY, PERCPU_ARRAY, ARRAY_OF_MAPS and PROG_ARRAY (the kernel's ``arraymap.c``).

Every index below ``max_entries`` exists from the start (zeroed); walks go in index order. An
ARRAY created with ``MMAPABLE`` keeps its values in the memfd behind its fds, so ``Map.mmap()``
maps the very bytes that lookups and updates use, as with the kernel's vmalloc'ed array. A frozen
map can then be mapped read-only only (EPERM for a writable mapping), and a map mapped writable
cannot be frozen (EBUSY), as in the kernel. One difference: the kernel cannot map a read-only fd
of such a map at all (EINVAL: a bpf map needs a shared mapping, which a read-only fd does not
give), where the memory kernel maps it read-only.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..._sys.constants import Cmd, MapFlags, MapType
from .hashmaps import template_of
from .maps import (
    ACCESS_MASK,
    BATCH_ARRAY,
    EXIST,
    LOCK,
    NOEXIST,
    CreateRequest,
    MemMap,
    access_ok,
    register,
    round8,
)
from .objects import Errno, MemObject
from .sizes import kernel_mem_check

if TYPE_CHECKING:
    from .kernel import MemoryKernel

_FLAGS = int(MapFlags.NUMA_NODE | MapFlags.MMAPABLE | MapFlags.PRESERVE_ELEMS | MapFlags.INNER_MAP) | ACCESS_MASK
"""``ARRAY_CREATE_FLAG_MASK``."""
_INT_MAX = (1 << 31) - 1
_PCPU_MIN_UNIT_SIZE = 32768
_F_ADD_SEALS, _F_SEAL_FUTURE_WRITE = 1033, 0x0010
_INDEX = struct.Struct("=I")
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
ENOENT, EEXIST, E2BIG, EINVAL = errno.ENOENT, errno.EEXIST, errno.E2BIG, errno.EINVAL


def index_of(key: bytes) -> int:
    """An array key: a native-order u32."""
    return int(_INDEX.unpack(key)[0])


def array_check(req: CreateRequest) -> None:
    """``array_map_alloc_check`` and the refusals of ``array_map_alloc``."""
    percpu = req.type == MapType.PERCPU_ARRAY
    if (req.max_entries == 0 or req.key_size != 4 or req.value_size == 0 or req.flags & ~_FLAGS
            or not access_ok(req.flags) or (percpu and req.numa_node != -1)):
        raise Errno(EINVAL)
    if req.type != MapType.ARRAY and req.flags & (MapFlags.MMAPABLE | MapFlags.INNER_MAP):
        raise Errno(EINVAL)
    if req.type != MapType.PERF_EVENT_ARRAY and req.flags & MapFlags.PRESERVE_ELEMS:
        raise Errno(EINVAL)
    if req.value_size > _INT_MAX:
        raise Errno(E2BIG)
    if percpu and round8(req.value_size) > _PCPU_MIN_UNIT_SIZE:
        raise Errno(E2BIG)


def array_next_key(key: bytes | None, max_entries: int) -> bytes:
    """``array_map_get_next_key``: index order; an absent or out-of-range key starts over."""
    index = index_of(key) if key is not None else 0xFFFFFFFF
    if index >= max_entries:
        return _INDEX.pack(0)
    if index == max_entries - 1:
        raise Errno(ENOENT)
    return _INDEX.pack(index + 1)


@register
class ArrayMap(MemMap):
    """ARRAY and PERCPU_ARRAY: ``slots`` holds the values written so far (the rest are zero)."""

    types = (MapType.ARRAY, MapType.PERCPU_ARRAY)
    batch_commands = BATCH_ARRAY

    def __init__(self, req: CreateRequest, kernel: MemoryKernel) -> None:
        super().__init__(req, kernel)
        self.zero = bytes(self.value_in)
        self.slots: dict[int, bytes] = {}
        self.stride = round8(self.value_size)
        self.mm: memoryview | None = None
        self._mapping = (0, 0)

    @classmethod
    def check(cls, req: CreateRequest) -> None:
        array_check(req)
        kernel_mem_check(req.max_entries * round8(req.value_size))

    @property
    def mmapable(self) -> bool:
        return bool(self.flags & MapFlags.MMAPABLE)

    def attach_storage(self, fd: int) -> None:
        """MMAPABLE: keep the values in the memfd ``fd`` (the kernel's own fd of it, closed when the
        map dies). It is mapped without Python's ``mmap``, which would keep a second fd open and
        make the map look used forever."""
        size = -(-self.stride * self.max_entries // mmap.PAGESIZE) * mmap.PAGESIZE
        os.ftruncate(fd, size)
        addr = _libc.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise Errno(ctypes.get_errno() or errno.ENOMEM)
        self._mapping = (addr, size)
        self.mm = memoryview((ctypes.c_char * size).from_address(addr)).cast("B")
        self.storage_fd = fd
        if self.flags & MapFlags.RDONLY_PROG:
            self.freeze_storage()  # the kernel refuses a writable mapping of it (EACCES; EPERM here)

    def writable_mappings(self) -> int:
        if self.mm is None:
            return 0
        return max(0, _count_writable_mappings(self.inode) - 1)  # ours does not count

    def freeze_storage(self) -> None:
        """After freeze, a new writable mapping is refused (EPERM), as the kernel's mmap does."""
        if self.storage_fd >= 0:
            try:
                fcntl.fcntl(self.storage_fd, _F_ADD_SEALS, _F_SEAL_FUTURE_WRITE)
            except OSError:
                pass  # a kernel before 5.1 has no future-write seal: mappings stay possible

    def _get(self, index: int) -> bytes:
        if self.mm is not None:
            off = index * self.stride
            return bytes(self.mm[off: off + self.value_size])
        return self.slots.get(index, self.zero)

    def _set(self, index: int, value: bytes) -> None:
        if self.mm is not None:
            off = index * self.stride
            self.mm[off: off + self.value_size] = value
        else:
            self.slots[index] = value

    def lookup(self, key: bytes | None, flags: int = 0) -> bytes:
        assert key is not None
        index = index_of(key)
        if index >= self.max_entries:
            raise Errno(ENOENT)
        return self._get(index)

    def update(self, key: bytes | None, value: bytes, flags: int) -> None:
        assert key is not None
        index = index_of(key)
        if (flags > EXIST) if self.percpu else (flags & ~LOCK > EXIST):
            raise Errno(EINVAL)
        if index >= self.max_entries:
            raise Errno(E2BIG)
        if flags & NOEXIST:
            raise Errno(EEXIST)
        if flags & LOCK:
            raise Errno(EINVAL)
        self._set(index, value)

    def delete(self, key: bytes | None) -> None:
        raise Errno(EINVAL)

    def next_key(self, key: bytes | None) -> bytes:
        return array_next_key(key, self.max_entries)

    def released(self) -> list[MemObject]:
        if self.mm is not None:
            self.mm.release()
            self.mm = None
            addr, size = self._mapping
            _libc.munmap(ctypes.c_void_p(addr), ctypes.c_size_t(size))
        if self.storage_fd >= 0:
            os.close(self.storage_fd)
            self.storage_fd = -1
        return super().released()

    def fast_ops(self, key_view: Any, value_view: Any, lock: Any) -> dict[int, Callable[[], int]] | None:
        mp, slots, zero, max_entries, unpack = self, self.slots, self.zero, self.max_entries, _INDEX.unpack
        mm, stride, size = self.mm, self.stride, self.value_size

        def lookup() -> int:  # one slot read: atomic, no lock
            index = unpack(key_view.raw)[0]
            if index >= max_entries:
                return ENOENT
            if mm is not None:
                value_view.raw = mm[index * stride: index * stride + size]
            else:
                value_view.raw = slots.get(index, zero)
            return 0

        def update() -> int:  # one slot write: atomic, no lock (the kernel's is lock-free too)
            if mp.frozen:
                return errno.EPERM
            index = unpack(key_view.raw)[0]
            if index >= max_entries:
                return E2BIG
            if mm is not None:
                mm[index * stride: index * stride + size] = value_view.raw
            else:
                slots[index] = value_view.raw
            return 0

        return {Cmd.MAP_LOOKUP_ELEM: lookup, Cmd.MAP_UPDATE_ELEM: update}


class _FdArray(MemMap):
    """Arrays whose slots hold objects written as fds: empty until set, ids on lookup."""

    fd_values = True

    def __init__(self, req: CreateRequest, kernel: MemoryKernel) -> None:
        super().__init__(req, kernel)
        self.slots: dict[int, MemObject] = {}

    @classmethod
    def check(cls, req: CreateRequest) -> None:
        if req.value_size != 4 or req.flags & (MapFlags.RDONLY_PROG | MapFlags.WRONLY_PROG):
            raise Errno(EINVAL)
        array_check(req)

    def _resolve(self, value: bytes) -> MemObject:
        raise NotImplementedError

    def lookup(self, key: bytes | None, flags: int = 0) -> bytes:
        assert key is not None
        held = self.slots.get(index_of(key))
        if held is None:
            raise Errno(ENOENT)
        return _INDEX.pack(held.id)

    def update(self, key: bytes | None, value: bytes, flags: int) -> None:
        assert key is not None
        if flags != 0:
            raise Errno(EINVAL)
        index = index_of(key)
        if index >= self.max_entries:
            raise Errno(E2BIG)
        new = self._resolve(value)
        self.kernel.hold(new)
        old = self.slots.get(index)
        self.slots[index] = new
        if old is not None:
            self.kernel.release(old)

    def delete(self, key: bytes | None) -> None:
        assert key is not None
        index = index_of(key)
        if index >= self.max_entries:
            raise Errno(E2BIG)
        old = self.slots.pop(index, None)
        if old is None:
            raise Errno(ENOENT)
        self.kernel.release(old)

    def next_key(self, key: bytes | None) -> bytes:
        return array_next_key(key, self.max_entries)

    def released(self) -> list[MemObject]:
        held = super().released() + list(self.slots.values())
        self.slots.clear()
        return held


@register
class ArrayOfMaps(_FdArray):
    """ARRAY_OF_MAPS: slots hold maps compatible with the template."""

    types = (MapType.ARRAY_OF_MAPS,)
    batch_commands = BATCH_ARRAY

    def __init__(self, req: CreateRequest, kernel: MemoryKernel) -> None:
        super().__init__(req, kernel)
        assert req.inner is not None
        self.template = template_of(req.inner)

    def _resolve(self, value: bytes) -> MemObject:
        return self.kernel.inner_map(self.template, value)


@register
class ProgramArray(_FdArray):
    """PROG_ARRAY: slots hold programs (Python stand-ins) of the type of the first one stored."""

    types = (MapType.PROG_ARRAY,)

    def __init__(self, req: CreateRequest, kernel: MemoryKernel) -> None:
        super().__init__(req, kernel)
        self.owner_type: int | None = None

    def _resolve(self, value: bytes) -> MemObject:
        program = self.kernel.program_of(index_of(value))
        if self.owner_type is None:
            self.owner_type = program.type
        elif program.type != self.owner_type:
            raise Errno(EINVAL)
        return program


def _count_writable_mappings(inode: int) -> int:
    """Shared writable mappings of the memfd with ``inode`` in this process (/proc/self/maps)."""
    count = 0
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split(None, 5)
            if len(fields) >= 5 and fields[1].startswith("rw") and fields[1][3] == "s" and fields[4] == str(inode):
                count += 1
    return count
