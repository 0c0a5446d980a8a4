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
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from ._sys import bpffs
from ._sys.constants import MapType, Pinning
from ._sys.traits import MAP_TYPES
from .asm.patch import set_map
from .btf import BTF, BtfHandle
from .btf import load as load_btf
from .btf.core import POISON, Poisoned, kernel_targets, relocate
from .btf.typed import map_types
from .elf import ElfObject, ObjectBTF, read_object
from .elf.btf import KCONFIG
from .externs import kconfig_data
from .externs import resolve as resolve_externs
from .errors import BPFError, VerifierError
from .map import Map, MapInfo, MapSpec
from ._sys.traits import map_type_name
from ._sys.cpus import possible_cpus
from .pins import make_pin_dir
from .programs import Link, Program, ProgramSpec
from .variables import Variables, VariableSpecs

DEFAULT_PIN_ROOT = Path("/sys/fs/bpf")
"""Where maps pinned by name go when ``load`` is given no ``pin_root`` (libbpf's default)."""

_FD_VALUES = (MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS, MapType.PROG_ARRAY)
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
    kconfig: str | os.PathLike[str] | None = None
    """The kernel configuration ``__kconfig`` externs read (default: ``/proc/config.gz``, then
    ``/boot/config-$(uname -r)``)."""

    @property
    def variables(self) -> VariableSpecs:
        """Global variables by name (``.data``, ``.rodata``, ``.bss``): set initial values before
        ``load()``, checked against their BTF types (size, range)."""
        if self.btf is None:
            raise ValueError("the object has no BTF: its global variables have no names or types")
        return VariableSpecs(self.btf.types, self.maps)

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

    def __init__(self, maps: dict[str, Map], programs: dict[str, Program], btf: BTF | None = None) -> None:
        """Take ownership of ``maps`` and ``programs``; ``btf`` (the object's) names their variables."""
        self.maps = maps
        self.programs = programs
        self.links: dict[str, Link] = {}
        """Links made by ``attach_all``, by program name; closed (detached) with the collection."""
        self._btf = btf
        self._variables: Variables | None = None

    def attach_all(self) -> dict[str, Link]:
        """Attach every program whose section name says where, as a libbpf skeleton does
        (``tracepoint/syscalls/sys_enter_openat``, ``kprobe/do_unlinkat``, ``uprobe//path:func``,
        ``fentry/func``, ...); others are left alone. The collection owns the links."""
        from .programs.tracing import attach_programs

        self.links.update(attach_programs({n: p for n, p in self.programs.items() if n not in self.links}))
        return dict(self.links)

    @property
    def variables(self) -> Variables:
        """Global variables by name, read and written through the data maps' memory (``.rodata``
        reads only)."""
        if self._btf is None:
            raise ValueError("the collection has no BTF: its global variables have no names or types")
        if self._variables is None:
            self._variables = Variables(self._btf, self.maps)
        return self._variables

    def close(self) -> None:
        """Detach what ``attach_all`` attached; close every program and map (pinned and otherwise
        attached ones live on). Idempotent."""
        for link in self.links.values():
            link.close()
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
            for name, program in self.spec.programs.items():
                self.programs[name] = _noting(f"program {name!r} (section {program.section!r})", self._program, program)
            for name, spec in self.spec.maps.items():
                _noting(f"the static values of map {name!r}", self._static_values, name, spec)
        except BaseException:
            self._undo()
            raise
        finally:
            if self.btf is not None:
                self.btf.close()
        return Collection(self.maps, self.programs, self.spec.btf.types if self.spec.btf is not None else None)

    def _map(self, name: str, spec: MapSpec) -> Map:
        changes: dict[str, Any] = {}
        if self.btf is not None and spec.btf is None and (spec.btf_key_type_id or spec.btf_value_type_id):
            changes["btf"] = self.btf
        if spec.inner_map is not None and self.btf is not None and spec.inner_map.btf is None:
            changes["inner_map"] = spec.inner_map.copy(btf=self.btf)
        if spec.type in _FD_VALUES:
            changes["contents"] = ()  # filled once every map and program exists
        if self.spec.btf is not None and _takes_btf_types(spec.type) and (spec.key is None or spec.value is None):
            key, value = map_types(self.spec.btf.types, spec.btf_key_type_id, spec.btf_value_type_id, name, spec.key_size or 0, spec.value_size or 0)
            changes["key"] = spec.key if spec.key is not None else key
            changes["value"] = spec.value if spec.value is not None else value
        if name == KCONFIG and self.spec.btf is not None:
            changes["contents"] = ((0, kconfig_data(self.spec.btf.externs.values(), self.spec.btf.types, spec.value_size or 0, self.spec.kconfig)),)
        if spec.type == MapType.PERF_EVENT_ARRAY and not spec.max_entries:
            changes["max_entries"] = possible_cpus()
        if changes:
            spec = spec.copy(**changes)
        path = self.pin_root / name if spec.pinning == Pinning.BY_NAME else None
        if path is not None and bpffs.lexists(path):
            self.reused.add(name)
            return _reuse(name, spec, path)
        created = Map.create(spec)
        try:
            if name.startswith(".rodata") or name == KCONFIG:
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
        poisoned: list[Poisoned] = []
        if spec.core_relos:
            assert self.spec.btf is not None
            poisoned = relocate(code, spec.core_relos, self.spec.btf.types, kernel_targets(), spec.name)
        if spec.externs:
            assert self.spec.btf is not None
            resolve_externs(code, spec.externs, self.spec.btf.externs, self.spec.btf.types, spec.name)
        for ref in spec.references:
            try:
                set_map(code, ref.insn, self.maps[ref.map].fd, ref.offset)
            except ValueError as err:
                raise ValueError(f"program {spec.name!r}: {err}") from None
        btf = spec.btf
        if btf is None and (spec.func_info or spec.line_info):
            btf = self.btf
        try:
            return Program.load(spec.copy(insns=bytes(code), btf=btf))
        except VerifierError as err:
            if not poisoned or str(POISON) not in err.log:
                raise
            reasons = "; ".join(f"instruction {p.insn}: {p.description}" for p in poisoned)
            raise VerifierError(err.errno or errno.EINVAL, err.op, err.name, log=err.log,
                                message=f"CO-RE relocations of program {spec.name!r} failed and the verifier reached them: {reasons}") from None

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
                bpffs.unlink(path)
            except OSError:
                pass


def _noting(what: str, step: Callable[..., _T], *args: Any) -> _T:
    """Run one loading step; a failure says which entry of the collection it was about."""
    try:
        return step(*args)
    except BPFError as err:
        err.add_note(f"while loading {what} of the collection")
        raise


def _takes_btf_types(map_type: MapType | int) -> bool:
    traits = MAP_TYPES.get(map_type)  # type: ignore[arg-type]
    return traits is not None and traits.btf_types and not traits.fd_values


def _check(spec: CollectionSpec) -> None:
    """Refuse, before any syscall, what cannot load: unknown program types, dangling names."""
    for name, program in spec.programs.items():
        if not program.type:
            raise ValueError(f"program {name!r}: section {program.section!r} does not say its type; set CollectionSpec.programs[{name!r}].type")
        if (program.core_relos or program.externs) and spec.btf is None:
            raise ValueError(f"program {name!r} has CO-RE relocations or externs but the collection has no BTF to read them with")
        for ref in program.references:
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
