"""A small eBPF assembler, so ready-made programs need no compiler.

``Assembler`` builds a program with jumps to labels; ``Insn`` is one encoded instruction;
``Helper`` names the kernel's helper functions for ``call``.
"""

from .assembler import Assembler
from .helpers import Helper, helper_id
from .insn import (
    B,
    DW,
    FP,
    H,
    LD_IMM64,
    PSEUDO_MAP_FD,
    PSEUDO_MAP_VALUE,
    R0,
    R1,
    R2,
    R3,
    R4,
    R5,
    R6,
    R7,
    R8,
    R9,
    R10,
    W,
    AluOp,
    Class,
    Insn,
    JmpOp,
    Mode,
    Reg,
    Size,
    encode,
)

__all__ = [
    "Assembler", "AluOp", "B", "Class", "DW", "FP", "H", "Helper", "Insn", "JmpOp", "LD_IMM64", "Mode",
    "PSEUDO_MAP_FD", "PSEUDO_MAP_VALUE", "R0", "R1", "R10", "R2", "R3", "R4", "R5", "R6", "R7", "R8", "R9",
    "Reg", "Size", "W", "encode", "helper_id",
]
