"""``ElfFile``: the sections, symbols and relocations of a BPF object.

pyelftools reads the ELF and section headers; every failure of it (``ELFError``,
``ELFParseError``, ``struct.error``, ...) becomes a ``pybpf.elf.ELFError`` naming the file and
what was being read. Section contents are checked to lie inside the file before they are read,
so a hostile header cannot make the reader allocate or read past the data it was given. The
symbol and relocation tables, arrays of fixed-size records, are decoded in one ``struct`` pass
each (pyelftools' per-record decoding costs more than the rest of loading an object).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import struct
import sys
from collections.abc import Iterator

from elftools.common.exceptions import ELFError as _PyELFError
from elftools.construct import ConstructError
from elftools.elf.elffile import ELFFile

from ..errors import ELFError

SHF_EXECINSTR = 0x4
"""Section flag: the section holds instructions."""

_READER_ERRORS = (
    _PyELFError,
    ConstructError,
    struct.error,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    ZeroDivisionError,
    OverflowError,
    UnicodeDecodeError,
    RecursionError,
)
_REL = struct.Struct("=QQ")  # Elf64_Rel: r_offset, r_info
_SYM = struct.Struct("=IBBHQQ")  # Elf64_Sym: st_name, st_info, st_other, st_shndx, st_value, st_size
_SHN_LORESERVE = 0xFF00  # st_shndx from here up is special (ABS, COMMON, XINDEX)
_SYMBOL_TYPES = {0: "STT_NOTYPE", 1: "STT_OBJECT", 2: "STT_FUNC", 3: "STT_SECTION", 4: "STT_FILE"}
_BINDS = {0: "STB_LOCAL", 1: "STB_GLOBAL", 2: "STB_WEAK"}


@dataclasses.dataclass(frozen=True, slots=True)
class Section:
    """One section: its header fields and contents (empty for NOBITS sections such as ``.bss``)."""

    index: int
    name: str
    type: str
    flags: int
    size: int
    link: int
    info: int
    data: bytes

    @property
    def executable(self) -> bool:
        """Whether the section holds BPF instructions."""
        return self.type == "SHT_PROGBITS" and bool(self.flags & SHF_EXECINSTR)


@dataclasses.dataclass(frozen=True, slots=True)
class Symbol:
    """One symbol table entry; ``section`` is None for undefined, absolute and common symbols."""

    index: int
    name: str
    value: int
    size: int
    type: str
    bind: str
    section: int | None


@dataclasses.dataclass(frozen=True, slots=True)
class Relocation:
    """One ``Elf64_Rel``: at ``offset`` in the section it applies to, refer to ``symbol``."""

    offset: int
    type: int
    symbol: Symbol


class ElfFile:
    """A BPF object's sections (``sections``, ``section(name)``), ``symbols`` and ``relocations(index)``."""

    def __init__(self, data: bytes, path: str = "<bytes>") -> None:
        """Read the headers and symbol table of ``data`` (the object's bytes); ``path`` names it in errors."""
        self.path = path
        with self.reading("the ELF header"):
            elf = ELFFile(io.BytesIO(data))
            machine, elfclass, little = elf["e_machine"], elf.elfclass, elf.little_endian
        if machine != "EM_BPF":
            raise ELFError(f"{path}: not a BPF object (machine {machine})")
        if elfclass != 64:
            raise ELFError(f"{path}: not a 64-bit ELF object")
        if little != (sys.byteorder == "little"):
            order = "little" if little else "big"
            raise ELFError(f"{path}: the object is {order}-endian, this machine is {sys.byteorder}-endian (compile with -target bpf)")
        self.sections: list[Section] = []
        with self.reading("the section headers"):
            for index in range(elf.num_sections()):
                self.sections.append(_section(elf, index, len(data), path))
        self._by_name = {s.name: s for s in reversed(self.sections)}
        table = next((s for s in self.sections if s.type == "SHT_SYMTAB"), None)
        self.symbols = self._read_symbols(table) if table is not None else []
        self._relocations = self._read_relocations()

    @contextlib.contextmanager
    def reading(self, what: str) -> Iterator[None]:
        """Turn reader failures inside the block into an ``ELFError`` naming the file and ``what``."""
        try:
            yield
        except ELFError:
            raise
        except _READER_ERRORS as err:
            raise ELFError(f"{self.path}: cannot read {what}: {err or type(err).__name__}") from None

    def fail(self, message: str) -> ELFError:
        """An ``ELFError`` about this file."""
        return ELFError(f"{self.path}: {message}")

    def section(self, name: str) -> Section | None:
        """The first section called ``name``, or None."""
        return self._by_name.get(name)

    def relocations(self, index: int) -> list[Relocation]:
        """The relocations that apply to section ``index``, in file order."""
        return self._relocations.get(index, [])

    def _read_symbols(self, table: Section) -> list[Symbol]:
        """The entries of the symbol table (fixed-size records, decoded in one pass)."""
        if len(table.data) % _SYM.size:
            raise self.fail(f"section {table.name!r}: size {len(table.data)} is not a whole number of symbols")
        if not 0 < table.link < len(self.sections):
            raise self.fail(f"section {table.name!r}: its string table {table.link} does not exist")
        strings = self.sections[table.link].data
        symbols = []
        for index, (name_off, info, _, shndx, value, size) in enumerate(_SYM.iter_unpack(table.data)):
            end = strings.find(b"\0", name_off)
            if end < 0:
                raise self.fail(f"symbol {index}: its name at {name_off} is outside the string table")
            if shndx == 0 or shndx >= _SHN_LORESERVE:
                section = None
            elif shndx < len(self.sections):
                section = shndx
            else:
                raise self.fail(f"symbol {index}: section {shndx} does not exist")
            name = strings[name_off:end].decode("utf-8", "replace")
            symbols.append(Symbol(index, name, value, size, _SYMBOL_TYPES.get(info & 0xF, "STT_OTHER"), _BINDS.get(info >> 4, "STB_OTHER"), section))
        return symbols

    def _read_relocations(self) -> dict[int, list[Relocation]]:
        out: dict[int, list[Relocation]] = {}
        for section in self.sections:
            if section.type == "SHT_RELA":
                raise self.fail(f"section {section.name!r}: RELA relocations are not used by BPF objects")
            if section.type != "SHT_REL" or not 0 < section.info < len(self.sections):
                continue
            target = self.sections[section.info]
            if not (target.executable or target.name in (".maps", "maps")):
                continue  # debug info relocations: nothing to do for loading
            if len(section.data) % _REL.size:
                raise self.fail(f"section {section.name!r}: size {len(section.data)} is not a whole number of relocations")
            entries = out.setdefault(section.info, [])
            for offset, info in _REL.iter_unpack(section.data):
                sym_index = info >> 32
                if not 0 <= sym_index < len(self.symbols):
                    raise self.fail(f"section {section.name!r}: relocation at {offset:#x} refers to symbol {sym_index}, which does not exist")
                entries.append(Relocation(offset, info & 0xFFFFFFFF, self.symbols[sym_index]))
        return out


def _section(elf: ELFFile, index: int, file_size: int, path: str) -> Section:
    """Section ``index`` with its contents read as stored (never decompressed), bounds checked."""
    found = elf.get_section(index)
    header, name = found.header, found.name if index else ""
    kind, size, offset = header["sh_type"], header["sh_size"], header["sh_offset"]
    if kind in ("SHT_NOBITS", "SHT_NULL"):
        data = b""
    else:
        if offset + size > file_size:
            raise ELFError(f"{path}: section {name!r} ({offset:#x}+{size:#x}) runs past the end of the file ({file_size:#x} bytes)")
        elf.stream.seek(offset)
        data = elf.stream.read(size)
    return Section(index, name, str(kind), header["sh_flags"], size, header["sh_link"], header["sh_info"], data)
