"""Reading and patching encoded instructions in place: the one byte-order-aware view of the
8-byte slot (``code``, ``dst:src`` nibbles, ``off``, ``imm``) for loaders and linkers.

The register byte holds ``dst`` in the low nibble on little-endian hosts and in the high nibble on
big-endian ones (the kernel's ``struct bpf_insn`` bitfields); everything else is native order.
"""

from __future__ import annotations

import struct
import sys

from .insn import LD_IMM64, PSEUDO_MAP_FD, PSEUDO_MAP_VALUE

INSN_SIZE = 8
"""Bytes in one instruction slot (``LD_IMM64`` takes two)."""

_LITTLE = sys.byteorder == "little"
_IMM = struct.Struct("=i")
_OFF = struct.Struct("=h")
_S32 = (-(1 << 31), (1 << 31) - 1)


def code_at(code: bytes | bytearray, index: int) -> int:
    """The opcode byte of instruction slot ``index``."""
    return code[index * INSN_SIZE]


def regs_at(code: bytes | bytearray, index: int) -> tuple[int, int]:
    """``(dst, src)`` of instruction slot ``index``."""
    regs = code[index * INSN_SIZE + 1]
    return (regs & 0x0F, regs >> 4) if _LITTLE else (regs >> 4, regs & 0x0F)


def src_at(code: bytes | bytearray, index: int) -> int:
    """The ``src`` register field of slot ``index`` (also the pseudo kind of ``ld_imm64`` and calls)."""
    return regs_at(code, index)[1]


def off_at(code: bytes | bytearray, index: int) -> int:
    """The signed 16-bit ``off`` of slot ``index``."""
    return int(_OFF.unpack_from(code, index * INSN_SIZE + 2)[0])


def imm_at(code: bytes | bytearray, index: int) -> int:
    """The signed 32-bit ``imm`` of slot ``index``."""
    return int(_IMM.unpack_from(code, index * INSN_SIZE + 4)[0])


def set_src(code: bytearray, index: int, src: int) -> None:
    """Set the ``src`` field of slot ``index`` (keeping ``dst``)."""
    if not 0 <= src <= 0xF:
        raise ValueError(f"src {src} is not a register number (0-15)")
    at = index * INSN_SIZE + 1
    code[at] = (code[at] & 0x0F | src << 4) if _LITTLE else (code[at] & 0xF0 | src)


def set_off(code: bytearray, index: int, value: int) -> None:
    """Set the signed 16-bit ``off`` of slot ``index``; ``ValueError`` if it does not fit."""
    if not -(1 << 15) <= value < 1 << 15:
        raise ValueError(f"offset {value} does not fit in 16 signed bits")
    _OFF.pack_into(code, index * INSN_SIZE + 2, value)


def set_imm(code: bytearray, index: int, value: int) -> None:
    """Set the 32-bit ``imm`` of slot ``index`` (signed, or unsigned up to 2**32-1); ``ValueError`` if it does not fit."""
    if not _S32[0] <= value <= 0xFFFFFFFF:
        raise ValueError(f"immediate {value} does not fit in 32 bits")
    _IMM.pack_into(code, index * INSN_SIZE + 4, value - (1 << 32) if value > _S32[1] else value)


def set_imm64(code: bytearray, index: int, value: int) -> None:
    """Set the 64-bit immediate of the ``ld_imm64`` at slot ``index`` (low half, then the next slot's)."""
    if not -(1 << 63) <= value < 1 << 64:
        raise ValueError(f"immediate {value} does not fit in 64 bits")
    value &= (1 << 64) - 1
    set_imm(code, index, value & 0xFFFFFFFF)
    set_imm(code, index + 1, value >> 32)


def set_map(code: bytearray, index: int, fd: int, offset: int | None = None) -> None:
    """Make the ``ld_imm64`` at slot ``index`` load map ``fd`` (or the address ``offset`` bytes
    into its value, for global data); ``ValueError`` if the slot is not an ``ld_imm64``."""
    if index < 0 or (index + 2) * INSN_SIZE > len(code) or code[index * INSN_SIZE] != LD_IMM64:
        raise ValueError(f"instruction {index} is not an ld_imm64 to fill with a map")
    set_src(code, index, PSEUDO_MAP_FD if offset is None else PSEUDO_MAP_VALUE)
    set_imm(code, index, fd)
    set_imm(code, index + 1, offset or 0)
