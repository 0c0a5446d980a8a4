"""``ProgramSpec``: a program described as plain data, checked without the kernel."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .._sys.constants import OBJ_NAME_LEN, AttachType, ProgramType, member
from ..asm import Assembler, Insn, encode

if TYPE_CHECKING:
    from ..btf import BtfHandle, CoreRelo, FuncInfo, LineInfo

_NAME_RE = re.compile(r"^[A-Za-z0-9_.]*$")
_MAX_INSNS = 1_000_000  # BPF_COMPLEXITY_LIMIT_INSNS: the most a privileged program may have


@dataclasses.dataclass(frozen=True, slots=True)
class MapReference:
    """An ``ld_imm64`` at instruction ``insn`` loading map ``map`` (a name in the collection), or
    (with ``offset``) the address ``offset`` bytes into its value (global data)."""

    insn: int
    map: str
    offset: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ExternReference:
    """An instruction that refers to a kernel symbol (``__ksym``): an ``ld_imm64`` of a kernel
    variable's or function's address, or (``call``) a call of a kernel function; loading
    resolves ``name`` against the running kernel."""

    insn: int
    name: str
    function: bool = False
    call: bool = False


@dataclasses.dataclass
class ProgramSpec:
    """Everything ``BPF_PROG_LOAD`` needs: ``type``, ``insns`` (``Insn`` list, ``Assembler`` or bytes),
    ``license``, ``name`` (at most 15 characters), ``expected_attach_type``, ``flags``.

    ``btf`` (a loaded ``BtfHandle``) with ``func_info``/``line_info`` (``insn_off`` counted in
    instructions) describes the functions and source lines; they are sent only with ``btf``.

    ``attach_to`` names the kernel function (or tracepoint) of a BTF-typed program (fentry,
    fexit, fmod_ret, tp_btf, lsm); its BTF id is looked up in vmlinux BTF at load.

    A program read from an object file also has its ``section``, the map ``references`` that
    loading fills with fds, and its CO-RE relocations (``core_relos``, applied at load against the
    running kernel's BTF) and references to kernel symbols (``externs``, resolved at load).
    """

    type: ProgramType | int
    insns: Sequence[Insn] | Assembler | bytes
    license: str = "GPL"
    name: str = ""
    expected_attach_type: AttachType | int | None = None
    flags: int = 0
    kern_version: int = 0
    btf: BtfHandle | None = None
    func_info: Sequence[FuncInfo] = ()
    line_info: Sequence[LineInfo] = ()
    attach_to: str = ""
    section: str = ""
    references: Sequence[MapReference] = ()
    core_relos: Sequence[CoreRelo] = ()
    externs: Sequence[ExternReference] = ()

    def instructions(self) -> bytes:
        """The encoded instructions (an ``Assembler`` is assembled, labels resolved)."""
        if isinstance(self.insns, Assembler):
            return bytes(self.insns)
        if isinstance(self.insns, (bytes, bytearray, memoryview)):
            return bytes(self.insns)
        return encode(list(self.insns))

    def validate(self) -> None:
        """Raise ``ValueError``/``TypeError`` naming the field for anything the kernel would refuse."""
        if isinstance(self.type, bool) or not isinstance(self.type, int) or not 0 < self.type < 1 << 32:
            raise ValueError(f"ProgramSpec.type must be a ProgramType, not {self.type!r}")
        if not isinstance(self.name, str) or len(self.name.encode()) >= OBJ_NAME_LEN or not _NAME_RE.match(self.name):
            raise ValueError(
                f"ProgramSpec.name {self.name!r}: at most {OBJ_NAME_LEN - 1} characters of letters, digits, '_' and '.'"
            )
        if not isinstance(self.license, str) or "\0" in self.license:
            raise ValueError(f"ProgramSpec.license must be a string without NUL, not {self.license!r}")
        if not isinstance(self.insns, Assembler | bytes | bytearray | memoryview):
            if isinstance(self.insns, str) or not isinstance(self.insns, Sequence):
                raise TypeError(f"ProgramSpec.insns must be Insn objects, an Assembler or bytes, not {type(self.insns).__name__}")
            for i, insn in enumerate(self.insns):
                if not isinstance(insn, Insn):
                    raise TypeError(f"ProgramSpec.insns[{i}] must be an Insn, not {insn!r}")
        if isinstance(self.flags, bool) or not isinstance(self.flags, int) or not 0 <= self.flags < 1 << 32:
            raise ValueError(f"ProgramSpec.flags {self.flags!r} is not a 32-bit flag set")
        if isinstance(self.kern_version, bool) or not isinstance(self.kern_version, int) or not 0 <= self.kern_version < 1 << 32:
            raise ValueError(f"ProgramSpec.kern_version {self.kern_version!r} is out of range")
        if self.expected_attach_type is not None:
            member(AttachType, self.expected_attach_type, "ProgramSpec.expected_attach_type")
        code = self.instructions()
        if not code:
            raise ValueError("ProgramSpec.insns is empty")
        if len(code) % 8:
            raise ValueError(f"ProgramSpec.insns: {len(code)} bytes is not a whole number of instructions")
        if len(code) // 8 > _MAX_INSNS:
            raise ValueError(f"ProgramSpec.insns: {len(code) // 8} instructions is more than the kernel's {_MAX_INSNS}")

    def copy(self, **changes: Any) -> ProgramSpec:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)
