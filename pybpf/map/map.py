"""``Map``: a live BPF map that owns its fd and behaves as a ``MutableMapping``.

Element operations go through per-thread call buffers (``calls.py``); creation is ``create.py``.
"""

from __future__ import annotations

import ctypes
import errno
import mmap as _mmap
import operator
import os
import threading
import weakref
from collections.abc import Iterable, Iterator, MutableMapping
from typing import Any, ClassVar

from .._fd import FdOwner
from .._sys import commands
from .._sys.constants import ALL_MAP_FLAGS, Cmd, FileFlags, MapFlags, MapType, UpdateFlags, known
from .._sys.elem import BATCH_SIZE, ELEM_SIZE, LOOKUP_AND_DELETE, NEXT_KEY, address, batch_attr, walk_keys
from .._sys.syscall import NR_BPF, door
from .._sys.traits import MapTraits, map_traits, map_type_name
from ..errors import (
    ENOTSUPP,
    BPFError,
    IndexOutOfRangeError,
    KeyExistsError,
    KeyNotFoundError,
    MapFullError,
    NotSupportedError,
    PermissionDeniedError,
    error_for,
)
from .calls import CLOSED, Calls, Closed
from .codec import Field, PerCpuField
from .. import features
from .create import create_fd
from .info import MapInfo
from .spec import MapSpec, type_size

_MISSING = object()
_UNKNOWN = MapTraits((0, 0))
"""Traits of a map type this library does not know: no assumptions."""


class Map(FdOwner, MutableMapping[Any, Any]):
    """A BPF map. Create with ``Map.create(spec)``; open with ``from_pin``, ``from_id``, ``from_fd``.

    Keys and values are bytes-like, ``int`` (native order) or the declared ctypes types; lookups
    return ``bytes`` unless a value type was declared. Per-CPU maps take and return a list.
    """

    _what = "map"

    _by_type: ClassVar[dict[int, type[Map]]] = {}
    map_types: ClassVar[tuple[MapType, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for map_type in cls.map_types:
            Map._by_type[map_type] = cls

    def __init__(self, fd: int, spec: MapSpec, *, readonly: bool = False) -> None:
        """Wrap an fd this object now owns; ``spec`` gives the map's shape (as the kernel reports it)."""
        self._own(fd)
        self.type: MapType | int = known(MapType, spec.type)
        self.traits: MapTraits = map_traits(spec.type) or _UNKNOWN
        self.key_size: int = spec.key_size or 0
        self.value_size: int = spec.value_size or 0
        self.max_entries: int = spec.max_entries
        self.flags: MapFlags = MapFlags(spec.create_flags & ALL_MAP_FLAGS)
        self.name: str = spec.name
        self.readonly = readonly
        self._id: int | None = None
        self._mmap: _mmap.mmap | None = None
        self._key = Field(self.key_size, spec.key, "key")
        value_cls = PerCpuField if self.traits.percpu else Field
        self._value: Field = value_cls(self.value_size, spec.value, "value")
        value_alloc = getattr(self._value, "total", self.value_size)
        custom_values = type(self)._put_value is not Map._put_value
        self._users: set[int] = set()  # threads that made call buffers for this map
        self._door = gate = door()
        calls = Calls(weakref.ref(self), fd, gate, self._key, self._value, value_alloc, custom_values,
                      may_sleep=self.traits.fd_values)
        self._calls: Calls | Closed = calls
        self._value_alloc = value_alloc
        self._retire = calls.retire
        cls = type(self)  # the creating thread's closures stand in for the methods: one call per operation
        if cls.lookup is Map.lookup:
            self.lookup = calls.lookup  # type: ignore[method-assign,assignment]
        if cls.update is Map.update:
            self.update = calls.update  # type: ignore[method-assign,assignment]
        if cls.delete is Map.delete:
            self.delete = calls.delete  # type: ignore[method-assign,assignment]

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def create(cls, spec: MapSpec | None = None, **fields: Any) -> Map:
        """Create a map from a ``MapSpec`` or its fields; the spec is validated first.

        ``Map.create`` returns the subclass registered for the type (``SockHash``, ...).
        """
        if spec is None:
            spec = MapSpec(**{**cls._defaults(), **fields})
        elif fields:
            spec = spec.copy(**fields)
        spec.validate()
        target = cls._class_for(spec.type)
        target._check_spec(spec)
        fd = create_fd(spec)
        try:
            new = target(fd, spec)
            info = commands.map_info(fd, spec.name)
        except BaseException:
            os.close(fd)
            raise
        new.flags, new._id = MapFlags(info.map_flags & ALL_MAP_FLAGS), info.id  # the kernel's word (it adds some)
        try:
            new._fill(spec.contents)
        except BaseException:
            new.close()
            raise
        return new

    @classmethod
    def _defaults(cls) -> dict[str, Any]:
        """Spec fields a subclass fills in when ``create`` is called without them."""
        return {}

    @classmethod
    def _check_spec(cls, spec: MapSpec) -> None:
        """Refuse a spec whose type this class does not handle."""
        if cls.map_types and spec.type not in cls.map_types:
            names = ", ".join(t.name for t in cls.map_types)
            raise ValueError(f"MapSpec.type: {cls.__name__} holds {names} maps, not {map_type_name(spec.type)}")

    @classmethod
    def _class_for(cls, map_type: int) -> type[Map]:
        if cls is Map:
            return Map._by_type.get(map_type, Map)
        return cls

    @classmethod
    def from_fd(cls, fd: int, *, readonly: bool = False, key: Any = None, value: Any = None, typed: bool = True) -> Map:
        """A ``Map`` for a duplicate of ``fd`` (the caller keeps its own fd).

        ``key``/``value`` declare ctypes types for decoding (checked against the kernel's sizes);
        undeclared, they come from the map's BTF when it has some (``typed=False``: bytes).
        """
        return cls._from_owned_fd(os.dup(fd), readonly=readonly, key=key, value=value, typed=typed)

    @classmethod
    def from_pin(cls, path: str | os.PathLike[str], readonly: bool = False, *, key: Any = None, value: Any = None,
                 owner_only: bool = False, typed: bool = True) -> Map:
        """Open a map pinned in bpffs; ``readonly`` opens it with ``BPF_F_RDONLY``.

        A symlink, or a directory on the way that another user controls, is refused
        (``pybpf.pins``); ``owner_only`` also refuses a pin that belongs to another user (not root),
        for reusing pins by name in a shared directory.
        """
        flags = FileFlags.RDONLY if readonly else 0
        fd = commands.obj_get(os.fspath(path), flags, what="map", owned=owner_only)
        return cls._from_owned_fd(fd, readonly=readonly, key=key, value=value, typed=typed)

    @classmethod
    def from_id(cls, map_id: int, *, readonly: bool = False, key: Any = None, value: Any = None, typed: bool = True) -> Map:
        """Open the map with kernel id ``map_id``."""
        flags = FileFlags.RDONLY if readonly else 0
        fd = commands.fd_by_id(Cmd.MAP_GET_FD_BY_ID, map_id, "open map", flags)
        return cls._from_owned_fd(fd, readonly=readonly, key=key, value=value, typed=typed)

    @classmethod
    def _from_owned_fd(cls, fd: int, *, readonly: bool, key: Any = None, value: Any = None, typed: bool = True) -> Map:
        try:
            kind = commands.object_kind(fd)
            if kind != "map":
                raise TypeError(f"fd {fd} holds {'a ' + kind if kind else 'no BPF object'}, not a map")
            info = MapInfo.from_struct(commands.map_info(fd))
            if typed and info.btf_id and (key is None or value is None):  # declared types win
                from ..btf.typed import kernel_map_types  # BTF is imported only for maps that have it

                found = kernel_map_types(info.btf_id, info.btf_key_type_id, info.btf_value_type_id, info.name, info.key_size, info.value_size)
                key, value = key if key is not None else found[0], value if value is not None else found[1]
            spec = MapSpec(
                type=info.type,
                key_size=info.key_size,
                value_size=info.value_size,
                max_entries=info.max_entries,
                flags=info.flags,
                name=info.name,
                map_extra=info.map_extra,
                key=key,
                value=value,
            )
            for field, ctype, size in (("key", key, info.key_size), ("value", value, info.value_size)):
                if ctype is not None and type_size(ctype, field) != size:
                    raise ValueError(f"{field} type {ctype.__name__} is {type_size(ctype, field)} bytes; the map's {field}s are {size}")
            target = cls._class_for(info.type)
            target._check_spec(spec)
            new = target(fd, spec, readonly=readonly)
        except BaseException:
            os.close(fd)
            raise
        new._id = info.id
        return new

    def _fill(self, contents: Iterable[tuple[Any, Any]]) -> None:
        for key, value in contents:
            self.update(key, value)

    # ---- lifetime -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the map (it lives on while pinned or used by a program). Idempotent. A call racing
        ``close()`` in another thread completes on this map or fails; it never reaches another."""
        if not self.closed:
            self._calls = CLOSED
            self._retire()
            if self._mmap is not None:
                try:
                    self._mmap.close()
                except BufferError:
                    pass  # views still exported: the mapping goes when they do
                self._mmap = None
            super().close()

    def _used_elsewhere(self) -> bool:
        """Another thread has call buffers for this map: it may be in a call right now."""
        return bool(self._users - {threading.get_ident()})

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"fd={self._fd}"
        return (
            f"<{type(self).__name__} {self.name!r} {map_type_name(self.type)} key={self.key_size} "
            f"value={self.value_size} max_entries={self.max_entries} {state}>"
        )

    # ---- identity -----------------------------------------------------------------------------

    @property
    def id(self) -> int:
        """The kernel's id for this map."""
        if self._id is None:
            self._id = self.info().id
        return self._id

    def info(self) -> MapInfo:
        """What the kernel reports about this map (``BPF_OBJ_GET_INFO_BY_FD``)."""
        return MapInfo.from_struct(commands.map_info(self.fd, self.name))

    def pin(self, path: str | os.PathLike[str]) -> None:
        """Pin the map at ``path`` in bpffs so it outlives this process."""
        commands.obj_pin(self.fd, os.fspath(path), what=f"map {self.name!r}" if self.name else "map")

    def freeze(self) -> None:
        """Make the map read-only for user space (programs may still write it)."""
        commands.map_freeze(self.fd, self.name)

    # ---- element operations -------------------------------------------------------------------

    def lookup(self, key: Any) -> Any:
        """The value at ``key``; ``KeyNotFoundError`` (a ``KeyError``) when absent."""
        return self._calls.lookup(key)

    def update(self, key: Any, value: Any, flags: UpdateFlags | int = UpdateFlags.ANY) -> None:  # type: ignore[override]
        """Set ``key`` to ``value``; ``flags`` is ``UpdateFlags`` (ANY, NOEXIST, EXIST, LOCK)."""
        self._calls.update(key, value, flags)

    def delete(self, key: Any) -> None:
        """Remove ``key``; ``KeyNotFoundError`` when absent."""
        self._calls.delete(key)

    def lookup_and_delete(self, key: Any) -> Any:
        """Remove ``key`` and return its value, in one step."""
        calls = self._calls
        self._key.put(calls.key, 0, key)
        if calls.raw(NR_BPF, LOOKUP_AND_DELETE, calls.attrs.lookup_ref, ELEM_SIZE) < 0:
            raise self._error("lookup_and_delete", calls.get_errno(), key)
        return self._value.decode(calls.value)

    def pop(self, key: Any, default: Any = _MISSING) -> Any:
        """Remove ``key`` and return its value (``default`` if absent, else ``KeyNotFoundError``): in
        one step where the kernel can (lookup-and-delete: hash maps, Linux 5.14+), else a lookup
        then a delete (socket maps, older kernels)."""
        try:
            if self.traits.hash_key_limit and features.have("hash_lookup_and_delete"):
                return self.lookup_and_delete(key)
            value = self.lookup(key)
            self.delete(key)
            return value
        except KeyNotFoundError:
            if default is _MISSING:
                raise
            return default

    def _put_value(self, buf: bytearray, value: Any) -> None:
        """Encode a value for an update (subclasses turn sockets and maps into fds here)."""
        self._value.put(buf, 0, value)

    def _error(self, op: str, code: int, key: Any = _MISSING) -> BPFError | ValueError:
        """What an errno from an element operation means for this map type (or that the map was
        closed while the call was on its way)."""
        if self.closed:
            return self.closed_error()
        kind = map_type_name(self.type)
        where = f"{op} on map {self.name!r}" if self.name else f"{op} on {kind} map"
        key_text = "" if key is _MISSING else f"key {_show(key)}: "
        if code == errno.ENOENT:
            return KeyNotFoundError(code, where, message=f"{key_text}no such element")
        if code == errno.EEXIST:
            return KeyExistsError(code, where, message=f"{key_text}already exists (NOEXIST given)")
        if code == errno.E2BIG:
            if self.traits.indexed:
                return IndexOutOfRangeError(code, where, message=f"{key_text}index out of range (max_entries {self.max_entries})")
            return MapFullError(code, where, message=f"{key_text}map is full (max_entries {self.max_entries})")
        if code in (errno.EPERM, errno.EACCES) and op != "create":
            return PermissionDeniedError(
                code, where, hint="the map is frozen or read-only (RDONLY flag or opened read-only), or the process lacks CAP_BPF"
            )
        if code in (ENOTSUPP, errno.EOPNOTSUPP) or (code == errno.EINVAL and op == "delete" and not self.traits.deletable):
            lacking = features.lacking("hash_lookup_and_delete") if op == "lookup_and_delete" and self.traits.hash_key_limit else None
            return NotSupportedError(code, where, message=lacking or f"{kind} maps do not support {op}")
        return error_for(code, where)

    # ---- iteration ----------------------------------------------------------------------------

    def _next_key_bytes(self, prev: bytes | None) -> bytes | None:
        """``BPF_MAP_GET_NEXT_KEY``: the key after ``prev`` (the first key when None), or None at the end."""
        calls = self._calls
        if prev is None:
            ret = calls.raw(NR_BPF, NEXT_KEY, calls.attrs.first_ref, ELEM_SIZE)
        else:
            calls.key[:] = prev
            ret = calls.raw(NR_BPF, NEXT_KEY, calls.attrs.next_ref, ELEM_SIZE)
        if ret < 0:
            code = calls.get_errno()
            if code == errno.ENOENT:
                return None
            raise self._error("get_next_key", code)
        return bytes(calls.next_key)

    def _iter_key_bytes(self) -> Iterator[bytes]:
        """Every key once, by ``get_next_key``; robust to concurrent deletion (``elem.walk_keys``)."""
        if self.traits.keyless:
            raise NotSupportedError(errno.EOPNOTSUPP, f"iterate {map_type_name(self.type)} map", self.name,
                                    message=f"{map_type_name(self.type)} maps have no keys")
        return walk_keys(self._next_key_bytes, self.max_entries)

    def _batched(self) -> bool:
        """Whether iteration may use batch lookups: the type takes them and this kernel has them
        for it (PERCPU_ARRAY gained them after ARRAY; Linux 5.6+ for any)."""
        return self.traits.batch and features.have(f"batch_ops:{map_type_name(self.type)}")

    def keys(self) -> Iterator[Any]:  # type: ignore[override]
        """Every key, by batch lookup where the type supports it, else by ``get_next_key``."""
        if self._batched():
            for key, _ in self.lookup_batch():
                yield key
            return
        decode = self._key.decode
        for raw_key in self._iter_key_bytes():
            yield decode(raw_key)

    def __iter__(self) -> Iterator[Any]:
        return self.keys()

    def items(self) -> Iterator[tuple[Any, Any]]:  # type: ignore[override]
        """Every ``(key, value)``: batch lookups where supported (far fewer syscalls)."""
        if self._batched():
            yield from self.lookup_batch()
            return
        decode = self._key.decode
        for raw_key in self._iter_key_bytes():
            try:
                value = self.lookup(raw_key)
            except KeyNotFoundError:
                continue  # deleted meanwhile
            yield decode(raw_key), value

    def values(self) -> Iterator[Any]:  # type: ignore[override]
        """Every value (see ``items``)."""
        for _, value in self.items():
            yield value

    def __len__(self) -> int:
        """Number of elements (counts by iterating: O(n) syscalls in batch)."""
        return sum(1 for _ in self.keys())

    def clear(self) -> None:
        """Remove every element: batched lookup-and-delete where supported, never quadratic."""
        if not self.traits.deletable:
            raise NotSupportedError(errno.EINVAL, "clear", self.name, message=f"{map_type_name(self.type)} maps do not support delete")
        if self.traits.batch_delete and self._batched():
            for _ in self.lookup_and_delete_batch():
                pass
            return
        for key in list(self._iter_key_bytes()):
            try:
                self.delete(key)
            except KeyNotFoundError:
                pass

    # ---- mapping protocol ---------------------------------------------------------------------

    # ``m[k]`` is ``m.lookup(k)`` without a Python frame in between: the subscript slot finds a
    # property whose getter (C's attrgetter) hands back the instance's ``lookup`` (the creating
    # thread's closure, or the method), which is then called with the key.
    __getitem__ = property(operator.attrgetter("lookup"), doc="``m[key]`` is ``m.lookup(key)``.")
    __setitem__ = property(operator.attrgetter("update"), doc="``m[key] = value`` is ``m.update(key, value)``.")
    __delitem__ = property(operator.attrgetter("delete"), doc="``del m[key]`` is ``m.delete(key)``.")

    def __contains__(self, key: object) -> bool:
        try:
            self.lookup(key)
        except KeyNotFoundError:
            return False
        return True

    def get(self, key: Any, default: Any = None) -> Any:
        """The value at ``key``, or ``default``."""
        try:
            return self.lookup(key)
        except KeyNotFoundError:
            return default

    __hash__ = object.__hash__  # a live object, not a value: identity semantics

    def __eq__(self, other: object) -> bool:
        return self is other

    # ---- batch operations ---------------------------------------------------------------------

    def _batch_buffers(self, count: int) -> tuple[bytearray, bytearray]:
        return bytearray(self.key_size * count), bytearray(self._value_alloc * count)

    def update_batch(self, keys: Iterable[Any], values: Iterable[Any], flags: UpdateFlags | int = UpdateFlags.ANY) -> int:
        """Write many elements in one syscall; returns how many were written.

        The kernel's batch update knows only ``ANY`` and ``LOCK`` (NOEXIST/EXIST are per element).
        """
        if int(flags) & ~UpdateFlags.LOCK:
            raise ValueError(f"update_batch: flags may be UpdateFlags.ANY or LOCK, not {UpdateFlags(flags)!r}")
        keys, values = list(keys), list(values)
        if len(keys) != len(values):
            raise ValueError(f"update_batch: {len(keys)} keys but {len(values)} values")
        if not keys:
            return 0
        kbuf, vbuf = self._batch_buffers(len(keys))
        self._key.put_many(kbuf, keys, self.key_size)
        if type(self)._put_value is Map._put_value:
            self._value.put_many(vbuf, values, self._value_alloc)
        else:
            one = bytearray(self._value_alloc)
            for i, value in enumerate(values):
                self._put_value(one, value)
                vbuf[i * len(one) : (i + 1) * len(one)] = one
        return self._run_batch(Cmd.MAP_UPDATE_BATCH, "update_batch", kbuf, vbuf, len(keys), flags)

    def delete_batch(self, keys: Iterable[Any]) -> int:
        """Delete many keys in one syscall; returns how many were deleted."""
        keys = list(keys)
        if not keys:
            return 0
        kbuf = bytearray(self.key_size * len(keys))
        self._key.put_many(kbuf, keys, self.key_size)
        return self._run_batch(Cmd.MAP_DELETE_BATCH, "delete_batch", kbuf, None, len(keys), 0)

    def _run_batch(self, cmd: int, op: str, kbuf: bytearray, vbuf: bytearray | None, count: int, flags: int) -> int:
        kaddr, _kpin = address(kbuf)
        vaddr, _vpin = address(vbuf) if vbuf is not None else (0, None)
        attr = batch_attr(self.fd, kaddr, vaddr, count, flags)
        if self._door.raw(NR_BPF, cmd, ctypes.byref(attr), BATCH_SIZE) < 0:
            err = self._error(op, self._door.get_errno())
            if isinstance(err, BPFError):
                err.done = attr.count
            raise err
        return int(attr.count)

    def lookup_and_delete_batch(self, batch_size: int = 4096) -> Iterator[tuple[Any, Any]]:
        """Yield and remove every ``(key, value)`` using ``BPF_MAP_LOOKUP_AND_DELETE_BATCH``."""
        return self.lookup_batch(batch_size, delete=True)

    def lookup_batch(self, batch_size: int = 4096, *, delete: bool = False) -> Iterator[tuple[Any, Any]]:
        """Yield every ``(key, value)`` using ``BPF_MAP_LOOKUP_BATCH`` (``delete``: and remove them).

        A generator: closing the map while it is suspended makes its next step fail; it never
        reads another map."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 0 < batch_size < 1 << 31:
            raise ValueError(f"batch_size must be a positive 31-bit int, not {batch_size!r}")
        cmd = Cmd.MAP_LOOKUP_AND_DELETE_BATCH if delete else Cmd.MAP_LOOKUP_BATCH
        op = "lookup_and_delete_batch" if delete else "lookup_batch"
        token_size = max(self.key_size, 8)
        in_tok, out_tok = bytearray(token_size), bytearray(token_size)
        in_addr, _pin_in = address(in_tok)
        out_addr, _pin_out = address(out_tok)
        first = True
        count = min(batch_size, self.max_entries) or 1
        kbuf, vbuf = self._batch_buffers(count)
        kaddr, _kpin = address(kbuf)
        vaddr, _vpin = address(vbuf)
        ks, vs = self.key_size, self._value_alloc
        keys_of, values_of = self._key.decode_many, self._value.decode_many
        raw, get_errno = self._door.raw, self._door.get_errno
        while True:
            attr = batch_attr(self.fd, kaddr, vaddr, count, in_batch=0 if first else in_addr, out_batch=out_addr)
            ret = raw(NR_BPF, cmd, ctypes.byref(attr), BATCH_SIZE)
            code = get_errno() if ret < 0 else 0
            if ret < 0 and code == errno.ENOSPC and attr.count == 0:
                count *= 2  # a bucket holds more than a batch: grow and retry
                kbuf, vbuf = self._batch_buffers(count)
                kaddr, _kpin = address(kbuf)
                vaddr, _vpin = address(vbuf)
                continue
            if ret < 0 and code != errno.ENOENT:
                raise self._error(op, code)
            got = attr.count
            yield from zip(keys_of(bytes(kbuf[: got * ks]), got, ks), values_of(bytes(vbuf[: got * vs]), got, vs))
            if ret < 0:  # ENOENT: that was the last batch
                return
            in_tok[:] = out_tok
            first = False

    # ---- memory-mapped arrays -----------------------------------------------------------------

    def mmap(self) -> memoryview:
        """The values of an ARRAY created with ``MapFlags.MMAPABLE`` as one writable buffer.

        Element ``i`` starts at ``i * stride`` (``stride`` = value size rounded up to 8); reads
        and writes through it cost no syscall. Read-only when the map is frozen or opened so.
        """
        if self.type != MapType.ARRAY or not self.flags & MapFlags.MMAPABLE:
            raise NotSupportedError(errno.EINVAL, "mmap", self.name, message="only ARRAY maps created with MapFlags.MMAPABLE can be mapped")
        if self._mmap is None:
            size = self.stride * self.max_entries
            size = (size + _mmap.PAGESIZE - 1) // _mmap.PAGESIZE * _mmap.PAGESIZE
            writable = not self.readonly and not self.flags & MapFlags.RDONLY
            prot = _mmap.PROT_READ | (_mmap.PROT_WRITE if writable else 0)
            try:
                self._mmap = _mmap.mmap(self.fd, size, _mmap.MAP_SHARED, prot)
            except PermissionError:
                if not writable:
                    raise
                self._mmap = _mmap.mmap(self.fd, size, _mmap.MAP_SHARED, _mmap.PROT_READ)  # frozen map
        return memoryview(self._mmap)[: self.stride * self.max_entries]

    @property
    def stride(self) -> int:
        """Distance in bytes between consecutive values in ``mmap()`` and per-CPU values."""
        return (self.value_size + 7) & ~7




def _show(key: Any) -> str:
    """A key as the user would type it: bytes as hex words (``0x09 0x00 0x00 0x00``), else repr."""
    if isinstance(key, bytes | bytearray | memoryview):
        return " ".join(f"0x{b:02x}" for b in bytes(key)) or "(empty)"
    return repr(key)
