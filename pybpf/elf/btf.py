"""The object's BTF made loadable: DATASEC sizes and variable offsets filled in from the ELF.

clang writes every DATASEC with size 0 and its variables at offset 0, leaving the layout to the
loader; the kernel refuses that. As libbpf does, each DATASEC takes the size of its ELF section
and each variable the value of its symbol, variables sorted by offset. The bytes are patched in
place so string offsets (which ``.BTF.ext`` line records refer to) stay valid.
"""

from __future__ import annotations

import dataclasses
import sys

from ..btf import BTF, BTFError, BTFExt, Datasec, parse, parse_ext
from ..btf.layout import MAGIC, record_offsets, set_datasec
from .reader import ElfFile, Symbol

_EXTERN_SECTIONS = (".kconfig", ".ksyms")
_U32_MAX = 0xFFFFFFFF
_FOREIGN_MAGIC = MAGIC.to_bytes(2, "big" if sys.byteorder == "little" else "little")  # BTF_MAGIC, other byte order


@dataclasses.dataclass(frozen=True)
class ObjectBTF:
    """An object's ``.BTF`` as the kernel takes it (``data``), parsed (``types``, each type decoded
    on first use), and its ``.BTF.ext``."""

    data: bytes
    types: BTF
    ext: BTFExt | None


def read_btf(elf: ElfFile) -> ObjectBTF | None:
    """The object's BTF with its layout fixed up, or None when it has no ``.BTF`` section."""
    section = elf.section(".BTF")
    if section is None:
        return None
    if section.data[:2] == _FOREIGN_MAGIC:
        raise elf.fail("section .BTF is not in this machine's byte order")
    try:
        data = _fix_datasecs(section.data, parse(section.data, lazy=True), elf)
        types = parse(data, lazy=True)
    except BTFError as err:
        raise elf.fail(f"section .BTF: {err}") from None
    ext_section = elf.section(".BTF.ext")
    try:
        ext = parse_ext(ext_section.data, types) if ext_section is not None else None
    except BTFError as err:
        raise elf.fail(f"section .BTF.ext: {err}") from None
    return ObjectBTF(data, types, ext)


def _fix_datasecs(data: bytes, btf: BTF, elf: ElfFile) -> bytes:
    """``data`` with every zero-sized DATASEC named like an ELF section laid out from it.

    ``btf`` may be lazily decoded: only the DATASECs found by name are."""
    for name in _EXTERN_SECTIONS:
        if btf.find(name, Datasec):
            raise elf.fail(f"extern variables ({name}) are not supported")
    todo = [(t, s) for s in elf.sections if s.name for t in btf.find(s.name, Datasec) if isinstance(t, Datasec) and t.size == 0]
    if not todo:
        return data
    out = bytearray(data)
    offsets = record_offsets(data)
    for datasec, section in todo:
        if section.size > _U32_MAX:
            raise elf.fail(f"section {section.name!r} is {section.size} bytes: too big for BTF")
        symbols = _section_symbols(elf, section.index)
        records = []
        for var in datasec.vars:
            name = btf.type_by_id(var.type).name
            symbol = symbols.get(name)
            if symbol is None:
                raise elf.fail(f"BTF variable {name!r} of {datasec.name!r} has no symbol in that section")
            if symbol.value > _U32_MAX:
                raise elf.fail(f"BTF variable {name!r} of {datasec.name!r} is at offset {symbol.value}: too far for BTF")
            records.append((var.type, symbol.value, var.size))
        records.sort(key=lambda record: record[1])
        set_datasec(out, offsets[datasec.id - btf.first_id], section.size, records)
    return bytes(out)


def _section_symbols(elf: ElfFile, index: int) -> dict[str, Symbol]:
    """Named data symbols of section ``index`` by name."""
    return {s.name: s for s in elf.symbols if s.section == index and s.name and s.type in ("STT_OBJECT", "STT_NOTYPE")}
