"""The memory kernel's door: ``bpf(2)`` commands interpreted in Python, with the kernel's checks in
the kernel's order (``kernel/bpf/syscall.c``): attr fields that must be zero, the fd and its kind,
the fd's access mode and ``freeze``, flags, then the map type's own rules.

``raw`` answers as libc's ``syscall`` does (-1 and an errno per thread). What the memory kernel
cannot do at all (programs without a stand-in, attaching, most commands that are not about maps)
raises ``NotSupportedError`` naming it instead of an errno. ``bind`` is the fast path pybpf's maps
take: a ``raw`` for one map fd that resolves the fd once and keeps closures over each thread's
prebuilt key and value buffers.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ..._sys.attrs import (
    BtfInfoStruct,
    BtfLoadAttr,
    GetIdAttr,
    InfoAttr,
    MapBatchAttr,
    MapCreateAttr,
    MapElemAttr,
    MapInfoStruct,
    ObjAttr,
    ProgInfoStruct,
    ProgLoadAttr,
    TestRunAttr,
)
from ..._sys.constants import Cmd, MapFlags, MapType, ProgramType
from ..._sys.traits import map_traits, map_type_name, program_type_name
from ...errors import BPFError
from . import batch
from .batch import read, write
from .hashmaps import HashMap
from .keyless import BloomFilter
from .maps import LOCK, MAP_CLASSES, CreateRequest, MemMap, check_common, check_name
from .objects import ENOTSUPP, Errno, NotInMemoryKernelError
from .programs import MemBtf, MemProgram
from .releases import (
    BATCH_SKIPS_HOLES,
    FREEZE_NEEDS_WRITE,
    HASH_KEYS_OVER_512,
    HASH_LOOKUP_AND_DELETE,
    LATE_BATCH_TYPES,
    PERCPU_VALUE_E2BIG,
)

if TYPE_CHECKING:
    from .kernel import MemoryKernel

S = TypeVar("S", bound=ctypes.Structure)

_FILE_FLAGS = int(MapFlags.RDONLY | MapFlags.WRONLY)
_PATH_FD = int(MapFlags.PATH_FD)
_BTF_MAX = 16 << 20
_WRITES = (Cmd.MAP_UPDATE_ELEM, Cmd.MAP_DELETE_ELEM, Cmd.MAP_LOOKUP_AND_DELETE_ELEM)
_READS = (Cmd.MAP_LOOKUP_ELEM, Cmd.MAP_LOOKUP_AND_DELETE_ELEM)
_COMMANDS = max(Cmd) + 1
_HASH_TYPES = (MapType.HASH, MapType.PERCPU_HASH, MapType.LRU_HASH, MapType.LRU_PERCPU_HASH, MapType.HASH_OF_MAPS)


def _view(attr: ctypes.Structure, cls: type[S]) -> S:
    """``attr`` as the command's struct: the same memory when it is large enough (so outputs reach
    the caller), else a zero-padded copy (fields it lacks read as zero, as the kernel pads)."""
    if type(attr) is cls:
        return attr
    if ctypes.sizeof(attr) >= ctypes.sizeof(cls):
        return cls.from_address(ctypes.addressof(attr))
    copy = cls()
    ctypes.memmove(ctypes.addressof(copy), ctypes.addressof(attr), ctypes.sizeof(attr))
    return copy


def _zero(*fields: int) -> None:
    """``CHECK_ATTR``: fields past the command's last one must be zero."""
    if any(fields):
        raise Errno(errno.EINVAL)


def _file_mode(flags: int) -> tuple[bool, bool]:
    """``bpf_get_file_flag``: (readable, writable) of the fd made for ``flags``."""
    if flags & MapFlags.RDONLY and flags & MapFlags.WRONLY:
        raise Errno(errno.EINVAL)
    return not flags & MapFlags.WRONLY, not flags & MapFlags.RDONLY


def _copy_key(addr: int, size: int) -> bytes | None:
    """``__bpf_copy_key``: a key for maps with keys; a key pointer for keyless maps is EINVAL."""
    if size:
        return read(addr, size)
    if addr:
        raise Errno(errno.EINVAL)
    return None


def _path(addr: int) -> str:
    if not addr:
        raise Errno(errno.EFAULT)
    return ctypes.string_at(addr).decode(errors="surrogateescape")


class Commands:
    """The command handlers of one ``MemoryKernel``."""

    def __init__(self, kernel: MemoryKernel) -> None:
        self.kernel = kernel
        self._tls = threading.local()
        self._handlers: dict[int, Callable[[ctypes.Structure], int]] = {
            Cmd.MAP_CREATE: self.map_create,
            Cmd.MAP_LOOKUP_ELEM: self.map_lookup,
            Cmd.MAP_UPDATE_ELEM: self.map_update,
            Cmd.MAP_DELETE_ELEM: self.map_delete,
            Cmd.MAP_GET_NEXT_KEY: self.map_next_key,
            Cmd.MAP_LOOKUP_AND_DELETE_ELEM: self.map_lookup_and_delete,
            Cmd.MAP_FREEZE: self.map_freeze,
            Cmd.MAP_LOOKUP_BATCH: self.map_batch,
            Cmd.MAP_LOOKUP_AND_DELETE_BATCH: self.map_batch,
            Cmd.MAP_UPDATE_BATCH: self.map_batch,
            Cmd.MAP_DELETE_BATCH: self.map_batch,
            Cmd.OBJ_PIN: self.obj_pin,
            Cmd.OBJ_GET: self.obj_get,
            Cmd.MAP_GET_NEXT_ID: self.next_id,
            Cmd.PROG_GET_NEXT_ID: self.next_id,
            Cmd.BTF_GET_NEXT_ID: self.next_id,
            Cmd.LINK_GET_NEXT_ID: self.next_id,
            Cmd.MAP_GET_FD_BY_ID: self.fd_by_id,
            Cmd.PROG_GET_FD_BY_ID: self.fd_by_id,
            Cmd.BTF_GET_FD_BY_ID: self.fd_by_id,
            Cmd.LINK_GET_FD_BY_ID: self.fd_by_id,
            Cmd.OBJ_GET_INFO_BY_FD: self.info_by_fd,
            Cmd.BTF_LOAD: self.btf_load,
            Cmd.PROG_LOAD: self.prog_load,
            Cmd.PROG_TEST_RUN: self.prog_test_run,
        }
        self._cmd = 0
        """The command being handled (handlers run under the kernel's lock, one at a time)."""

    # ---- the door ------------------------------------------------------------------------------

    def raw(self, nr: int, cmd: int, ref: Any, size: int) -> int:
        """``syscall(NR_bpf, cmd, attr, size)``: the result, or -1 with the errno set."""
        handler = self._handlers.get(cmd)
        if handler is None:
            name = Cmd(cmd).name if cmd in Cmd._value2member_map_ else str(cmd)
            raise NotInMemoryKernelError(f"BPF_{name}", f"BPF_{name} is")
        attr = ref._obj
        with self.kernel.lock:
            self._cmd = cmd
            try:
                return handler(attr)
            except Errno as refused:
                self._tls.errno = refused.code
            except BPFError:
                raise
            except OSError as failed:  # a real fd operation of ours failed (EMFILE, ...)
                self._tls.errno = failed.errno or errno.EIO
        return -1

    def get_errno(self) -> int:
        """The errno of this thread's last failed command."""
        code: int = getattr(self._tls, "errno", 0)
        return code

    def bind(self, fd: int) -> Callable[..., int]:
        """A ``raw`` for one map fd: the element commands over the same prebuilt attrs skip the
        fd lookup and buffer decoding; anything else takes the full path."""
        try:
            desc = self.kernel.fds.resolve(fd)
        except Errno:
            return self.raw
        obj = desc.obj
        if not isinstance(obj, MemMap):
            return self.raw
        full, tls, lock = self.raw, self._tls, self.kernel.lock
        readable, writable = desc.readable, desc.writable
        key_size, value_in = obj.key_size, obj.value_in
        cache: dict[Any, list[Callable[[], int] | None]] = {}

        def build(ref: Any) -> list[Callable[[], int] | None]:
            """The fast operations over one attr, indexed by command (None: the full path)."""
            table: list[Callable[[], int] | None] = [None] * _COMMANDS
            attr = ref._obj
            if type(attr) is not MapElemAttr or attr.map_fd != fd or attr.flags or not key_size or not attr.key:
                return table
            key_view = (ctypes.c_char * key_size).from_address(attr.key)
            value_view = (ctypes.c_char * value_in).from_address(attr.value) if attr.value else None
            ops = obj.fast_ops(key_view, value_view, lock) or {}
            if value_view is None:  # a delete attr: only delete may use it (CHECK_ATTR)
                ops = {c: op for c, op in ops.items() if c == Cmd.MAP_DELETE_ELEM}
            else:
                ops.pop(Cmd.MAP_DELETE_ELEM, None)
            refused: tuple[int, ...] = (() if readable else _READS) + (() if writable else _WRITES)
            for command, op in ops.items():
                if command not in refused:
                    table[command] = op
            return table

        def bound(nr: int, cmd: int, ref: Any, size: int) -> int:
            try:
                op = cache[ref][cmd]
            except KeyError:
                op = (cache.setdefault(ref, build(ref)))[cmd]
            except IndexError:
                op = None
            if op is None:
                return full(nr, cmd, ref, size)
            code = op()
            if code:
                tls.errno = code
                return -1
            return 0

        return bound

    # ---- maps ----------------------------------------------------------------------------------

    def _map(self, fd: int) -> tuple[MemMap, bool, bool]:
        desc = self.kernel.resolve(fd, "map")
        obj = desc.obj
        assert isinstance(obj, MemMap)
        return obj, desc.readable, desc.writable and not obj.frozen

    def map_create(self, raw_attr: ctypes.Structure) -> int:
        attr = _view(raw_attr, MapCreateAttr)
        flags = attr.map_flags & ~int(MapFlags.TOKEN_FD)
        req = CreateRequest(
            type=attr.map_type, key_size=attr.key_size, value_size=attr.value_size, max_entries=attr.max_entries,
            flags=flags, name="", numa_node=attr.numa_node if flags & MapFlags.NUMA_NODE else -1,
            map_extra=attr.map_extra, btf_key_type_id=attr.btf_key_type_id, btf_value_type_id=attr.btf_value_type_id,
        )
        if attr.map_flags & MapFlags.TOKEN_FD:
            raise NotInMemoryKernelError("create map", "BPF tokens are")
        check_common(req, attr.btf_vmlinux_value_type_id)
        readable, writable = _file_mode(flags)
        cls = MAP_CLASSES.get(req.type)
        traits = map_traits(req.type)
        if traits is None or req.type == MapType.UNSPEC or self.kernel.version[:2] < traits.since:
            raise Errno(errno.EINVAL)  # a type this release does not know
        if cls is None:
            kind = map_type_name(req.type)
            raise NotInMemoryKernelError(f"create {kind} map", f"{kind} maps are")
        try:
            cls.check(req)
        except Errno as refused:
            if refused.code == errno.E2BIG and traits.percpu and req.value_size > 32768 \
                    and not PERCPU_VALUE_E2BIG.in_release(self.kernel.version):
                cls.check(dataclasses.replace(req, value_size=32768))  # the checks that still come first
                raise Errno(errno.ENOMEM) from None  # no size check yet: the allocation fails
            raise
        if req.type in _HASH_TYPES and req.key_size > 512 and not HASH_KEYS_OVER_512.in_release(self.kernel.version):
            raise Errno(errno.E2BIG)
        if req.type in (MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS):
            inner = self._map(attr.inner_map_fd)[0]
            if inner.type in (MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS):
                raise Errno(errno.EINVAL)
            req.inner = inner
        if attr.map_ifindex:
            raise Errno(errno.EINVAL)  # offload needs a device that offloads maps: none here
        req.name = check_name(ctypes.string_at(ctypes.addressof(attr) + MapCreateAttr.map_name.offset, 16))
        if req.btf_key_type_id or req.btf_value_type_id:
            btf = self.kernel.resolve(attr.btf_fd, "BTF").obj
            assert isinstance(btf, MemBtf)
            if not traits.btf_types:
                raise Errno(ENOTSUPP)
            req.btf = btf
        obj = cls(req, self.kernel)
        fd = self.kernel.adopt(obj, readable, writable)
        if getattr(obj, "mmapable", False):
            storage = self.kernel.fds.reopen(fd, obj, True, True)
            obj.attach_storage(storage)  # type: ignore[attr-defined]
        return fd

    def map_lookup(self, raw_attr: ctypes.Structure) -> int:
        attr = _view(raw_attr, MapElemAttr)
        if attr.flags & ~LOCK:
            raise Errno(errno.EINVAL)
        obj, readable, _ = self._map(attr.map_fd)
        if not readable:
            raise Errno(errno.EPERM)
        if attr.flags & LOCK:
            raise Errno(errno.EINVAL)
        key = _copy_key(attr.key, obj.key_size)
        if isinstance(obj, BloomFilter):
            obj.contains(read(attr.value, obj.value_in))
            return 0
        write(attr.value, obj.lookup(key, attr.flags))
        return 0

    def map_update(self, raw_attr: ctypes.Structure) -> int:
        attr = _view(raw_attr, MapElemAttr)
        obj, _, writable = self._map(attr.map_fd)
        if not writable:
            raise Errno(errno.EPERM)
        if attr.flags & LOCK:
            raise Errno(errno.EINVAL)
        key = _copy_key(attr.key, obj.key_size)
        obj.update(key, read(attr.value, obj.value_in), attr.flags)
        return 0

    def map_delete(self, raw_attr: ctypes.Structure) -> int:
        attr = _view(raw_attr, MapElemAttr)
        _zero(attr.value, attr.flags)
        obj, _, writable = self._map(attr.map_fd)
        if not writable:
            raise Errno(errno.EPERM)
        obj.delete(_copy_key(attr.key, obj.key_size))
        return 0

    def map_next_key(self, raw_attr: ctypes.Structure) -> int:
        attr = _view(raw_attr, MapElemAttr)
        _zero(attr.flags)
        obj, readable, _ = self._map(attr.map_fd)
        if not readable:
            raise Errno(errno.EPERM)
        key = _copy_key(attr.key, obj.key_size) if attr.key else None
        write(attr.value, obj.next_key(key))
        return 0

    def map_lookup_and_delete(self, raw_attr: ctypes.Structure) -> int:
        attr = _view(raw_attr, MapElemAttr)
        if attr.flags & ~LOCK:
            raise Errno(errno.EINVAL)
        obj, readable, writable = self._map(attr.map_fd)
        if not readable or not writable:
            raise Errno(errno.EPERM)
        if attr.flags and obj.type in (MapType.QUEUE, MapType.STACK):
            raise Errno(errno.EINVAL)
        if attr.flags & LOCK:
            raise Errno(errno.EINVAL)
        key = _copy_key(attr.key, obj.key_size)
        hashes = (MapType.HASH, MapType.PERCPU_HASH, MapType.LRU_HASH, MapType.LRU_PERCPU_HASH)
        if obj.type not in (MapType.QUEUE, MapType.STACK) + hashes or (
                obj.type in hashes and not HASH_LOOKUP_AND_DELETE.in_release(self.kernel.version)):
            raise Errno(ENOTSUPP)
        write(attr.value, obj.lookup_and_delete(key, attr.flags))
        return 0

    def map_freeze(self, raw_attr: ctypes.Structure) -> int:
        attr = _view(raw_attr, MapElemAttr)
        _zero(attr.key, attr.value, attr.flags)
        obj, _, writable = self._map(attr.map_fd)
        if FREEZE_NEEDS_WRITE.in_release(self.kernel.version) and not writable:
            raise Errno(errno.EPERM)  # a read-only fd, or frozen already
        if obj.writable_mappings() or obj.frozen:
            raise Errno(errno.EBUSY)
        obj.frozen = True
        freeze_storage = getattr(obj, "freeze_storage", None)
        if freeze_storage is not None:
            freeze_storage()
        return 0

    def map_batch(self, raw_attr: ctypes.Structure) -> int:
        attr = _view(raw_attr, MapBatchAttr)
        cmd = self._cmd
        obj, readable, writable = self._map(attr.map_fd)
        reads = cmd in (Cmd.MAP_LOOKUP_BATCH, Cmd.MAP_LOOKUP_AND_DELETE_BATCH)
        writes = cmd != Cmd.MAP_LOOKUP_BATCH
        if (reads and not readable) or (writes and not writable):
            raise Errno(errno.EPERM)
        if cmd not in obj.batch_commands or (
                obj.type in (MapType.PERCPU_ARRAY, MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS, MapType.LPM_TRIE)
                and not LATE_BATCH_TYPES.in_release(self.kernel.version)):
            raise Errno(ENOTSUPP)
        if cmd == Cmd.MAP_UPDATE_BATCH:
            return batch.update_batch(obj, attr)
        if cmd == Cmd.MAP_DELETE_BATCH:
            return batch.delete_batch(obj, attr)
        if isinstance(obj, HashMap):
            return batch.hash_lookup_batch(obj, attr, delete=cmd == Cmd.MAP_LOOKUP_AND_DELETE_BATCH)
        return batch.lookup_batch(obj, attr, skip_holes=BATCH_SKIPS_HOLES.in_release(self.kernel.version))

    # ---- pins, ids, info -----------------------------------------------------------------------

    def obj_pin(self, raw_attr: ctypes.Structure) -> int:
        attr = _view(raw_attr, ObjAttr)
        if attr.file_flags & ~_PATH_FD or (not attr.file_flags & _PATH_FD and attr.path_fd):
            raise Errno(errno.EINVAL)
        if attr.file_flags & _PATH_FD:
            raise NotInMemoryKernelError("pin", "pins relative to a directory fd are")
        desc = self.kernel.fds.resolve(attr.bpf_fd)
        if desc.obj.kind == "BTF":
            raise Errno(errno.EINVAL)
        self.kernel.fs.pin(_path(attr.pathname), desc.obj)
        return 0

    def obj_get(self, raw_attr: ctypes.Structure) -> int:
        attr = _view(raw_attr, ObjAttr)
        if attr.file_flags & ~(_FILE_FLAGS | _PATH_FD) or (not attr.file_flags & _PATH_FD and attr.path_fd):
            raise Errno(errno.EINVAL)
        readable, writable = _file_mode(attr.file_flags)
        if attr.file_flags & _PATH_FD:
            raise NotInMemoryKernelError("open pin", "pins relative to a directory fd are")
        obj = self.kernel.fs.get(_path(attr.pathname))
        if obj.kind != "map" and not (readable and writable):
            raise Errno(errno.EINVAL)
        return self.kernel.open(obj, readable, writable)

    _ID_KINDS: dict[int, str] = {Cmd.MAP_GET_NEXT_ID: "map", Cmd.PROG_GET_NEXT_ID: "program", Cmd.BTF_GET_NEXT_ID: "BTF",
                 Cmd.LINK_GET_NEXT_ID: "link", Cmd.MAP_GET_FD_BY_ID: "map", Cmd.PROG_GET_FD_BY_ID: "program",
                 Cmd.BTF_GET_FD_BY_ID: "BTF", Cmd.LINK_GET_FD_BY_ID: "link"}

    def next_id(self, raw_attr: ctypes.Structure) -> int:
        attr = _view(raw_attr, GetIdAttr)
        _zero(attr.open_flags)
        if attr.start_id >= 0x7FFFFFFF:
            raise Errno(errno.EINVAL)
        kind = self._ID_KINDS[self._cmd]
        if attr.start_id == 0:
            self.kernel.sweep()
        later = [i for i in self.kernel.objects[kind] if i > attr.start_id]
        if not later:
            raise Errno(errno.ENOENT)
        attr.next_id = min(later)
        return 0

    def fd_by_id(self, raw_attr: ctypes.Structure) -> int:
        attr = _view(raw_attr, GetIdAttr)
        kind = self._ID_KINDS[self._cmd]
        _zero(attr.next_id)
        if kind == "map":
            if attr.open_flags & ~_FILE_FLAGS:
                raise Errno(errno.EINVAL)
            readable, writable = _file_mode(attr.open_flags)
        else:
            _zero(attr.open_flags)
            readable = writable = True
        obj = self.kernel.by_id(kind, attr.start_id)
        return self.kernel.open(obj, readable, writable)

    def info_by_fd(self, raw_attr: ctypes.Structure) -> int:
        attr = _view(raw_attr, InfoAttr)
        obj = self.kernel.fds.resolve(attr.bpf_fd).obj
        cls: type[ctypes.Structure]
        if isinstance(obj, MemMap):
            cls = MapInfoStruct
        elif isinstance(obj, MemProgram):
            cls = ProgInfoStruct
        elif isinstance(obj, MemBtf):
            cls = BtfInfoStruct
        else:
            raise Errno(errno.EINVAL)
        size = ctypes.sizeof(cls)
        given = attr.info_len
        if given > size and any(read(attr.info + size, given - size)):
            raise Errno(errno.E2BIG)
        used = min(given, size)
        info = cls.from_buffer_copy(read(attr.info, used).ljust(size, b"\0"))
        fields = obj.info()
        if isinstance(obj, MemProgram):
            info.nr_map_ids = 0
            for name in ("jited_prog_len", "xlated_prog_len", "nr_jited_ksyms", "nr_jited_func_lens", "nr_func_info",
                         "nr_line_info", "nr_jited_line_info", "nr_prog_tags"):
                setattr(info, name, 0)
        if isinstance(obj, MemBtf):
            out = obj.data[: info.btf_size] if info.btf else b""
            write(info.btf, out)
        for name, value in fields.items():
            setattr(info, name, value)
        write(attr.info, bytes(info)[:used])
        attr.info_len = used
        return 0

    # ---- BTF and programs ----------------------------------------------------------------------

    def btf_load(self, raw_attr: ctypes.Structure) -> int:
        attr = _view(raw_attr, BtfLoadAttr)
        if attr.btf_size > _BTF_MAX:
            raise Errno(errno.E2BIG)
        data = read(attr.btf, attr.btf_size)
        if len(data) < 24 or int.from_bytes(data[:2], sys.byteorder) != 0xEB9F:
            raise Errno(errno.EINVAL)
        return self.kernel.adopt(MemBtf(data))

    def prog_load(self, raw_attr: ctypes.Structure) -> int:
        attr = _view(raw_attr, ProgLoadAttr)
        name = bytes(attr.prog_name).split(b"\0")[0].decode(errors="replace")
        stand_in = self.kernel.programs.get(name)
        kind = program_type_name(attr.prog_type)
        if stand_in is None:
            raise NotInMemoryKernelError(
                f"load {kind} program {name!r}", "programs do not run: they are",
                hint=f"give memory_kernel(programs={{{name!r}: stand_in}}) a Python stand-in, or run on the real kernel")
        if attr.prog_type not in ProgramType._value2member_map_ or attr.prog_type == ProgramType.UNSPEC:
            raise Errno(errno.EINVAL)
        return self.kernel.adopt(MemProgram(name, attr.prog_type, attr.expected_attach_type, stand_in))

    def prog_test_run(self, raw_attr: ctypes.Structure) -> int:
        attr = _view(raw_attr, TestRunAttr)
        program = self.kernel.program_of(attr.prog_fd)
        data = read(attr.data_in, attr.data_size_in)
        retval, out = program.run(data)
        attr.retval = retval
        attr.duration = 0
        if attr.data_out:
            write(attr.data_out, out[: attr.data_size_out])
            if len(out) > attr.data_size_out:
                attr.data_size_out = len(out)
                raise Errno(errno.ENOSPC)
        attr.data_size_out = len(out)
        return 0
