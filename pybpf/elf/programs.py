"""Programs of an object: one per function in a program section, linked with what it calls.

Functions in ``.text`` (and any other function a program calls) are subprograms: each program
gets a copy of every function it reaches, appended after its own code, with call offsets fixed.
``ld_imm64`` instructions that name a map or global data become ``MapReference`` records that
loading turns into map fds; the object's ``.BTF.ext`` func_info and line_info follow the code.
"""

from __future__ import annotations

import bisect
import dataclasses
import sys

from .._sys.constants import ProgramType
from ..asm.insn import CALL, LD_IMM64, PSEUDO_CALL, PSEUDO_FUNC
from ..asm.patch import INSN_SIZE, code_at, imm_at, set_imm, set_src, src_at
from ..btf import CoreRelo, FuncInfo, LineInfo
from ..programs.spec import ExternReference, MapReference, ProgramSpec
from .btf import KCONFIG, ObjectBTF
from .maps import ObjectMaps
from .names import kernel_name
from .reader import ElfFile, Relocation, Section
from .sections import section_def

MAX_LINKED_BYTES = 16 << 20 << 3
"""The most code all programs may add up to once linked (16M instructions, sixteen times what
the kernel verifies in one program): every program carries its own copy of the subprograms it
calls, so a hostile object could otherwise make a small file expand without bound."""
_CALL_BYTE = bytes([CALL])
_S32 = (-(1 << 31), (1 << 31) - 1)


@dataclasses.dataclass(frozen=True, slots=True)
class _Function:
    name: str
    section: Section
    start: int
    end: int


def read_programs(elf: ElfFile, btf: ObjectBTF | None, maps: ObjectMaps) -> dict[str, ProgramSpec]:
    """Every program of the object, linked: ``{function name: spec}``."""
    functions = _functions(elf)
    license = _license(elf)
    version = _kern_version(elf)
    linker = _Linker(elf, btf, maps, {(f.section.index, f.start): f for f in functions})
    programs: dict[str, ProgramSpec] = {}
    total = 0
    for function in functions:
        if function.section.name == ".text":
            continue
        if function.name in programs:
            raise elf.fail(f"two programs are named {function.name!r}")
        found = section_def(function.section.name)
        code, references, func_info, line_info, core_relos = linker.link(function)
        total += len(code)
        if total > MAX_LINKED_BYTES:
            raise elf.fail(f"its programs with their subprograms exceed {MAX_LINKED_BYTES // INSN_SIZE} instructions in all")
        programs[function.name] = ProgramSpec(
            type=found.type if found else ProgramType.UNSPEC,
            insns=code,
            license=license,
            name=kernel_name(function.name),
            expected_attach_type=found.attach if found else None,
            flags=found.flags if found else 0,
            kern_version=version,
            func_info=func_info,
            line_info=line_info,
            section=function.section.name,
            references=references,
            core_relos=core_relos,
            externs=tuple(linker.extern_refs),
        )
    return programs


def _functions(elf: ElfFile) -> list[_Function]:
    """The functions of every executable section, by section and offset (a section without
    function symbols is one function named after it)."""
    found: list[_Function] = []
    for section in elf.sections:
        if not section.executable or not section.data:
            continue
        if len(section.data) % INSN_SIZE:
            raise elf.fail(f"section {section.name!r}: size {len(section.data)} is not a whole number of instructions")
        symbols = sorted((s for s in elf.symbols if s.section == section.index and s.type == "STT_FUNC"), key=lambda s: s.value)
        if not symbols:
            found.append(_Function(section.name, section, 0, len(section.data) // INSN_SIZE))
            continue
        for symbol in symbols:
            start, size = symbol.value, symbol.size
            if start % INSN_SIZE or size % INSN_SIZE or size == 0 or start + size > len(section.data):
                raise elf.fail(f"function {symbol.name!r}: {start}+{size} is not whole instructions inside {section.name!r}")
            found.append(_Function(symbol.name, section, start // INSN_SIZE, (start + size) // INSN_SIZE))
    return found


def _relocations_by_insn(elf: ElfFile, section: Section) -> dict[int, Relocation]:
    """The relocations of an executable section by the index of the instruction they apply to."""
    found = {}
    for relocation in elf.relocations(section.index):
        if relocation.offset % INSN_SIZE or relocation.offset >= len(section.data):
            raise elf.fail(f"section {section.name!r}: relocation at {relocation.offset:#x} is not at an instruction")
        found[relocation.offset // INSN_SIZE] = relocation
    return found


def _license(elf: ElfFile) -> str:
    section = elf.section("license")
    return section.data.split(b"\0", 1)[0].decode("latin-1") if section is not None else ""


def _kern_version(elf: ElfFile) -> int:
    section = elf.section("version")
    if section is None:
        return 0
    if len(section.data) != 4:
        raise elf.fail(f"section 'version' is {len(section.data)} bytes, not 4")
    return int.from_bytes(section.data, sys.byteorder)


class _Linker:
    """Builds one program at a time: its function, then every function it reaches, appended."""

    def __init__(self, elf: ElfFile, btf: ObjectBTF | None, maps: ObjectMaps, starts: dict[tuple[int, int], _Function]) -> None:
        self.elf, self.maps, self.starts = elf, maps, starts
        self.ext = btf.ext if btf is not None else None
        self.externs = btf.externs if btf is not None else {}
        self.ext_index: dict[str, _ExtIndex] = {}
        self.relocations = {s.index: _relocations_by_insn(elf, s) for s in elf.sections if s.executable}
        self.sorted_relocations = {index: sorted(found) for index, found in self.relocations.items()}

    def link(self, entry: _Function) -> tuple[bytes, tuple[MapReference, ...], tuple[FuncInfo, ...], tuple[LineInfo, ...], tuple[CoreRelo, ...]]:
        """The program starting at ``entry``: code, map references, func_info, line_info, CO-RE relocations."""
        self.code = bytearray()
        self.placed: dict[tuple[int, int], int] = {}
        self.order: list[_Function] = []
        self.references: list[MapReference] = []
        self.extern_refs: list[ExternReference] = []
        self._place(entry)
        done = 0
        while done < len(self.order):
            function = self.order[done]
            self._relocate(function, self.placed[(function.section.index, function.start)])
            done += 1
        func_info, line_info, core_relos = self._btf_ext()
        return bytes(self.code), tuple(self.references), func_info, line_info, core_relos

    def _place(self, function: _Function) -> int:
        """Append ``function`` to the program (once); its first instruction's index."""
        key = (function.section.index, function.start)
        base = self.placed.get(key)
        if base is None:
            base = self.placed[key] = len(self.code) // INSN_SIZE
            self.code += function.section.data[function.start * INSN_SIZE : function.end * INSN_SIZE]
            self.order.append(function)
        return base

    def _relocate(self, function: _Function, base: int) -> None:
        """Resolve the relocations and calls of ``function``, placed at instruction ``base``."""
        data, relocations = function.section.data, self.relocations[function.section.index]
        shift = base - function.start
        for index in self._relocated(function):
            self._apply(function, index, index + shift, relocations[index])
        codes = data[function.start * INSN_SIZE : function.end * INSN_SIZE : INSN_SIZE]
        at = codes.find(_CALL_BYTE)
        while at >= 0:
            index = function.start + at
            if index not in relocations and src_at(data, index) == PSEUDO_CALL:
                target = self._function_at(function.section, index + imm_at(data, index) + 1, function, index)
                self._set_imm(index + shift, self._place(target) - index - shift - 1, function, index)
            at = codes.find(_CALL_BYTE, at + 1)

    def _relocated(self, function: _Function) -> list[int]:
        """The relocated instructions of ``function``, in order."""
        keys = self.sorted_relocations[function.section.index]
        return keys[bisect.bisect_left(keys, function.start) : bisect.bisect_left(keys, function.end)]

    def _apply(self, function: _Function, index: int, here: int, relocation: Relocation) -> None:
        """One relocated instruction: a map or data reference, a subprogram call or function address."""
        elf, symbol, section = self.elf, relocation.symbol, function.section
        code, src = code_at(section.data, index), src_at(section.data, index)
        if code == LD_IMM64 and index + 1 < function.end and symbol.section is not None:
            found = self.maps.at.get((symbol.section, symbol.value))
            if found is not None:
                self.references.append(MapReference(here, found))
                return
            found = self.maps.data.get(symbol.section)
            if found is not None:
                offset = symbol.value + imm_at(section.data, index)
                if not 0 <= offset < 1 << 31:
                    raise elf.fail(f"{_where(function, index)}: offset {offset} into {found!r} is out of range")
                self.references.append(MapReference(here, found, offset))
                return
        imm = imm_at(section.data, index)
        if symbol.section is None:
            self._extern(function, index, here, code, src, imm, symbol.name)
            return
        target_section = elf.sections[symbol.section]
        if code == CALL and src == PSEUDO_CALL:
            if symbol.value % INSN_SIZE:
                raise elf.fail(f"{_where(function, index)}: call target {symbol.name!r} is not at an instruction")
            target = self._function_at(target_section, symbol.value // INSN_SIZE + imm + 1, function, index)
            self._set_imm(here, self._place(target) - here - 1, function, index)
        elif code != LD_IMM64 or index + 1 >= function.end:
            raise elf.fail(f"{_where(function, index)}: a relocation against {symbol.name!r} on an instruction that is not ld_imm64 or a call")
        elif target_section.executable:
            offset = symbol.value + imm
            if offset % INSN_SIZE:
                raise elf.fail(f"{_where(function, index)}: function address {symbol.name!r}{imm:+} is not at an instruction")
            target = self._function_at(target_section, offset // INSN_SIZE, function, index)
            self._set_imm(here, self._place(target) - here - 1, function, index)
            set_src(self.code, here, PSEUDO_FUNC)
        else:
            raise elf.fail(f"{_where(function, index)}: refers to {symbol.name!r} in section {target_section.name!r}, which is not a map, global data or code")

    def _extern(self, function: _Function, index: int, here: int, code: int, src: int, imm: int, name: str) -> None:
        """A reference to an extern: a ``.kconfig`` variable (an address in the ``.kconfig`` map), a
        kernel variable (``ld_imm64``) or a kernel function (a call), both resolved at load."""
        found = self.externs.get(name)
        if found is None:
            raise self.elf.fail(f"{_where(function, index)}: refers to {name!r}, which the object neither defines nor declares as __kconfig or __ksym")
        if found.section == KCONFIG:
            if code != LD_IMM64 or index + 1 >= function.end:
                raise self.elf.fail(f"{_where(function, index)}: {name!r} (__kconfig) is not loaded by an ld_imm64")
            self.references.append(MapReference(here, KCONFIG, found.offset + imm))
        elif found.function and code == CALL:
            self.extern_refs.append(ExternReference(here, name, function=True, call=True))
        else:
            if code != LD_IMM64 or index + 1 >= function.end:
                raise self.elf.fail(f"{_where(function, index)}: kernel symbol {name!r} is neither called nor loaded by an ld_imm64")
            self.extern_refs.append(ExternReference(here, name, function=found.function))

    def _function_at(self, section: Section, index: int, caller: _Function, at: int) -> _Function:
        found = self.starts.get((section.index, index))
        if found is None:
            raise self.elf.fail(f"{_where(caller, at)}: call to instruction {index} of {section.name!r}, which does not start a function")
        return found

    def _set_imm(self, here: int, value: int, function: _Function, index: int) -> None:
        if not _S32[0] <= value <= _S32[1]:
            raise self.elf.fail(f"{function.name!r} instruction {index}: call offset {value} does not fit in 32 bits")
        set_imm(self.code, here, value)

    def _btf_ext(self) -> tuple[tuple[FuncInfo, ...], tuple[LineInfo, ...], tuple[CoreRelo, ...]]:
        """func_info, line_info and CO-RE records of the placed functions, in program instructions.

        The kernel wants a func_info record at the start of every function or none at all, so a
        program reaching a function without one gets neither func_info nor line_info."""
        if self.ext is None:
            return (), (), ()
        funcs: list[FuncInfo] = []
        lines: list[LineInfo] = []
        relos: list[CoreRelo] = []
        for function in self.order:
            base = self.placed[(function.section.index, function.start)]
            index = self._ext_index(function.section.name)
            own = index.funcs.get(function.start)
            if own is None:
                return (), (), tuple(relos)
            funcs.append(FuncInfo(base, own.type_id))
            shift = base - function.start
            for i in index.lines[bisect.bisect_left(index.line_at, function.start) : bisect.bisect_left(index.line_at, function.end)]:
                lines.append(LineInfo(i.insn_off // INSN_SIZE + shift, i.file_name_off, i.line_off, i.line, i.column, i.file_name, i.source))
            relos += [CoreRelo(r.insn_off // INSN_SIZE + shift, r.type_id, r.access_str_off, r.kind, r.access)
                      for r in index.relos if function.start <= r.insn_off // INSN_SIZE < function.end]
        return tuple(funcs), tuple(lines), tuple(relos)

    def _ext_index(self, section: str) -> _ExtIndex:
        """The ``.BTF.ext`` records of ``section`` by instruction (built once per section)."""
        found = self.ext_index.get(section)
        if found is None:
            assert self.ext is not None
            lines = sorted(self.ext.line_info.get(section, ()), key=lambda i: i.insn_off)
            funcs = {f.insn_off // INSN_SIZE: f for f in self.ext.func_info.get(section, ()) if f.insn_off % INSN_SIZE == 0}
            found = self.ext_index[section] = _ExtIndex(funcs, lines, [i.insn_off // INSN_SIZE for i in lines], self.ext.core_relos.get(section, ()))
        return found


def _where(function: _Function, index: int) -> str:
    return f"{function.name!r} (section {function.section.name!r}, instruction {index})"


@dataclasses.dataclass(frozen=True, slots=True)
class _ExtIndex:
    """One section's ``.BTF.ext`` records: func_info by start instruction, line_info sorted."""

    funcs: dict[int, FuncInfo]
    lines: list[LineInfo]
    line_at: list[int]
    relos: tuple[CoreRelo, ...]
