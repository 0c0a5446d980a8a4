"""``read_object``: an object file's maps, programs and BTF as specs, without touching the kernel."""

from __future__ import annotations

import dataclasses
import os

from ..btf import BTFError
from ..map import MapSpec
from .btf import ObjectBTF, read_btf
from .maps import read_maps
from ..programs.spec import ProgramSpec
from .programs import read_programs
from .reader import ElfFile


@dataclasses.dataclass
class ElfObject:
    """What an object file holds: ``maps`` and ``programs`` by name, and its ``btf`` (or None)."""

    name: str
    maps: dict[str, MapSpec]
    programs: dict[str, ProgramSpec]
    btf: ObjectBTF | None


def read_object(data: bytes, path: str = "<bytes>", name: str | None = None) -> ElfObject:
    """Read a BPF object from its bytes; ``path`` names it in errors, ``name`` (default: the file
    name up to its first dot, as libbpf) prefixes its global data maps."""
    if name is None:
        name = os.path.basename(path).split(".", 1)[0] if path != "<bytes>" else ""
    elf = ElfFile(bytes(data), path)
    try:
        btf = read_btf(elf)
        maps = read_maps(elf, btf, name)
        programs = read_programs(elf, btf, maps)
    except BTFError as err:  # a type decoded on first use was malformed
        raise elf.fail(f"BTF: {err}") from None
    return ElfObject(name, maps.specs, programs, btf)
