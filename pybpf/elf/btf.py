"""The object's BTF made loadable: DATASEC sizes and variable offsets filled in from the ELF,
extern variables and functions (``.kconfig``, ``.ksyms``) laid out and made acceptable.

clang writes every DATASEC with size 0 and its variables at offset 0, leaving the layout to the
loader; the kernel refuses that. As libbpf does, each DATASEC takes the size of its ELF section
and each variable the value of its symbol, variables sorted by offset. Externs have no section:
``.kconfig`` variables are laid out here (the loader fills a map of that layout from the
kernel's configuration), their VARs become global; ``.ksyms`` (resolved against the kernel at
load) becomes an anonymous struct of ints, its VARs global ints and its FUNCs global. The bytes
are patched in place so string offsets (which ``.BTF.ext`` line records refer to) stay valid.
"""

from __future__ import annotations

import dataclasses
import sys

from ..btf import BTF, BTFError, BTFExt, Datasec, Func, FuncLinkage, Int, Var, VarLinkage, parse, parse_ext
from ..btf.layout import MAGIC, datasec_to_struct, record_offsets, set_datasec, set_func_linkage, set_var
from .reader import ElfFile, Symbol

KCONFIG = ".kconfig"
"""The section of ``__kconfig`` externs (and the map that holds their values)."""
KSYMS = ".ksyms"
"""The section of ``__ksym`` externs: kernel variables and functions."""
_U32_MAX = 0xFFFFFFFF
_FOREIGN_MAGIC = MAGIC.to_bytes(2, "big" if sys.byteorder == "little" else "little")  # BTF_MAGIC, other byte order


@dataclasses.dataclass(frozen=True)
class ObjectBTF:
    """An object's ``.BTF`` as the kernel takes it (``data``), parsed (``types``, each type decoded
    on first use), and its ``.BTF.ext``."""

    data: bytes
    types: BTF
    ext: BTFExt | None
    externs: dict[str, Extern] = dataclasses.field(default_factory=dict)
    kconfig_size: int = 0
    """Bytes of the ``.kconfig`` map's value (0: the object has no ``__kconfig`` externs)."""


@dataclasses.dataclass(frozen=True)
class Extern:
    """An extern the loader resolves: a ``__kconfig`` variable (``offset`` into the ``.kconfig``
    map), or a ``__ksym`` kernel variable or function. ``type_id`` is the object's BTF type of
    the variable (or the FUNC); ``weak`` externs may be missing (they read as 0)."""

    name: str
    section: str
    type_id: int
    size: int
    weak: bool
    function: bool = False
    offset: int = 0


def read_btf(elf: ElfFile) -> ObjectBTF | None:
    """The object's BTF with its layout fixed up, or None when it has no ``.BTF`` section."""
    section = elf.section(".BTF")
    if section is None:
        return None
    if section.data[:2] == _FOREIGN_MAGIC:
        raise elf.fail("section .BTF is not in this machine's byte order")
    try:
        original = parse(section.data, lazy=True)
        data = _fix_datasecs(section.data, original, elf)
        data, externs, kconfig_size = _fix_externs(data, original, elf)
        types = parse(data, lazy=True)
    except BTFError as err:
        raise elf.fail(f"section .BTF: {err}") from None
    ext_section = elf.section(".BTF.ext")
    try:
        ext = parse_ext(ext_section.data, types) if ext_section is not None else None
    except BTFError as err:
        raise elf.fail(f"section .BTF.ext: {err}") from None
    return ObjectBTF(data, types, ext, externs, kconfig_size)


def _fix_datasecs(data: bytes, btf: BTF, elf: ElfFile) -> bytes:
    """``data`` with every zero-sized DATASEC named like an ELF section laid out from it.

    ``btf`` may be lazily decoded: only the DATASECs found by name are."""
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


def _fix_externs(data: bytes, btf: BTF, elf: ElfFile) -> tuple[bytes, dict[str, Extern], int]:
    """``data`` with the extern sections made loadable, the externs by name, the ``.kconfig`` size."""
    kconfig = [t for t in btf.find(KCONFIG, Datasec) if isinstance(t, Datasec)]
    ksyms = [t for t in btf.find(KSYMS, Datasec) if isinstance(t, Datasec)]
    if not kconfig and not ksyms:
        return data, {}, 0
    weak = {s.name for s in elf.symbols if s.section is None and s.bind == "STB_WEAK"}
    out = bytearray(data)
    offsets = record_offsets(data)

    def at(type_id: int) -> int:
        return offsets[type_id - btf.first_id]

    int_id = _int_type(btf, elf)
    externs: dict[str, Extern] = {}
    size = 0
    for datasec in kconfig:
        records = []
        for info in datasec.vars:
            var = btf.type_by_id(info.type)
            if not isinstance(var, Var):
                raise elf.fail(f"{KCONFIG}: {var.describe()} is not a variable")
            var_size = btf.sizeof(var.type)
            align = var_size if var_size in (1, 2, 4, 8) else 1
            size = (size + align - 1) // align * align
            externs[var.name] = Extern(var.name, KCONFIG, var.type, var_size, var.name in weak, offset=size)
            records.append((var.id, size, var_size))
            set_var(out, at(var.id), var.type, VarLinkage.GLOBAL)
            size += var_size
        set_datasec(out, at(datasec.id), max(size, 1), records)
    for datasec in ksyms:
        for info in datasec.vars:
            found = btf.type_by_id(info.type)
            if isinstance(found, Var):
                target = btf.resolve(found.type)
                known = found.type if target.kind.name != "VOID" else 0
                externs[found.name] = Extern(found.name, KSYMS, known, btf.sizeof(known) if known else 0, found.name in weak)
                set_var(out, at(found.id), int_id, VarLinkage.GLOBAL)
            elif isinstance(found, Func):
                externs[found.name] = Extern(found.name, KSYMS, found.id, 0, found.name in weak, function=True)
                set_func_linkage(out, at(found.id), FuncLinkage.GLOBAL)
            else:
                raise elf.fail(f"{KSYMS}: {found.describe()} is neither a variable nor a function")
        datasec_to_struct(out, at(datasec.id), int_id, 4)
    return bytes(out), externs, size


def _int_type(btf: BTF, elf: ElfFile) -> int:
    """A 4-byte int of the object's BTF (what extern placeholders are declared as)."""
    for t in btf.find("int", Int):
        if isinstance(t, Int) and t.size == 4:
            return t.id
    for type_id in range(btf.first_id, len(btf)):
        t = btf.type_by_id(type_id)
        if isinstance(t, Int) and t.size == 4:
            return t.id
    raise elf.fail("externs need a 4-byte int type in the object's BTF")


def _section_symbols(elf: ElfFile, index: int) -> dict[str, Symbol]:
    """Named data symbols of section ``index`` by name."""
    return {s.name: s for s in elf.symbols if s.section == index and s.name and s.type in ("STT_OBJECT", "STT_NOTYPE")}
