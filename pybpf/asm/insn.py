"""eBPF instructions: registers, opcode fields and ``Insn``, the 8-byte (or 16-byte) encoding.

Opcode layout (``include/uapi/linux/bpf_common.h``, ``bpf.h``): the low 3 bits are the class;
ALU and jump classes add a source bit (K = immediate, X = register) and a 4-bit operation; load
and store classes add a size and a mode.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
import sys
from collections.abc import Sequence


class Reg(enum.IntEnum):
    """The eleven registers: R0 return value, R1-R5 arguments, R6-R9 callee-saved, R10 frame pointer."""

    R0 = 0
    R1 = 1
    R2 = 2
    R3 = 3
    R4 = 4
    R5 = 5
    R6 = 6
    R7 = 7
    R8 = 8
    R9 = 9
    R10 = 10


R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 = Reg
FP = Reg.R10
"""The read-only frame pointer: the stack lives below it (``R10 - 8`` ... ``R10 - 512``)."""


class Class(enum.IntEnum):
    """Instruction class: the low 3 bits of the opcode."""

    LD = 0x00
    LDX = 0x01
    ST = 0x02
    STX = 0x03
    ALU = 0x04
    JMP = 0x05
    JMP32 = 0x06
    ALU64 = 0x07


class Size(enum.IntEnum):
    """Access size of a load or store, by its width in bytes."""

    B = 1
    H = 2
    W = 4
    DW = 8


B, H, W, DW = Size
SIZE_BITS = {Size.W: 0x00, Size.H: 0x08, Size.B: 0x10, Size.DW: 0x18}
"""The opcode's size field for each ``Size``."""


class Mode(enum.IntEnum):
    """Addressing mode of a load or store."""

    IMM = 0x00
    ABS = 0x20
    IND = 0x40
    MEM = 0x60
    MEMSX = 0x80
    ATOMIC = 0xC0


class AluOp(enum.IntEnum):
    """ALU operation (bits 4-7 of an ALU/ALU64 opcode)."""

    ADD = 0x00
    SUB = 0x10
    MUL = 0x20
    DIV = 0x30
    OR = 0x40
    AND = 0x50
    LSH = 0x60
    RSH = 0x70
    NEG = 0x80
    MOD = 0x90
    XOR = 0xA0
    MOV = 0xB0
    ARSH = 0xC0
    END = 0xD0


class JmpOp(enum.IntEnum):
    """Jump operation (bits 4-7 of a JMP/JMP32 opcode)."""

    JA = 0x00
    JEQ = 0x10
    JGT = 0x20
    JGE = 0x30
    JSET = 0x40
    JNE = 0x50
    JSGT = 0x60
    JSGE = 0x70
    CALL = 0x80
    EXIT = 0x90
    JLT = 0xA0
    JLE = 0xB0
    JSLT = 0xC0
    JSLE = 0xD0


SRC_K = 0x00
"""Source bit: the operand is the immediate."""
SRC_X = 0x08
"""Source bit: the operand is ``src`` register."""
TO_LE = 0x00
"""``END`` direction: convert to little endian (with ALU64: unconditional byte swap)."""
TO_BE = 0x08
"""``END`` direction: convert to big endian."""

LD_IMM64 = Class.LD | Mode.IMM | 0x18
"""The only 16-byte instruction: ``dst = imm64`` (or a map reference when ``src`` is a pseudo)."""
PSEUDO_MAP_FD = 1
"""``src`` of ``LD_IMM64``: ``imm`` is a map fd, the kernel loads the map's address."""
PSEUDO_MAP_VALUE = 2
"""``src`` of ``LD_IMM64``: low half a map fd, high half an offset into its value (array maps)."""
PSEUDO_BTF_ID = 3
"""``src`` of ``LD_IMM64``: ``imm`` is a kernel BTF id of a variable (``__ksym``), the kernel loads its address."""
PSEUDO_FUNC = 4
"""``src`` of ``LD_IMM64``: ``imm`` is a relative offset to a BPF function, the kernel loads its address."""
CALL = Class.JMP | JmpOp.CALL
"""The call opcode: a helper (``src`` 0), a BPF function or a kernel function (``src`` a pseudo)."""
PSEUDO_CALL = 1
"""``src`` of ``CALL``: ``imm`` is a relative offset to a BPF function, not a helper id."""
PSEUDO_KFUNC_CALL = 2
"""``src`` of ``CALL``: ``imm`` is the BTF id of a kernel function (``off``: the BTF fd's index, 0 for vmlinux)."""

_S32 = (-(1 << 31), (1 << 32) - 1)
_S64 = (-(1 << 63), (1 << 64) - 1)
_LITTLE = sys.byteorder == "little"
_PACK = struct.Struct("=BBhi")


def _signed(value: int, bits: int) -> int:
    """``value`` wrapped into a signed ``bits``-wide integer (u32 0xffffffff -> -1)."""
    half = 1 << (bits - 1)
    return ((value + half) % (1 << bits)) - half


@dataclasses.dataclass(frozen=True)
class Insn:
    """One instruction: ``code``, ``dst``, ``src``, ``off``, ``imm``; ``bytes(insn)`` is its encoding.

    ``LD_IMM64`` is one ``Insn`` of two slots (16 bytes) whose ``imm`` holds all 64 bits. ``target``
    names the label of a jump not yet resolved by ``Assembler.assemble``.
    """

    code: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0
    target: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.code <= 0xFF:
            raise ValueError(f"Insn.code {self.code:#x} is not one byte")
        for field in ("dst", "src"):
            if not 0 <= getattr(self, field) <= 0xF:
                raise ValueError(f"Insn.{field} {getattr(self, field)} is not a register number (0-15)")
        if not -(1 << 15) <= self.off < (1 << 15):
            raise ValueError(f"Insn.off {self.off} does not fit in 16 signed bits")
        low, high = _S64 if self.wide else _S32
        if not low <= self.imm <= high:
            raise ValueError(f"Insn.imm {self.imm} does not fit in {64 if self.wide else 32} bits")

    @property
    def wide(self) -> bool:
        """Whether this is the two-slot ``LD_IMM64``."""
        return self.code == LD_IMM64

    @property
    def slots(self) -> int:
        """How many 8-byte slots the instruction takes (jump offsets count slots)."""
        return 2 if self.wide else 1

    def __bytes__(self) -> bytes:
        regs = (self.src << 4 | self.dst) if _LITTLE else (self.dst << 4 | self.src)
        if not self.wide:
            return _PACK.pack(self.code, regs, self.off, _signed(self.imm, 32))
        imm = self.imm & 0xFFFF_FFFF_FFFF_FFFF
        return _PACK.pack(self.code, regs, self.off, _signed(imm & 0xFFFF_FFFF, 32)) + _PACK.pack(
            0, 0, 0, _signed(imm >> 32, 32)
        )

    @classmethod
    def unpack(cls, data: bytes) -> list[Insn]:
        """Decode a program's bytes (as clang or the kernel gives them) into instructions."""
        if len(data) % 8:
            raise ValueError(f"program length {len(data)} is not a multiple of 8 bytes")
        out: list[Insn] = []
        slots = [_PACK.unpack_from(data, at) for at in range(0, len(data), 8)]
        i = 0
        while i < len(slots):
            code, regs, off, imm = slots[i]
            dst, src = (regs & 0xF, regs >> 4) if _LITTLE else (regs >> 4, regs & 0xF)
            if code == LD_IMM64:
                if i + 1 >= len(slots):
                    raise ValueError(f"LD_IMM64 at slot {i} lacks its second half")
                imm = (imm & 0xFFFF_FFFF) | (slots[i + 1][3] & 0xFFFF_FFFF) << 32
                i += 1
            out.append(cls(code, dst, src, off, imm))
            i += 1
        return out


def encode(insns: Sequence[Insn]) -> bytes:
    """The bytes of a resolved instruction list, ready for ``BPF_PROG_LOAD``."""
    unresolved = [insn.target for insn in insns if insn.target is not None]
    if unresolved:
        raise ValueError(f"jump to label {unresolved[0]!r} is not resolved: assemble() the program first")
    return b"".join(bytes(insn) for insn in insns)
