"""The assembler: encodings checked against LLVM's BPF assembler (clang-16), labels, errors."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from pybpf.asm import (
    DW,
    FP,
    LD_IMM64,
    PSEUDO_MAP_FD,
    PSEUDO_MAP_VALUE,
    R0,
    R1,
    R2,
    R3,
    R6,
    R9,
    W,
    Assembler,
    B,
    H,
    Helper,
    Insn,
    encode,
    helper_id,
)

pytestmark = pytest.mark.nokernel

CLANG = shutil.which("clang-16") or shutil.which("clang")
needs_clang = pytest.mark.skipif(CLANG is None, reason="clang with the BPF target is not installed")

Build = Callable[[Assembler], Assembler]

# (LLVM assembly, the same instruction built with Assembler); clang-16 speaks ISA v3 assembly.
CASES: list[tuple[str, Build]] = [
    ("r0 = 1", lambda a: a.mov64(R0, 1)),
    ("r0 = -5", lambda a: a.mov64(R0, -5)),
    ("r6 = r1", lambda a: a.mov64(R6, R1)),
    ("w1 = 0xffffffff", lambda a: a.mov32(R1, 0xFFFFFFFF)),
    ("w1 = w2", lambda a: a.mov32(R1, R2)),
    ("r2 += -4", lambda a: a.add64(R2, -4)),
    ("r2 += r3", lambda a: a.add64(R2, R3)),
    ("w2 += 7", lambda a: a.add32(R2, 7)),
    ("w2 += w9", lambda a: a.add32(R2, R9)),
    ("r1 -= 3", lambda a: a.sub64(R1, 3)),
    ("w1 -= w2", lambda a: a.sub32(R1, R2)),
    ("r1 *= 10", lambda a: a.mul64(R1, 10)),
    ("w1 *= w3", lambda a: a.mul32(R1, R3)),
    ("r1 /= r2", lambda a: a.div64(R1, R2)),
    ("w2 /= 7", lambda a: a.div32(R2, 7)),
    ("r2 %= r3", lambda a: a.mod64(R2, R3)),
    ("w2 %= w1", lambda a: a.mod32(R2, R1)),
    ("r1 |= 0x40", lambda a: a.or64(R1, 0x40)),
    ("w1 |= w2", lambda a: a.or32(R1, R2)),
    ("r1 &= 255", lambda a: a.and64(R1, 255)),
    ("w1 &= w2", lambda a: a.and32(R1, R2)),
    ("r1 ^= r1", lambda a: a.xor64(R1, R1)),
    ("w1 ^= 1", lambda a: a.xor32(R1, 1)),
    ("r1 <<= 32", lambda a: a.lsh64(R1, 32)),
    ("w1 <<= w2", lambda a: a.lsh32(R1, R2)),
    ("r1 >>= 32", lambda a: a.rsh64(R1, 32)),
    ("w1 >>= 4", lambda a: a.rsh32(R1, 4)),
    ("r1 s>>= 3", lambda a: a.arsh64(R1, 3)),
    ("w1 s>>= w2", lambda a: a.arsh32(R1, R2)),
    ("r1 = -r1", lambda a: a.neg64(R1)),
    ("w1 = -w1", lambda a: a.neg32(R1)),
    ("r1 = be16 r1", lambda a: a.to_be(R1, 16)),
    ("r1 = be32 r1", lambda a: a.to_be(R1, 32)),
    ("r1 = be64 r1", lambda a: a.to_be(R1, 64)),
    ("r1 = le16 r1", lambda a: a.to_le(R1, 16)),
    ("r1 = le64 r1", lambda a: a.to_le(R1, 64)),
    ("r0 = *(u8 *)(r1 + 0)", lambda a: a.ldx(B, R0, R1)),
    ("r0 = *(u16 *)(r1 + 2)", lambda a: a.ldx(H, R0, R1, 2)),
    ("r1 = *(u32 *)(r1 + 16)", lambda a: a.ldx(W, R1, R1, 16)),
    ("r2 = *(u64 *)(r10 - 8)", lambda a: a.ldx(DW, R2, FP, -8)),
    ("*(u8 *)(r10 - 1) = r1", lambda a: a.stx(B, FP, R1, -1)),
    ("*(u16 *)(r10 - 2) = r1", lambda a: a.stx(2, FP, R1, -2)),
    ("*(u32 *)(r10 - 4) = r1", lambda a: a.stx(W, FP, R1, -4)),
    ("*(u64 *)(r10 - 16) = r0", lambda a: a.stx(DW, FP, R0, -16)),
    ("lock *(u32 *)(r1 + 0) += w2", lambda a: a.atomic_add(W, R1, R2)),
    ("lock *(u64 *)(r1 + 8) += r2", lambda a: a.atomic_add(DW, R1, R2, 8)),
    ("r0 = *(u8 *)skb[4]", lambda a: a.ld_abs(B, 4)),
    ("r0 = *(u32 *)skb[12]", lambda a: a.ld_abs(W, 12)),
    ("r0 = *(u16 *)skb[r1]", lambda a: a.ld_ind(H, R1, 0)),
    ("r1 = 0x123456789abcdef0 ll", lambda a: a.ld_imm64(R1, 0x123456789ABCDEF0)),
    ("r1 = -2 ll", lambda a: a.ld_imm64(R1, -2)),
    ("goto +3", lambda a: a.ja(3)),
    ("if r1 == 0 goto +5", lambda a: a.jeq(R1, 0, 5)),
    ("if r1 == r2 goto -1", lambda a: a.jeq(R1, R2, -1)),
    ("if r1 != 7 goto +1", lambda a: a.jne(R1, 7, 1)),
    ("if r1 > r2 goto +1", lambda a: a.jgt(R1, R2, 1)),
    ("if r1 >= 3 goto +1", lambda a: a.jge(R1, 3, 1)),
    ("if r1 < r2 goto +1", lambda a: a.jlt(R1, R2, 1)),
    ("if r1 <= 3 goto +1", lambda a: a.jle(R1, 3, 1)),
    ("if r1 s> -1 goto +1", lambda a: a.jsgt(R1, -1, 1)),
    ("if r1 s>= r2 goto +1", lambda a: a.jsge(R1, R2, 1)),
    ("if r1 s< 0 goto +1", lambda a: a.jslt(R1, 0, 1)),
    ("if r1 s<= r2 goto +1", lambda a: a.jsle(R1, R2, 1)),
    ("if w1 == 0 goto +2", lambda a: a.jeq32(R1, 0, 2)),
    ("if w1 != w2 goto +2", lambda a: a.jne32(R1, R2, 2)),
    ("if w1 > 0xfffffff0 goto +2", lambda a: a.jgt32(R1, 0xFFFFFFF0, 2)),
    ("if w1 >= w2 goto +2", lambda a: a.jge32(R1, R2, 2)),
    ("if w1 < 5 goto +2", lambda a: a.jlt32(R1, 5, 2)),
    ("if w1 <= w2 goto +2", lambda a: a.jle32(R1, R2, 2)),
    ("if w1 s> w2 goto +2", lambda a: a.jsgt32(R1, R2, 2)),
    ("if w1 s>= -3 goto +2", lambda a: a.jsge32(R1, -3, 2)),
    ("if w1 s< w2 goto +2", lambda a: a.jslt32(R1, R2, 2)),
    ("if w1 s<= 9 goto +2", lambda a: a.jsle32(R1, 9, 2)),
    ("call 1", lambda a: a.call(Helper.map_lookup_elem)),
    ("call 52", lambda a: a.call("sk_redirect_map")),
    ("call 82", lambda a: a.call("bpf_sk_select_reuseport")),
    ("call 46", lambda a: a.call(46)),
    ("exit", lambda a: a.exit()),
]

# Encodings clang-16 cannot assemble (ISA v4, BPF_ST, JSET), from the kernel's instruction-set doc.
KNOWN: list[tuple[str, Build]] = [
    ("7a0af8ff05000000", lambda a: a.st(DW, FP, -8, 5)),
    ("620afcffffffffff", lambda a: a.st(W, FP, -4, 0xFFFFFFFF)),
    ("6a0afeff34120000", lambda a: a.st(H, FP, -2, 0x1234)),
    ("720affff01000000", lambda a: a.st(B, FP, -1, 1)),
    ("4501010004000000", lambda a: a.jset(R1, 4, 1)),
    ("4d21010000000000", lambda a: a.jset(R1, R2, 1)),
    ("4601010004000000", lambda a: a.jset32(R1, 4, 1)),
    ("d701000010000000", lambda a: a.bswap(R1, 16)),
    ("d701000040000000", lambda a: a.bswap(R1, 64)),
    ("d401000020000000", lambda a: a.to_le(R1, 32)),
]


def clang_text(source: str, tmp_path: Path) -> bytes:
    """Assemble LLVM BPF assembly with clang and return the ``.text`` bytes."""
    from elftools.elf.elffile import ELFFile

    src, obj = tmp_path / "prog.s", tmp_path / "prog.o"
    src.write_text(source + "\n")
    subprocess.run([CLANG, "-target", "bpf", "-c", str(src), "-o", str(obj)], check=True, capture_output=True)
    with obj.open("rb") as f:
        return ELFFile(f).get_section_by_name(".text").data()


@needs_clang
def test_every_instruction_matches_clang(tmp_path: Path) -> None:
    expected = Insn.unpack(clang_text("\n".join(text for text, _ in CASES), tmp_path))
    assert len(expected) == len(CASES)
    for (text, build), want in zip(CASES, expected):
        got = build(Assembler()).assemble()
        assert len(got) == 1, text
        assert bytes(got[0]) == bytes(want), f"{text}: ours {bytes(got[0]).hex()} clang {bytes(want).hex()}"


@pytest.mark.parametrize("hexbytes, build", KNOWN, ids=[h for h, _ in KNOWN])
def test_encodings_clang_16_cannot_assemble(hexbytes: str, build: Build) -> None:
    assert bytes(build(Assembler())).hex() == hexbytes


LABELLED = """
    r6 = r1
    r1 = 0x100000000 ll
back:
    r1 += -1
    if r1 == 0 goto out
    if w1 s> 4 goto back
    r1 = 0x2 ll
    goto back
out:
    r0 = 2
    exit
"""


@needs_clang
def test_labels_resolve_like_clang(tmp_path: Path) -> None:
    a = Assembler().mov64(R6, R1).ld_imm64(R1, 1 << 32)
    a.label("back").add64(R1, -1).jeq(R1, 0, "out").jsgt32(R1, 4, "back").ld_imm64(R1, 2).ja("back")
    a.label("out").mov64(R0, 2).exit()
    assert bytes(a) == clang_text(LABELLED, tmp_path)


def test_unpack_round_trip() -> None:
    a = Assembler().ld_imm64(R1, -1).mov64(R0, 0).ld_map_value(R2, 7, 24).exit()
    code = bytes(a)
    assert len(code) == 8 * 6
    assert encode(Insn.unpack(code)) == code
    wide = Insn.unpack(code)[2]
    assert (wide.code, wide.src, wide.imm, wide.slots) == (LD_IMM64, PSEUDO_MAP_VALUE, 24 << 32 | 7, 2)


def test_ld_map_fd_takes_an_object_or_an_fd() -> None:
    class FakeMap:
        fd = 42

    by_object = Assembler().ld_map_fd(R1, FakeMap()).assemble()[0]
    by_fd = Assembler().ld_map_fd(R1, 42).assemble()[0]
    assert by_object == by_fd
    assert (by_fd.code, by_fd.dst, by_fd.src, by_fd.imm) == (LD_IMM64, R1, PSEUDO_MAP_FD, 42)
    assert bytes(by_fd).hex() == "18110000" "2a000000" "00000000" "00000000"
    with pytest.raises(TypeError, match="map"):
        Assembler().ld_map_fd(R1, object())


def test_label_errors_name_the_label() -> None:
    with pytest.raises(ValueError, match="unknown label 'nowhere'"):
        Assembler().ja("nowhere").exit().assemble()
    with pytest.raises(ValueError, match="duplicate label 'x'"):
        Assembler().label("x").mov64(R0, 0).label("x")
    with pytest.raises(ValueError, match="label 'end' marks no instruction"):
        Assembler().jeq(R1, 0, "end").exit().label("end").assemble()
    with pytest.raises(ValueError, match="not resolved"):
        encode(Assembler().ja("later").label("later").exit()._insns)


def test_operand_errors() -> None:
    with pytest.raises(ValueError, match="ld_imm64"):
        Assembler().mov64(R0, 1 << 31)
    with pytest.raises(ValueError, match="does not fit"):
        Assembler().mov32(R0, 1 << 32)
    with pytest.raises(TypeError, match="register"):
        Assembler().mov64(1, R0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="register or an int"):
        Assembler().add64(R0, 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="size"):
        Assembler().ldx(3, R0, R1)
    with pytest.raises(ValueError, match="bits"):
        Assembler().to_be(R0, 8)
    with pytest.raises(ValueError, match="W or DW"):
        Assembler().atomic_add(B, R1, R2)
    with pytest.raises(ValueError, match="unknown helper"):
        Assembler().call("no_such_helper")
    with pytest.raises(ValueError, match="off"):
        Insn(0xB7, off=1 << 15)


def test_helper_ids() -> None:
    wanted = {
        "map_lookup_elem": 1, "map_update_elem": 2, "map_delete_elem": 3, "ktime_get_ns": 5, "trace_printk": 6,
        "get_prandom_u32": 7, "redirect": 23, "get_hash_recalc": 34, "get_socket_cookie": 46, "redirect_map": 51,
        "sk_redirect_map": 52, "sock_map_update": 53, "msg_redirect_map": 60, "sock_hash_update": 70,
        "msg_redirect_hash": 71, "sk_redirect_hash": 72, "sk_select_reuseport": 82,
    }
    assert {name: int(Helper[name]) for name in wanted} == wanted
    assert helper_id("bpf_redirect_map") == helper_id(Helper.redirect_map) == helper_id(51) == 51


@pytest.mark.skipif(shutil.which("bpftool") is None or not Path("/sys/kernel/btf/vmlinux").exists(),
                    reason="needs bpftool and kernel BTF")
def test_helper_ids_match_the_running_kernel() -> None:
    dump = subprocess.run(["bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "c"],
                          check=True, capture_output=True, text=True).stdout
    kernel = {m[1]: int(m[2]) for m in re.finditer(r"\bBPF_FUNC_(\w+) = (\d+),", dump)}
    ours = {helper.name: int(helper) for helper in Helper}
    assert {name: number for name, number in kernel.items() if name in ours} == {
        name: number for name, number in ours.items() if name in kernel
    }
    assert set(kernel) <= set(ours) or max(kernel.values()) > max(ours.values())  # we know every helper it has
