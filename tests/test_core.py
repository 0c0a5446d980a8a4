"""CO-RE and externs: a program compiled once loads on the running kernel and reads the right
values; relocations against a made-up kernel move offsets as they should; global variables."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pybpf import VerifierError
from pybpf.asm.patch import code_at, imm_at, off_at
from pybpf.btf import BTF, Array, Builder, Enum, EnumValue, Int, IntEncoding, Member, Pointer, Struct
from pybpf.btf.core import POISON, CoreError, Targets, essential_name, relocate
from pybpf.collection import CollectionSpec
from pybpf.externs import kernel_version_code, read_kernel_config
import probes
from test_elf import objects  # noqa: F401 - the session fixture compiling tests/bpf/*.c

BPFTOOL = shutil.which("bpftool")
kernel = pytest.mark.usefixtures("no_fd_leak")


def test_essential_names() -> None:
    assert essential_name("task_struct___old") == "task_struct"
    assert essential_name("task_struct") == "task_struct"
    assert essential_name("a___b___c") == "a___b"
    assert essential_name("x____y") == "x____y"  # four underscores: no flavor
    assert essential_name("___x") == "___x"


def _vmlinux_raw() -> str:
    if BPFTOOL is None:
        pytest.skip("bpftool is not installed")
    return subprocess.run([BPFTOOL, "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "raw"],
                          capture_output=True, text=True, check=True).stdout


def _kallsyms(name: str) -> int:
    with open("/proc/kallsyms") as f:
        for line in f:
            parts = line.split()
            if parts[2] == name:
                return int(parts[0], 16)
    raise AssertionError(f"{name} not in /proc/kallsyms")


@pytest.fixture()
def pin_root() -> Iterator[Path]:
    path = Path(f"/sys/fs/bpf/pybpf-test-{uuid.uuid4()}")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@kernel
def test_core_program_reads_the_running_task(objects: dict[str, Path], pin_root: Path) -> None:  # noqa: F811
    raw = _vmlinux_raw()
    task_size = int(re.search(r"STRUCT 'task_struct' size=(\d+)", raw).group(1))  # type: ignore[union-attr]
    pid_type = re.search(r"ENUM 'pid_type'[^\n]*\n((?:\t[^\n]*\n)+)", raw).group(1)  # type: ignore[union-attr]
    enum_values = {m.group(1): int(m.group(2)) for m in re.finditer(r"'(\w+)' val=(-?\d+)", pid_type)}
    task_block = raw[raw.index("STRUCT 'task_struct' size=") :].split("\n[", 1)[0]
    spec = CollectionSpec.from_file(objects["core"])
    spec.variables["target_tgid"] = os.getpid()
    assert spec.variables["target_tgid"] == os.getpid()
    with pytest.raises(ValueError, match="target_tgid"):
        spec.variables["target_tgid"] = 1 << 40
    with spec.load(pin_root=pin_root) as coll:
        program = coll.programs["read_task"]
        assert program.test_run(repeat=0, ctx=bytes(16)).retval == 0  # raw_tp: runs in this thread
        v = coll.variables
        with open(f"/proc/self/task/{threading.get_native_id()}/comm", "rb") as f:
            comm = f.read().strip()
        assert (v["pid"], v["tgid"], v["parent_tgid"]) == (threading.get_native_id(), os.getpid(), os.getppid())
        assert v["comm"].split(b"\0")[0] == comm
        assert v["has_new_state"] == ("'__state'" in task_block) and v["has_never"] == 0 and v["state"] == 0
        assert (v["pgid_value"], v["max_value"]) == (enum_values["PIDTYPE_PGID"], enum_values["PIDTYPE_MAX"])
        assert v["task_size"] == task_size
        release = os.uname().release
        major, minor = (int(x) for x in release.split(".")[:2])
        assert v["kernel_version"] >> 8 == major << 8 | minor and v["kernel_version"] == kernel_version_code()
        assert v["bpf_syscall"] == 1 and v["never_config"] == 0
        assert v["map_put_address"] & (2**64 - 1) == _kallsyms("bpf_map_put") and v["missing_address"] == 0
        assert v["target_tgid"] == os.getpid()
        with pytest.raises(PermissionError, match="read-only"):
            v["target_tgid"] = 1
        v["runs"] = 41  # .bss: written through the map's memory
        program.test_run(repeat=0, ctx=bytes(16))
        assert v["runs"] == 42


@kernel
def test_poisoned_relocation_names_field_type_and_program(objects: dict[str, Path], pin_root: Path) -> None:  # noqa: F811
    with pytest.raises(VerifierError) as caught:
        CollectionSpec.from_file(objects["core_poisoned"]).load(pin_root=pin_root)
    message = str(caught.value)
    assert "pybpf_no_such_field" in message and "task_struct" in message and "reads_missing" in message
    assert str(POISON) in caught.value.log


@kernel
def test_kfuncs_resolve_by_btf_id(objects: dict[str, Path], pin_root: Path) -> None:  # noqa: F811
    if "FUNC 'bpf_rcu_read_lock'" not in _vmlinux_raw():
        probes.skip(f"the bpf_rcu_read_lock kfunc needs Linux 6.2; this is {probes.running()} (not in vmlinux BTF, bpftool)")
    spec = CollectionSpec.from_file(objects["kfunc"])
    assert {(r.name, r.call) for r in spec.programs["k"].externs} >= {("bpf_rcu_read_lock", True), ("pybpf_no_kfunc", False)}
    with spec.load(pin_root=pin_root) as coll:
        assert coll.programs["k"].test_run(repeat=0, ctx=bytes(8)).retval == 0
        assert coll.variables["done"] == 1


def test_kernel_config_is_read() -> None:
    config = read_kernel_config()
    if not config:
        probes.skip(f"this machine has no kernel configuration (/proc/config.gz, /boot/config-{os.uname().release})")
    assert config.get("CONFIG_BPF_SYSCALL") == "y"


# ---- relocation against a made-up kernel ---------------------------------------------------


def _fake_kernel(offset_pid: int, with_state: bool) -> BTF:
    """A "kernel" BTF whose task_struct has its fields elsewhere than the object expects."""
    b = Builder()
    i32 = b.add(Int(name="int", size=4, encoding=IntEncoding.SIGNED))
    u32 = b.add(Int(name="unsigned int", size=4))
    char = b.add(Int(name="char", size=1, encoding=IntEncoding.SIGNED))
    task = b.reserve()
    ptr = b.add(Pointer(type=task))
    comm = b.add(Array(type=char, index_type=u32, nelems=16))
    members = [
        Member(name="pid", type=i32, offset=offset_pid * 8),
        Member(name="tgid", type=i32, offset=(offset_pid + 4) * 8),
        Member(name="real_parent", type=ptr, offset=(offset_pid + 8) * 8),
        Member(name="comm", type=comm, offset=(offset_pid + 16) * 8),
    ]
    if with_state:
        members.append(Member(name="__state", type=u32, offset=(offset_pid + 32) * 8))
    b.fill(task, Struct(name="task_struct", size=offset_pid + 40, members=tuple(members)))
    values = tuple(EnumValue(name=n, value=v) for n, v in (("PIDTYPE_PID", 0), ("PIDTYPE_TGID", 1), ("PIDTYPE_PGID", 7), ("PIDTYPE_MAX", 9)))
    b.add(Enum(name="pid_type", size=4, values=values))
    return b.build()


def test_relocations_follow_the_target_layout(objects: dict[str, Path]) -> None:  # noqa: F811
    spec = CollectionSpec.from_file(objects["core"])
    program = spec.programs["read_task"]
    assert spec.btf is not None and program.core_relos
    for offset, with_state in ((100, True), (200, False)):
        code = bytearray(program.instructions())
        poisoned = relocate(code, program.core_relos, spec.btf.types, Targets(_fake_kernel(offset, with_state)), program.name)
        # every task_struct field offset in the code now points where the fake kernel has it
        by_name = {"0:0": offset, "0:1": offset + 4, "0:2": offset + 8, "0:3": offset + 16}
        for relo in program.core_relos:
            wanted = by_name.get(relo.access)
            if wanted is None or relo.kind.name != "FIELD_BYTE_OFFSET" or spec.btf.types.type_by_id(relo.type_id).name != "task_struct":
                continue
            cls = code_at(code, relo.insn_off) & 0x07
            got = imm_at(code, relo.insn_off) if cls in (0x04, 0x07) else off_at(code, relo.insn_off)
            assert got == wanted, (relo, got, wanted)
        kinds = {r.kind.name for r in program.core_relos}
        assert {"FIELD_EXISTS", "ENUMVAL_VALUE", "TYPE_SIZE"} <= kinds
        for relo in program.core_relos:
            if relo.kind.name == "TYPE_SIZE":
                assert imm_at(code, relo.insn_off) == offset + 40
            if relo.kind.name == "ENUMVAL_VALUE" and relo.access == "2":
                assert imm_at(code, relo.insn_off) == 7
        # the read of the field no kernel has is poisoned, and so is __state's where it is missing
        assert any("pybpf_no_such_field" in p.description for p in poisoned)
        assert any("__state" in p.description for p in poisoned) == (not with_state)
        for p in poisoned:
            assert code_at(code, p.insn) == 0x85 and imm_at(code, p.insn) == POISON


def test_ambiguous_candidates_are_refused(objects: dict[str, Path]) -> None:  # noqa: F811
    spec = CollectionSpec.from_file(objects["core"])
    program = spec.programs["read_task"]
    assert spec.btf is not None
    b = Builder()
    i32 = b.add(Int(name="int", size=4, encoding=IntEncoding.SIGNED))
    b.add(Struct(name="task_struct", size=8, members=(Member(name="pid", type=i32, offset=0),)))
    b.add(Struct(name="task_struct___other", size=8, members=(Member(name="pid", type=i32, offset=32),)))
    with pytest.raises(CoreError, match="ambiguous"):
        relocate(bytearray(program.instructions()), program.core_relos, spec.btf.types, Targets(b.build()), program.name)


def _bits_target(layout: list[tuple[str, int, int, bool]], size: int) -> BTF:
    """A "kernel" ``struct bits`` with each (name, bit offset, width, signed) bitfield placed so."""
    b = Builder()
    u32 = b.add(Int(name="unsigned int", size=4))
    s32 = b.add(Int(name="int", size=4, encoding=IntEncoding.SIGNED))
    u64 = b.add(Int(name="unsigned long long", size=8))
    types = {(False, 4): u32, (True, 4): s32, (False, 8): u64}
    members = tuple(Member(name=n, type=types[(signed, 8 if width > 24 else 4)], offset=off, bitfield_size=width)
                    for n, off, width, signed in layout)
    b.add(Struct(name="bits", size=size, members=members))
    return b.build()


@pytest.mark.parametrize("layout", [
    [("a", 0, 3, False), ("b", 3, 5, True), ("c", 64, 40, False)],
    [("b", 0, 7, True), ("a", 37, 3, False), ("c", 70, 20, False)],
    [("c", 0, 24, False), ("a", 24, 8, False), ("b", 40, 12, True)],
])
def test_bitfield_relocations_read_the_right_bits(objects: dict[str, Path], layout: list[tuple[str, int, int, bool]]) -> None:  # noqa: F811
    """Replay BPF_CORE_READ_BITFIELD's load-shift-shift with the relocated numbers on a buffer laid
    out as the made-up kernel says: each field reads back its value (sign-extended when signed)."""
    spec = CollectionSpec.from_file(objects["core_bitfields"])
    program = spec.programs["f"]
    assert spec.btf is not None
    code = bytearray(program.instructions())
    assert not relocate(code, program.core_relos, spec.btf.types, Targets(_bits_target(layout, 16)), program.name)
    values = {"a": 5, "b": -9, "c": 0x12345}
    word = 0
    for name, offset, width, _ in layout:
        word |= (values[name] & ((1 << width) - 1)) << offset
    data = word.to_bytes(16, "little")
    field_of = {"0:0": "a", "0:1": "b", "0:2": "c"}
    got: dict[str, dict[str, int]] = {}
    for relo in program.core_relos:
        cls = code_at(code, relo.insn_off) & 0x07
        value = imm_at(code, relo.insn_off) if cls in (0x04, 0x07) else off_at(code, relo.insn_off)
        got.setdefault(field_of[relo.access], {})[relo.kind.name] = value
    for name, relocated in got.items():
        raw = int.from_bytes(data[relocated["FIELD_BYTE_OFFSET"] : relocated["FIELD_BYTE_OFFSET"] + relocated["FIELD_BYTE_SIZE"]], "little")
        shifted = (raw << relocated["FIELD_LSHIFT_U64"]) & (2**64 - 1)
        if relocated["FIELD_SIGNED"]:
            shifted -= (shifted >> 63) << 64
        assert shifted >> relocated["FIELD_RSHIFT_U64"] == values[name], (name, relocated)
