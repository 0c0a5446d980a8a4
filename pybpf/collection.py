"""``CollectionSpec``: an object file's maps and programs as editable specs; ``load`` makes them a
``Collection`` of live maps and programs, which it owns.

Loading creates the maps (reusing or pinning those pinned by name), freezes ``.rodata`` once
written, loads the programs with their map references filled in, then writes the static values
(inner maps, program-array slots). If any step fails, everything made so far is closed and the
pins it made are removed.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import struct
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from ._sys.constants import MapType, Pinning
from .asm.insn import LD_IMM64, PSEUDO_MAP_FD, PSEUDO_MAP_VALUE
from .btf import BtfHandle
from .btf import load as load_btf
from .elf import ElfObject, ObjectBTF, read_object
from .errors import BPFError
from .map import Map, MapInfo, MapSpec
from .map.spec import map_type_name
from .map.codec import possible_cpus
from .pins import make_pin_dir
from .programs import Program, ProgramSpec

DEFAULT_PIN_ROOT = Path("/sys/fs/bpf")
"""Where maps pinned by name go when ``load`` is given no ``pin_root`` (libbpf's default)."""

_FD_VALUES = (MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS, MapType.PROG_ARRAY)
_IMM = struct.Struct("=i")
_T = TypeVar("_T")


@dataclasses.dataclass
class CollectionSpec:
    """The maps and programs of an object file, by name, as specs to edit before ``load()``.

    ``contents`` of a map-in-map or PROG_ARRAY may name maps or programs of the collection
    (the object's static ``values``); loading puts the live objects there. ``btf`` is the
    object's BTF, which loaded maps and programs are described with.
    """

    maps: dict[str, MapSpec] = dataclasses.field(default_factory=dict)
    programs: dict[str, ProgramSpec] = dataclasses.field(default_factory=dict)
    btf: ObjectBTF | None = None

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> CollectionSpec:
        """Read an object file (no syscalls); ``pybpf.elf.ELFError`` (a ``ValueError``) if it is malformed."""
        with open(path, "rb") as f:
            data = f.read()
        return cls._from_object(read_object(data, os.fspath(path)))

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "") -> CollectionSpec:
        """Read an object from its bytes; ``name`` prefixes its global data maps' kernel names."""
        return cls._from_object(read_object(data, name=name))

    @classmethod
    def _from_object(cls, found: ElfObject) -> CollectionSpec:
        return cls(maps=dict(found.maps), programs=dict(found.programs), btf=found.btf)

    def load(self, pin_root: str | os.PathLike[str] | None = None) -> Collection:
        """Create the maps and load the programs; maps pinned by name live under ``pin_root``
        (default ``/sys/fs/bpf``): a compatible pinned map is reused, a different one refused."""
        return _Loader(self, Path(pin_root) if pin_root is not None else DEFAULT_PIN_ROOT).run()


class Collection:
    """Loaded ``maps`` and ``programs`` by name. Owns them: ``close()`` (or ``with``) closes them all."""

    def __init__(self, maps: dict[str, Map], programs: dict[str, Program]) -> None:
        """Take ownership of ``maps`` and ``programs``."""
        self.maps = maps
        self.programs = programs

    def close(self) -> None:
        """Close every program and map (pinned and attached ones live on). Idempotent."""
        for program in self.programs.values():
            program.close()
        for bpf_map in self.maps.values():
            bpf_map.close()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Collection maps={sorted(self.maps)} programs={sorted(self.programs)}>"


def load(path: str | os.PathLike[str], pin_root: str | os.PathLike[str] | None = None) -> Collection:
    """Read the object file at ``path`` and load it: ``CollectionSpec.from_file(path).load(pin_root)``."""
    return CollectionSpec.from_file(path).load(pin_root)


class _Loader:
    """One load of a ``CollectionSpec``; undoes everything it made if a step fails."""

    def __init__(self, spec: CollectionSpec, pin_root: Path) -> None:
        self.spec, self.pin_root = spec, pin_root
        self.maps: dict[str, Map] = {}
        self.programs: dict[str, Program] = {}
        self.pinned: list[Path] = []
        self.reused: set[str] = set()
        self.btf: BtfHandle | None = None

    def run(self) -> Collection:
        """Make every map and program; the ``Collection`` owning them, or nothing left behind."""
        _check(self.spec)
        try:
            if self.spec.btf is not None:
                self.btf = load_btf(self.spec.btf.data)
            for name, spec in self.spec.maps.items():
                self.maps[name] = _noting(f"map {name!r}", self._map, name, spec)
            for name, spec in self.spec.programs.items():
                self.programs[name] = _noting(f"program {name!r} (section {getattr(spec, 'section', '')!r})", self._program, spec)
            for name, spec in self.spec.maps.items():
                _noting(f"the static values of map {name!r}", self._static_values, name, spec)
        except BaseException:
            self._undo()
            raise
        finally:
            if self.btf is not None:
                self.btf.close()
        return Collection(self.maps, self.programs)

    def _map(self, name: str, spec: MapSpec) -> Map:
        changes: dict[str, Any] = {}
        if self.btf is not None and spec.btf is None and (spec.btf_key_type_id or spec.btf_value_type_id):
            changes["btf"] = self.btf
        if spec.inner_map is not None and self.btf is not None and spec.inner_map.btf is None:
            changes["inner_map"] = spec.inner_map.copy(btf=self.btf)
        if spec.type in _FD_VALUES:
            changes["contents"] = ()  # filled once every map and program exists
        if spec.type == MapType.PERF_EVENT_ARRAY and not spec.max_entries:
            changes["max_entries"] = possible_cpus()
        if changes:
            spec = spec.copy(**changes)
        path = self.pin_root / name if spec.pinning == Pinning.BY_NAME else None
        if path is not None and os.path.lexists(path):
            self.reused.add(name)
            return _reuse(name, spec, path)
        created = Map.create(spec)
        try:
            if name.startswith(".rodata"):
                created.freeze()
            if path is not None:
                make_pin_dir(self.pin_root)
                created.pin(path)
                self.pinned.append(path)
        except BaseException:
            created.close()
            raise
        return created

    def _program(self, spec: ProgramSpec) -> Program:
        code = bytearray(spec.instructions())
        for ref in getattr(spec, "references", ()):
            _point_at(code, ref.insn, self.maps[ref.map].fd, ref.offset, spec.name)
        btf = spec.btf
        if btf is None and (spec.func_info or spec.line_info):
            btf = self.btf
        return Program.load(spec.copy(insns=bytes(code), btf=btf))

    def _static_values(self, name: str, spec: MapSpec) -> None:
        """Put the inner maps and programs named in ``contents`` in their slots."""
        if spec.type not in _FD_VALUES or (name in self.reused and spec.type != MapType.PROG_ARRAY):
            return
        table = self.programs if spec.type == MapType.PROG_ARRAY else self.maps
        target = self.maps[name]
        for key, value in spec.contents:
            target.update(key, table[value] if isinstance(value, str) else value)

    def _undo(self) -> None:
        for program in self.programs.values():
            program.close()
        for bpf_map in self.maps.values():
            bpf_map.close()
        for path in self.pinned:
            try:
                os.unlink(path)
            except OSError:
                pass


def _noting(what: str, step: Callable[..., _T], *args: Any) -> _T:
    """Run one loading step; a failure says which entry of the collection it was about."""
    try:
        return step(*args)
    except BPFError as err:
        err.add_note(f"while loading {what} of the collection")
        raise


def _check(spec: CollectionSpec) -> None:
    """Refuse, before any syscall, what cannot load: unknown program types, dangling names."""
    for name, program in spec.programs.items():
        section = getattr(program, "section", "")
        if not program.type:
            raise ValueError(f"program {name!r}: section {section!r} does not say its type; set CollectionSpec.programs[{name!r}].type")
        if getattr(program, "core_relos", ()):
            raise ValueError(f"program {name!r} uses CO-RE relocations (preserve_access_index, BPF_CORE_READ), which pybpf does not apply")
        for ref in getattr(program, "references", ()):
            if ref.map not in spec.maps:
                raise ValueError(f"program {name!r} refers to map {ref.map!r}, which is not in the collection's maps")
    for name, bpf_map in spec.maps.items():
        if bpf_map.type not in _FD_VALUES:
            continue
        table = spec.programs if bpf_map.type == MapType.PROG_ARRAY else spec.maps
        what = "program" if bpf_map.type == MapType.PROG_ARRAY else "map"
        for key, value in bpf_map.contents:
            if isinstance(value, str) and value not in table:
                raise ValueError(f"map {name!r}: slot {key!r} names {what} {value!r}, which is not in the collection")


def _reuse(name: str, spec: MapSpec, path: Path) -> Map:
    """The map pinned at ``path``, if it matches ``spec``; else an error listing the differences."""
    found = Map.from_pin(path, owner_only=True)
    try:
        differences = _differences(spec, found.info())
    except BaseException:
        found.close()
        raise
    if differences:
        found.close()
        raise BPFError(errno.EINVAL, "reuse pinned map", name, message=f"the map pinned at {path} differs from the object's: {'; '.join(differences)}")
    return found


def _differences(spec: MapSpec, info: MapInfo) -> list[str]:
    """``attribute: object value != pinned value`` for each attribute that must match to reuse."""
    pairs: Iterable[tuple[str, Any, Any]] = (
        ("type", map_type_name(spec.type), map_type_name(info.type)),
        ("key_size", spec.key_size, info.key_size),
        ("value_size", spec.value_size, info.value_size),
        ("max_entries", spec.max_entries, info.max_entries),
        ("flags", hex(spec.create_flags), hex(int(info.flags))),
        ("map_extra", spec.map_extra, info.map_extra),
    )
    return [f"{field}: {want} (object) != {have} (pinned)" for field, want, have in pairs if want != have]


def _point_at(code: bytearray, insn: int, fd: int, offset: int | None, program: str) -> None:
    """Make the ``ld_imm64`` at ``insn`` load map ``fd`` (or the address ``offset`` into its value)."""
    at = insn * 8
    if at + 16 > len(code) or code[at] != LD_IMM64:
        raise ValueError(f"program {program!r}: instruction {insn} is not an ld_imm64 to fill with a map")
    src = PSEUDO_MAP_FD if offset is None else PSEUDO_MAP_VALUE
    regs = code[at + 1]
    code[at + 1] = (src << 4 | regs & 0x0F) if sys.byteorder == "little" else (regs & 0xF0 | src)
    _IMM.pack_into(code, at + 4, fd)
    _IMM.pack_into(code, at + 12, offset or 0)
