"""``Assembler``: build a program instruction by instruction, with jumps to named labels.

Methods follow the kernel's ``BPF_*`` macros (``include/linux/filter.h``) in argument order, and
return the assembler so calls chain. An operand that is a ``Reg`` selects the register form, a
plain ``int`` the immediate form: ``a.add64(R1, R2)`` is ``r1 += r2``, ``a.add64(R1, 2)`` is
``r1 += 2``.
"""

from __future__ import annotations

from typing import Any

from .helpers import Helper, helper_id
from .insn import (
    LD_IMM64,
    PSEUDO_MAP_FD,
    PSEUDO_MAP_VALUE,
    SIZE_BITS,
    SRC_K,
    SRC_X,
    TO_BE,
    TO_LE,
    AluOp,
    Class,
    Insn,
    JmpOp,
    Mode,
    Reg,
    Size,
    encode,
)

Operand = Reg | int
Target = str | int

_S32 = (-(1 << 31), (1 << 31) - 1)
_U32 = (-(1 << 31), (1 << 32) - 1)


def _reg(value: Any, field: str) -> Reg:
    if not isinstance(value, Reg):
        raise TypeError(f"{field} must be a register (R0..R10), not {value!r}")
    return value


def _imm(value: Any, field: str, bounds: tuple[int, int]) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{field} must be a register or an int, not {value!r}")
    if not bounds[0] <= value <= bounds[1]:
        kind = "32-bit signed (it is sign-extended to 64 bits; use ld_imm64)" if bounds == _S32 else "32-bit"
        raise ValueError(f"{field} {value} does not fit an immediate: must be {kind}")
    return value


def _size(value: Any) -> int:
    try:
        return SIZE_BITS[Size(value)]
    except ValueError:
        raise ValueError(f"size must be B, H, W or DW (1, 2, 4 or 8 bytes), not {value!r}") from None


def _map_fd(obj: Any) -> int:
    """The fd of a map given as an object with ``.fd`` or as an int."""
    fd = obj if isinstance(obj, int) and not isinstance(obj, bool) else getattr(obj, "fd", None)
    if not isinstance(fd, int) or fd < 0:
        raise TypeError(f"map must be an object with an open .fd, or an fd, not {obj!r}")
    return fd


class Assembler:
    """A program under construction: instructions plus labels; ``assemble()`` resolves the jumps.

    ``a = Assembler(); a.mov64(R0, 0).jeq(R1, 0, "out").mov64(R0, 1).label("out").exit()``
    """

    def __init__(self) -> None:
        self._insns: list[Insn] = []
        self._labels: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._insns)

    def emit(self, *insns: Insn) -> Assembler:
        """Append ready-made instructions (a jump's ``target`` label is resolved like any other)."""
        for insn in insns:
            if not isinstance(insn, Insn):
                raise TypeError(f"emit() takes Insn objects, not {insn!r}")
        self._insns.extend(insns)
        return self

    def label(self, name: str) -> Assembler:
        """Name the position of the next instruction; jumps may refer to it before or after."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a label is a non-empty string, not {name!r}")
        if name in self._labels:
            raise ValueError(f"duplicate label {name!r}")
        self._labels[name] = len(self._insns)
        return self

    def assemble(self) -> list[Insn]:
        """The instructions with every jump label turned into a slot offset."""
        starts: list[int] = []
        slot = 0
        for insn in self._insns:
            starts.append(slot)
            slot += insn.slots
        out = []
        for index, insn in enumerate(self._insns):
            if insn.target is not None:
                where = self._labels.get(insn.target)
                if where is None:
                    raise ValueError(f"jump to unknown label {insn.target!r} (instruction {index})")
                if where == len(self._insns):
                    raise ValueError(f"label {insn.target!r} marks no instruction: a jump there leaves the program")
                offset = starts[where] - (starts[index] + 1)
                if not -(1 << 15) <= offset < (1 << 15):
                    raise ValueError(f"jump to label {insn.target!r} is too far ({offset} slots)")
                insn = Insn(insn.code, insn.dst, insn.src, offset, insn.imm)
            out.append(insn)
        return out

    def __bytes__(self) -> bytes:
        return encode(self.assemble())

    # ---- ALU ------------------------------------------------------------------------------

    def _alu(self, cls: Class, op: AluOp, dst: Reg, src: Operand) -> Assembler:
        dst = _reg(dst, "dst")
        if isinstance(src, Reg):
            return self.emit(Insn(cls | op | SRC_X, dst, src))
        imm = _imm(src, "imm", _S32 if cls == Class.ALU64 else _U32)
        return self.emit(Insn(cls | op | SRC_K, dst, 0, 0, imm))

    def mov64(self, dst: Reg, src: Operand) -> Assembler:
        """``dst = src``."""
        return self._alu(Class.ALU64, AluOp.MOV, dst, src)

    def mov32(self, dst: Reg, src: Operand) -> Assembler:
        """``w_dst = w_src`` (the upper 32 bits are zeroed)."""
        return self._alu(Class.ALU, AluOp.MOV, dst, src)

    def add64(self, dst: Reg, src: Operand) -> Assembler:
        """``dst += src``."""
        return self._alu(Class.ALU64, AluOp.ADD, dst, src)

    def add32(self, dst: Reg, src: Operand) -> Assembler:
        """``w_dst += w_src``."""
        return self._alu(Class.ALU, AluOp.ADD, dst, src)

    def sub64(self, dst: Reg, src: Operand) -> Assembler:
        """``dst -= src``."""
        return self._alu(Class.ALU64, AluOp.SUB, dst, src)

    def sub32(self, dst: Reg, src: Operand) -> Assembler:
        """``w_dst -= w_src``."""
        return self._alu(Class.ALU, AluOp.SUB, dst, src)

    def mul64(self, dst: Reg, src: Operand) -> Assembler:
        """``dst *= src``."""
        return self._alu(Class.ALU64, AluOp.MUL, dst, src)

    def mul32(self, dst: Reg, src: Operand) -> Assembler:
        """``w_dst *= w_src``."""
        return self._alu(Class.ALU, AluOp.MUL, dst, src)

    def div64(self, dst: Reg, src: Operand) -> Assembler:
        """``dst /= src`` (unsigned; division by zero gives 0)."""
        return self._alu(Class.ALU64, AluOp.DIV, dst, src)

    def div32(self, dst: Reg, src: Operand) -> Assembler:
        """``w_dst /= w_src`` (unsigned; division by zero gives 0)."""
        return self._alu(Class.ALU, AluOp.DIV, dst, src)

    def mod64(self, dst: Reg, src: Operand) -> Assembler:
        """``dst %= src`` (unsigned; modulo zero leaves ``dst``)."""
        return self._alu(Class.ALU64, AluOp.MOD, dst, src)

    def mod32(self, dst: Reg, src: Operand) -> Assembler:
        """``w_dst %= w_src`` (unsigned; modulo zero leaves ``w_dst``)."""
        return self._alu(Class.ALU, AluOp.MOD, dst, src)

    def or64(self, dst: Reg, src: Operand) -> Assembler:
        """``dst |= src``."""
        return self._alu(Class.ALU64, AluOp.OR, dst, src)

    def or32(self, dst: Reg, src: Operand) -> Assembler:
        """``w_dst |= w_src``."""
        return self._alu(Class.ALU, AluOp.OR, dst, src)

    def and64(self, dst: Reg, src: Operand) -> Assembler:
        """``dst &= src``."""
        return self._alu(Class.ALU64, AluOp.AND, dst, src)

    def and32(self, dst: Reg, src: Operand) -> Assembler:
        """``w_dst &= w_src``."""
        return self._alu(Class.ALU, AluOp.AND, dst, src)

    def xor64(self, dst: Reg, src: Operand) -> Assembler:
        """``dst ^= src``."""
        return self._alu(Class.ALU64, AluOp.XOR, dst, src)

    def xor32(self, dst: Reg, src: Operand) -> Assembler:
        """``w_dst ^= w_src``."""
        return self._alu(Class.ALU, AluOp.XOR, dst, src)

    def lsh64(self, dst: Reg, src: Operand) -> Assembler:
        """``dst <<= src``."""
        return self._alu(Class.ALU64, AluOp.LSH, dst, src)

    def lsh32(self, dst: Reg, src: Operand) -> Assembler:
        """``w_dst <<= w_src``."""
        return self._alu(Class.ALU, AluOp.LSH, dst, src)

    def rsh64(self, dst: Reg, src: Operand) -> Assembler:
        """``dst >>= src`` (logical)."""
        return self._alu(Class.ALU64, AluOp.RSH, dst, src)

    def rsh32(self, dst: Reg, src: Operand) -> Assembler:
        """``w_dst >>= w_src`` (logical)."""
        return self._alu(Class.ALU, AluOp.RSH, dst, src)

    def arsh64(self, dst: Reg, src: Operand) -> Assembler:
        """``dst s>>= src`` (arithmetic: the sign bit fills in)."""
        return self._alu(Class.ALU64, AluOp.ARSH, dst, src)

    def arsh32(self, dst: Reg, src: Operand) -> Assembler:
        """``w_dst s>>= w_src`` (arithmetic)."""
        return self._alu(Class.ALU, AluOp.ARSH, dst, src)

    def neg64(self, dst: Reg) -> Assembler:
        """``dst = -dst``."""
        return self.emit(Insn(Class.ALU64 | AluOp.NEG, _reg(dst, "dst")))

    def neg32(self, dst: Reg) -> Assembler:
        """``w_dst = -w_dst``."""
        return self.emit(Insn(Class.ALU | AluOp.NEG, _reg(dst, "dst")))

    def _end(self, cls: Class, direction: int, dst: Reg, bits: int) -> Assembler:
        if bits not in (16, 32, 64):
            raise ValueError(f"bits must be 16, 32 or 64, not {bits!r}")
        return self.emit(Insn(cls | AluOp.END | direction, _reg(dst, "dst"), 0, 0, bits))

    def to_be(self, dst: Reg, bits: int) -> Assembler:
        """``dst = htobe<bits>(dst)``: host to big endian (network order), upper bits zeroed."""
        return self._end(Class.ALU, TO_BE, dst, bits)

    def to_le(self, dst: Reg, bits: int) -> Assembler:
        """``dst = htole<bits>(dst)``: host to little endian, upper bits zeroed."""
        return self._end(Class.ALU, TO_LE, dst, bits)

    def bswap(self, dst: Reg, bits: int) -> Assembler:
        """``dst = bswap<bits>(dst)``: unconditional byte swap (ISA v4, Linux 6.6+)."""
        return self._end(Class.ALU64, TO_LE, dst, bits)

    # ---- loads and stores -------------------------------------------------------------------

    def ldx(self, size: Size | int, dst: Reg, src: Reg, off: int = 0) -> Assembler:
        """``dst = *(size *)(src + off)``."""
        code = Class.LDX | Mode.MEM | _size(size)
        return self.emit(Insn(code, _reg(dst, "dst"), _reg(src, "src"), off))

    def stx(self, size: Size | int, dst: Reg, src: Reg, off: int = 0) -> Assembler:
        """``*(size *)(dst + off) = src``."""
        code = Class.STX | Mode.MEM | _size(size)
        return self.emit(Insn(code, _reg(dst, "dst"), _reg(src, "src"), off))

    def st(self, size: Size | int, dst: Reg, off: int, imm: int) -> Assembler:
        """``*(size *)(dst + off) = imm``."""
        code = Class.ST | Mode.MEM | _size(size)
        bounds = _S32 if Size(size) == Size.DW else _U32
        return self.emit(Insn(code, _reg(dst, "dst"), 0, off, _imm(imm, "imm", bounds)))

    def atomic_add(self, size: Size | int, dst: Reg, src: Reg, off: int = 0) -> Assembler:
        """``lock *(size *)(dst + off) += src`` (size W or DW)."""
        if Size(size) not in (Size.W, Size.DW):
            raise ValueError(f"atomic_add works on W or DW, not {Size(size).name}")
        code = Class.STX | Mode.ATOMIC | _size(size)
        return self.emit(Insn(code, _reg(dst, "dst"), _reg(src, "src"), off, AluOp.ADD))

    def ld_abs(self, size: Size | int, off: int) -> Assembler:
        """``r0 = ntoh(*(size *)(skb->data + off))``: legacy packet load; R6 must hold the skb."""
        return self.emit(Insn(Class.LD | Mode.ABS | _size(size), 0, 0, 0, _imm(off, "off", _S32)))

    def ld_ind(self, size: Size | int, src: Reg, off: int) -> Assembler:
        """``r0 = ntoh(*(size *)(skb->data + src + off))``: legacy packet load; R6 must hold the skb."""
        code = Class.LD | Mode.IND | _size(size)
        return self.emit(Insn(code, 0, _reg(src, "src"), 0, _imm(off, "off", _S32)))

    def ld_imm64(self, dst: Reg, value: int) -> Assembler:
        """``dst = value`` for any 64-bit value (two slots)."""
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"value must be an int, not {value!r}")
        return self.emit(Insn(LD_IMM64, _reg(dst, "dst"), 0, 0, value))

    def ld_map_fd(self, dst: Reg, map: Any) -> Assembler:
        """``dst = &map`` (``BPF_PSEUDO_MAP_FD``): ``map`` is a map object (its ``.fd``) or an fd."""
        return self.emit(Insn(LD_IMM64, _reg(dst, "dst"), PSEUDO_MAP_FD, 0, _map_fd(map)))

    def ld_map_value(self, dst: Reg, map: Any, off: int = 0) -> Assembler:
        """``dst = &map_value + off`` (``BPF_PSEUDO_MAP_VALUE``) for single-element array maps."""
        if not 0 <= off < (1 << 32):
            raise ValueError(f"off {off} must be a 32-bit unsigned offset")
        return self.emit(Insn(LD_IMM64, _reg(dst, "dst"), PSEUDO_MAP_VALUE, 0, off << 32 | _map_fd(map)))

    # ---- jumps ------------------------------------------------------------------------------

    def _jmp(self, cls: Class, op: JmpOp, dst: Reg, src: Operand, target: Target) -> Assembler:
        dst = _reg(dst, "dst")
        label, off = (target, 0) if isinstance(target, str) else (None, target)
        if isinstance(src, Reg):
            return self.emit(Insn(cls | op | SRC_X, dst, src, off, 0, label))
        imm = _imm(src, "imm", _S32 if cls == Class.JMP else _U32)
        return self.emit(Insn(cls | op | SRC_K, dst, 0, off, imm, label))

    def ja(self, target: Target) -> Assembler:
        """``goto target`` (a label, or a slot offset relative to the next instruction)."""
        label, off = (target, 0) if isinstance(target, str) else (None, target)
        return self.emit(Insn(Class.JMP | JmpOp.JA, 0, 0, off, 0, label))

    def jeq(self, dst: Reg, src: Operand, target: Target) -> Assembler:
        """``if dst == src goto target``."""
        return self._jmp(Class.JMP, JmpOp.JEQ, dst, src, target)

    def jne(self, dst: Reg, src: Operand, target: Target) -> Assembler:
        """``if dst != src goto target``."""
        return self._jmp(Class.JMP, JmpOp.JNE, dst, src, target)

    def jgt(self, dst: Reg, src: Operand, target: Target) -> Assembler:
        """``if dst > src goto target`` (unsigned)."""
        return self._jmp(Class.JMP, JmpOp.JGT, dst, src, target)

    def jge(self, dst: Reg, src: Operand, target: Target) -> Assembler:
        """``if dst >= src goto target`` (unsigned)."""
        return self._jmp(Class.JMP, JmpOp.JGE, dst, src, target)

    def jlt(self, dst: Reg, src: Operand, target: Target) -> Assembler:
        """``if dst < src goto target`` (unsigned)."""
        return self._jmp(Class.JMP, JmpOp.JLT, dst, src, target)

    def jle(self, dst: Reg, src: Operand, target: Target) -> Assembler:
        """``if dst <= src goto target`` (unsigned)."""
        return self._jmp(Class.JMP, JmpOp.JLE, dst, src, target)

    def jset(self, dst: Reg, src: Operand, target: Target) -> Assembler:
        """``if dst & src goto target``."""
        return self._jmp(Class.JMP, JmpOp.JSET, dst, src, target)

    def jsgt(self, dst: Reg, src: Operand, target: Target) -> Assembler:
        """``if dst s> src goto target`` (signed)."""
        return self._jmp(Class.JMP, JmpOp.JSGT, dst, src, target)

    def jsge(self, dst: Reg, src: Operand, target: Target) -> Assembler:
        """``if dst s>= src goto target`` (signed)."""
        return self._jmp(Class.JMP, JmpOp.JSGE, dst, src, target)

    def jslt(self, dst: Reg, src: Operand, target: Target) -> Assembler:
        """``if dst s< src goto target`` (signed)."""
        return self._jmp(Class.JMP, JmpOp.JSLT, dst, src, target)

    def jsle(self, dst: Reg, src: Operand, target: Target) -> Assembler:
        """``if dst s<= src goto target`` (signed)."""
        return self._jmp(Class.JMP, JmpOp.JSLE, dst, src, target)

    def jeq32(self, dst: Reg, src: Operand, target: Target) -> Assembler:
        """``if w_dst == w_src goto target``."""
        return self._jmp(Class.JMP32, JmpOp.JEQ, dst, src, target)

    def jne32(self, dst: Reg, src: Operand, target: Target) -> Assembler:
        """``if w_dst != w_src goto target``."""
        return self._jmp(Class.JMP32, JmpOp.JNE, dst, src, target)

    def jgt32(self, dst: Reg, src: Operand, target: Target) -> Assembler:
        """``if w_dst > w_src goto target`` (unsigned)."""
        return self._jmp(Class.JMP32, JmpOp.JGT, dst, src, target)

    def jge32(self, dst: Reg, src: Operand, target: Target) -> Assembler:
        """``if w_dst >= w_src goto target`` (unsigned)."""
        return self._jmp(Class.JMP32, JmpOp.JGE, dst, src, target)

    def jlt32(self, dst: Reg, src: Operand, target: Target) -> Assembler:
        """``if w_dst < w_src goto target`` (unsigned)."""
        return self._jmp(Class.JMP32, JmpOp.JLT, dst, src, target)

    def jle32(self, dst: Reg, src: Operand, target: Target) -> Assembler:
        """``if w_dst <= w_src goto target`` (unsigned)."""
        return self._jmp(Class.JMP32, JmpOp.JLE, dst, src, target)

    def jset32(self, dst: Reg, src: Operand, target: Target) -> Assembler:
        """``if w_dst & w_src goto target``."""
        return self._jmp(Class.JMP32, JmpOp.JSET, dst, src, target)

    def jsgt32(self, dst: Reg, src: Operand, target: Target) -> Assembler:
        """``if w_dst s> w_src goto target`` (signed)."""
        return self._jmp(Class.JMP32, JmpOp.JSGT, dst, src, target)

    def jsge32(self, dst: Reg, src: Operand, target: Target) -> Assembler:
        """``if w_dst s>= w_src goto target`` (signed)."""
        return self._jmp(Class.JMP32, JmpOp.JSGE, dst, src, target)

    def jslt32(self, dst: Reg, src: Operand, target: Target) -> Assembler:
        """``if w_dst s< w_src goto target`` (signed)."""
        return self._jmp(Class.JMP32, JmpOp.JSLT, dst, src, target)

    def jsle32(self, dst: Reg, src: Operand, target: Target) -> Assembler:
        """``if w_dst s<= w_src goto target`` (signed)."""
        return self._jmp(Class.JMP32, JmpOp.JSLE, dst, src, target)

    # ---- calls ------------------------------------------------------------------------------

    def call(self, helper: Helper | int | str) -> Assembler:
        """Call a helper (``Helper``, id or name): arguments in R1-R5, result in R0, R1-R5 clobbered."""
        return self.emit(Insn(Class.JMP | JmpOp.CALL, 0, 0, 0, helper_id(helper)))

    def exit(self) -> Assembler:
        """Return ``R0`` to the kernel."""
        return self.emit(Insn(Class.JMP | JmpOp.EXIT))
