"""BTF: the model, parse/encode, vmlinux, ctypes, clang output, .BTF.ext, map definitions, the kernel."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

import probes

from pybpf._sys import commands
from pybpf._sys.attrs import MapCreateAttr, MapElemAttr
from pybpf._sys.constants import Cmd, MapType
from pybpf._sys.syscall import bpf
from pybpf.btf import (
    BTF,
    Array,
    BTFError,
    BTFLoadError,
    BtfHandle,
    Builder,
    Const,
    Datasec,
    DeclTag,
    Enum,
    Enum64,
    EnumValue,
    Float,
    Func,
    FuncLinkage,
    FuncProto,
    Fwd,
    Int,
    IntEncoding,
    Kind,
    MapDef,
    Member,
    Param,
    Pointer,
    Restrict,
    Struct,
    Typedef,
    TypeTag,
    Union,
    Var,
    VarLinkage,
    VarSecinfo,
    Void,
    Volatile,
    btf_from_ctypes,
    encode,
    load,
    load_map_types,
    map_def,
    map_defs,
    parse,
    parse_ext,
    vmlinux,
)
from pybpf.btf.sanitize import sanitize
from pybpf.errors import ENOTSUPP

nokernel = pytest.mark.nokernel
CLANG = shutil.which("clang-16") or shutil.which("clang")

MAPS_C = r"""
typedef unsigned int __u32;
typedef unsigned long long __u64;
#define SEC(n) __attribute__((section(n), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
#define __array(name, val) typeof(val) *name[]
struct val { __u32 a; char name[16]; __u64 b:3, c:5; };
struct inner { __uint(type, 2); __uint(max_entries, 4); __type(key, __u32); __type(value, __u32); } inner SEC(".maps");
struct {
    __uint(type, 1); __uint(max_entries, 16); __uint(map_flags, 1);
    __type(key, __u32); __type(value, struct val);
} hmap SEC(".maps");
struct {
    __uint(type, 12); __uint(max_entries, 4); __type(key, __u32);
    __array(values, struct inner);
} outer SEC(".maps") = { .values = { &inner } };
struct {
    __uint(type, 3); __uint(max_entries, 2); __uint(key_size, 4);
    __array(values, int (void *));
} progs SEC(".maps");
volatile const int cfg = 3;
int counter;
SEC("xdp") int prog(void *ctx) { counter += cfg; return 2; }
"""


def compile_bpf(source: str, directory: Path) -> tuple[bytes, bytes]:
    """Compile C for BPF with clang -g; the object's ``.BTF`` and ``.BTF.ext`` section data."""
    from elftools.elf.elffile import ELFFile

    if CLANG is None:
        pytest.skip("clang is not installed")
    src, obj = directory / "prog.bpf.c", directory / "prog.bpf.o"
    src.write_text(source)
    subprocess.run([CLANG, "-g", "-O2", "-target", "bpf", "-c", str(src), "-o", str(obj)], check=True)
    with open(obj, "rb") as f:
        elf = ELFFile(f)
        return elf.get_section_by_name(".BTF").data(), elf.get_section_by_name(".BTF.ext").data()


def every_kind() -> BTF:
    """A BTF with a type of every kind, built by hand."""
    b = Builder()
    i32 = b.add(Int(name="int", size=4, encoding=IntEncoding.SIGNED))
    u8 = b.add(Int(name="unsigned char", size=1))
    node = b.reserve()
    to_node = b.add(Pointer(type=node))
    chars = b.add(Array(type=u8, index_type=i32, nelems=16))
    either = b.add(Union(name="either", size=4, members=(Member(name="i", type=i32, offset=0), Member(name="c", type=u8, offset=0))))
    members = (
        Member(name="a", type=i32, offset=0),
        Member(name="flags", type=i32, offset=32, bitfield_size=3),
        Member(name="", type=either, offset=64),
        Member(name="name", type=chars, offset=96),
        Member(name="next", type=to_node, offset=256),
    )
    b.fill(node, Struct(name="node", size=40, members=members))
    b.add(Enum(name="signs", size=4, values=(EnumValue(name="NEG", value=-1), EnumValue(name="POS", value=1)), signed=True))
    b.add(Enum64(name="big", values=(EnumValue(name="HUGE", value=1 << 40), EnumValue(name="TOP", value=(1 << 64) - 1))))
    b.add(Fwd(name="later", union=True))
    u32 = b.add(Typedef(name="u32", type=i32))
    cv = b.add(Const(type=b.add(Volatile(type=u32))))
    b.add(Restrict(type=to_node))
    proto = b.add(FuncProto(type=i32, params=(Param(name="x", type=cv), Param(name="", type=0))))
    b.add(Func(name="f", type=proto, linkage=FuncLinkage.GLOBAL))
    var = b.add(Var(name="v", type=i32, linkage=VarLinkage.GLOBAL))
    b.add(Datasec(name=".data", size=4, vars=(VarSecinfo(type=var, offset=0, size=4),)))
    b.add(Float(name="double", size=8))
    b.add(DeclTag(name="kfunc", type=node, component_idx=1))
    b.add(TypeTag(name="user", type=i32))
    return b.build()


@pytest.fixture(scope="module")
def clang_btf(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    return compile_bpf(MAPS_C, tmp_path_factory.mktemp("bpf"))


# ---- the model, encode and parse ---------------------------------------------------------------


@nokernel
@pytest.mark.parametrize("order", ["little", "big"])
def test_every_kind_round_trips(order: str) -> None:
    btf = every_kind()
    assert {t.kind for t in btf.types} == set(Kind)
    blob = encode(btf, byteorder=order)
    assert blob[:2] == (b"\x9f\xeb" if order == "little" else b"\xeb\x9f")
    again = parse(blob)
    assert again == btf
    assert list(again.types) == list(btf.types)
    assert encode(again, byteorder=order) == blob
    assert parse(blob, lazy=True) == btf


@nokernel
def test_lookups_and_sizes() -> None:
    btf = every_kind()
    node = btf.by_name("node", Struct)
    assert isinstance(node, Struct) and btf.by_name("node") is node
    assert btf.sizeof(node) == 40 and btf.sizeof(node.id) == 40
    assert btf.sizeof(btf.by_name("u32")) == 4
    assert [btf.sizeof(m.type) for m in node.members] == [4, 4, 4, 16, 8]
    assert btf.resolve(btf.by_name("u32")).name == "int"
    assert btf.find("int", Kind.INT) == [btf.by_name("int")]
    assert btf.types[0] == Void() and btf.type_by_id(0).kind is Kind.VOID
    assert btf.types[-1].kind is Kind.TYPE_TAG and len(btf.types[1:3]) == 2
    with pytest.raises(KeyError, match="no BTF type STRUCT named 'nope'"):
        btf.by_name("nope", Struct)
    with pytest.raises(KeyError):
        btf.type_by_id(len(btf))
    with pytest.raises(BTFError, match="has no size"):
        btf.sizeof(btf.by_name("f"))
    assert btf.strings[0] == "" and "node" in btf.strings.split().values()


@nokernel
def test_ambiguous_name_asks_for_a_kind() -> None:
    b = Builder()
    i = b.add(Int(name="thing", size=4))
    b.add(Typedef(name="thing", type=i))
    btf = b.build()
    with pytest.raises(LookupError, match="2 BTF types named 'thing'"):
        btf.by_name("thing")
    assert btf.by_name("thing", Typedef).kind is Kind.TYPEDEF


@nokernel
def test_cycles_and_depth_are_caught() -> None:
    b = Builder()
    first = b.reserve()
    second = b.add(Typedef(name="b", type=first))
    b.fill(first, Typedef(name="a", type=second))
    btf = b.build()
    with pytest.raises(BTFError, match="cycle"):
        btf.sizeof(first)
    with pytest.raises(BTFError, match="cycle"):
        btf.resolve(second)
    deep = Builder()
    current = deep.add(Int(name="int", size=4))
    index = current
    for _ in range(40):
        current = deep.add(Array(type=current, index_type=index, nelems=1))
    with pytest.raises(BTFError, match="more than 32"):
        deep.build().sizeof(current)
    huge = Builder()
    element = huge.add(Int(name="int", size=4))
    outer = huge.add(Array(type=huge.add(Array(type=element, index_type=element, nelems=1 << 20)), index_type=element, nelems=1 << 20))
    with pytest.raises(BTFError, match="overflows"):
        huge.build().sizeof(outer)


@nokernel
def test_model_checks_ids_and_references() -> None:
    with pytest.raises(BTFError, match="expected id 1"):
        BTF([Int(id=5, name="int", size=4)])
    with pytest.raises(BTFError, match="refers to type 9"):
        BTF([Pointer(id=1, type=9)])
    with pytest.raises(BTFError, match="Void"):
        BTF([Void(id=1)])
    b = Builder()
    b.reserve()
    with pytest.raises(BTFError, match="never filled"):
        b.build()
    with pytest.raises(ValueError, match="not reserved"):
        b.fill(0, Int(name="int", size=4))
    with pytest.raises(BTFError, match="outside the string section"):
        every_kind().strings[-1]


@nokernel
def test_encode_refuses_what_does_not_fit() -> None:
    b = Builder()
    i = b.add(Int(name="int", size=4))
    b.add(Enum(name="e", values=(EnumValue(name="X", value=1 << 32),)))
    with pytest.raises(BTFError, match="does not fit in 32 bits"):
        encode(b.build())
    b2 = Builder()
    b2.add(Struct(name="s", size=4, members=(Member(name="x", type=0, offset=1 << 25, bitfield_size=1),)))
    with pytest.raises(BTFError, match="out of range"):
        encode(b2.build())
    b3 = Builder()
    b3.add(Struct(name="bad\0name", size=0))
    with pytest.raises(BTFError, match="NUL"):
        encode(b3.build())
    assert i == 1


@nokernel
def test_split_btf_continues_its_base() -> None:
    base = every_kind()
    b = Builder(base)
    node = base.by_name("node", Struct)
    ptr = b.add(Pointer(type=node.id))
    b.add(Typedef(name="node_ptr", type=ptr))
    split = b.build()
    assert split.first_id == len(base) and len(split) == len(base) + 2
    blob = encode(split)
    again = parse(blob, base=base)
    assert again == split and again.base is base
    assert again.by_name("node_ptr").type == ptr and again.by_name("node", Struct) == node
    assert again.sizeof(again.by_name("node_ptr")) == 8
    assert again.strings[again.strings.data.index(b"node_ptr") + len(base.strings)] == "node_ptr"


# ---- hostile input -------------------------------------------------------------------------------


def _blob(types: bytes, strings: bytes = b"\0name\0", **header: int) -> bytes:
    fields = {"magic": 0xEB9F, "version": 1, "flags": 0, "hdr_len": 24, "type_off": 0, "type_len": len(types)}
    fields.update(str_off=len(types), str_len=len(strings))
    fields.update(header)
    return struct.pack("<HBBIIIII", *fields.values()) + types + strings


def _type(kind: int, vlen: int = 0, size: int = 4, name: int = 1, kflag: int = 0) -> bytes:
    return struct.pack("<III", name, (kflag << 31) | (kind << 24) | vlen, size)


_INT = _type(1) + struct.pack("<I", 32)


@nokernel
@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"", "too short"),
        (b"\x00\x00" + bytes(22), "bad BTF magic"),
        (_blob(_INT)[:20], "too short for its header"),
        (_blob(_INT, version=2), "version 2"),
        (_blob(_INT, hdr_len=8), "header length 8"),
        (_blob(_INT, hdr_len=1 << 31), "header length"),
        (_blob(_INT, type_len=1 << 32 - 1), "runs past the end"),
        (_blob(_INT, str_off=1 << 31), "string section"),
        (_blob(_INT, type_off=2), "runs past|aligned"),
        (_blob(_INT, str_off=0), "overlap"),
        (_blob(_INT, strings=b""), "must start with an empty string"),
        (_blob(_INT, strings=b"\0name"), "must end with a NUL"),
        (_blob(_INT, strings=b"x\0"), "must start"),
        (_blob(_type(25)), "unknown kind 25"),
        (_blob(_type(0)), "unknown kind 0"),
        (_blob(_INT[:8]), "truncated record"),
        (_blob(_type(4, vlen=0xFFFF)), "needs 786432 bytes"),
        (_blob(_type(1, name=999) + struct.pack("<I", 32)), "string offset 999"),
        (_blob(_type(2, size=7)), "refers to type 7"),
        (_blob(_type(4, vlen=1) + struct.pack("<III", 1, 42, 0)), "member 'name' refers to type 42"),
        (_blob(_type(13, vlen=1, size=0) + struct.pack("<II", 0, 5)), "parameter"),
    ],
)
def test_hostile_blobs_raise_btf_error(blob: bytes, message: str) -> None:
    with pytest.raises(BTFError, match=message):
        parse(blob)


@nokernel
def test_lazy_parse_defers_type_errors() -> None:
    blob = _blob(_INT + _type(2, size=99))
    btf = parse(blob, lazy=True)
    assert btf.type_by_id(1).name == "name"
    with pytest.raises(BTFError, match="refers to type 99"):
        btf.type_by_id(2)


@nokernel
def test_unknown_enum_values_round_trip() -> None:
    blob = _blob(_type(12, vlen=7, size=0) + _type(14, size=0) + struct.pack("<I", 9))
    btf = parse(blob)
    assert btf.type_by_id(1).linkage == 7 and btf.type_by_id(2).linkage == 9  # type: ignore[attr-defined]
    assert parse(encode(btf)) == btf


# ---- vmlinux ----------------------------------------------------------------------------------


@nokernel
def test_vmlinux_parses_fast_and_resolves(capsys: pytest.CaptureFixture[str]) -> None:
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        pytest.skip("no /sys/kernel/btf/vmlinux")
    data = Path("/sys/kernel/btf/vmlinux").read_bytes()
    start = time.perf_counter()
    btf = parse(data, lazy=True)
    parsed = time.perf_counter() - start
    iphdr = btf.by_name("iphdr", Struct)
    looked_up = time.perf_counter() - start - parsed
    assert len(btf) > 10_000
    assert btf.sizeof(iphdr) == 20
    assert [m.name for m in iphdr.members][-3:-1] == ["protocol", "check"]  # type: ignore[attr-defined]
    assert btf.by_name("task_struct", Struct).size > 1000  # type: ignore[attr-defined]
    assert btf.by_name("bpf_map_type", Enum).values[0].name == "BPF_MAP_TYPE_UNSPEC"  # type: ignore[attr-defined]
    assert btf.sizeof(btf.by_name("u32", Typedef)) == 4
    assert vmlinux() is BTF.vmlinux() is vmlinux()
    assert parsed < 10.0, f"lazy parse of vmlinux BTF took {parsed:.2f}s"  # ~0.1 s here, 25x that under TCG
    with capsys.disabled():
        print(f"\nvmlinux BTF: {len(btf)} types, {len(data)} bytes: lazy parse {parsed * 1000:.0f} ms, first by_name {looked_up * 1000:.0f} ms")


# ---- ctypes ----------------------------------------------------------------------------------


class Inner(ctypes.Structure):
    _fields_ = [("x", ctypes.c_uint16), ("flag", ctypes.c_uint32, 3), ("mode", ctypes.c_uint32, 5)]


class Key(ctypes.Structure):
    _fields_ = [("addr", ctypes.c_uint8 * 4), ("port", ctypes.c_uint16)]


class Value(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char * 8), ("count", ctypes.c_uint64), ("inner", Inner), ("ok", ctypes.c_bool), ("delta", ctypes.c_int32)]


@nokernel
@pytest.mark.parametrize(
    ("ctype", "name", "size", "encoding"),
    [
        (ctypes.c_uint8, "unsigned char", 1, IntEncoding.NONE),
        (ctypes.c_int8, "signed char", 1, IntEncoding.SIGNED),
        (ctypes.c_uint16, "unsigned short", 2, IntEncoding.NONE),
        (ctypes.c_int16, "short", 2, IntEncoding.SIGNED),
        (ctypes.c_uint32, "unsigned int", 4, IntEncoding.NONE),
        (ctypes.c_int32, "int", 4, IntEncoding.SIGNED),
        (ctypes.c_uint64, "unsigned long", 8, IntEncoding.NONE),
        (ctypes.c_int64, "long", 8, IntEncoding.SIGNED),
        (ctypes.c_bool, "_Bool", 1, IntEncoding.BOOL),
        (ctypes.c_char, "char", 1, IntEncoding.SIGNED),
    ],
)
def test_ctypes_integers(ctype: type, name: str, size: int, encoding: IntEncoding) -> None:
    btf, ids = btf_from_ctypes(ctype)
    t = btf.type_by_id(ids[ctype])
    assert t == Int(id=ids[ctype], name=name, size=size, encoding=encoding, bits=size * 8)


@nokernel
def test_ctypes_structs_arrays_floats_pointers() -> None:
    btf, ids = btf_from_ctypes(Key, Value, ctypes.c_float, ctypes.c_double, ctypes.c_void_p, ctypes.POINTER(Key))
    key = btf.type_by_id(ids[Key])
    assert isinstance(key, Struct) and key.name == "Key" and key.size == ctypes.sizeof(Key)
    assert [(m.name, m.offset) for m in key.members] == [("addr", 0), ("port", 32)]
    addr = btf.type_by_id(key.members[0].type)
    assert isinstance(addr, Array) and addr.nelems == 4 and btf.sizeof(addr) == 4
    inner = btf.type_by_id(ids[Inner])
    assert [(m.name, m.offset, m.bitfield_size) for m in inner.members] == [("x", 0, 0), ("flag", 32, 3), ("mode", 35, 5)]  # type: ignore[attr-defined]
    value = btf.type_by_id(ids[Value])
    assert btf.sizeof(value) == ctypes.sizeof(Value)
    assert [m.offset // 8 for m in value.members] == [getattr(Value, n).offset for n, _ in Value._fields_]  # type: ignore[attr-defined]
    assert btf.type_by_id(ids[ctypes.c_double]) == Float(id=ids[ctypes.c_double], name="double", size=8)
    assert btf.type_by_id(ids[ctypes.c_void_p]) == Pointer(id=ids[ctypes.c_void_p], type=0)
    assert btf.type_by_id(ids[ctypes.POINTER(Key)]).type == ids[Key]  # type: ignore[attr-defined]
    assert parse(encode(btf)) == btf


@nokernel
def test_ctypes_self_reference_union_anonymous_and_names() -> None:
    class Node(ctypes.Structure):
        pass

    Node._fields_ = [("value", ctypes.c_int), ("next", ctypes.POINTER(Node))]

    class Number(ctypes.Union):
        _fields_ = [("i", ctypes.c_int32), ("f", ctypes.c_float)]

    class Odd(ctypes.Structure):
        _anonymous_ = ("u",)
        _pack_ = 1
        _fields_ = [("a byte", ctypes.c_uint8), ("u", Number), ("9lives", ctypes.c_uint16)]

    btf, ids = btf_from_ctypes(Node, Odd)
    node = btf.type_by_id(ids[Node])
    assert btf.type_by_id(btf.type_by_id(node.members[1].type).type) is node  # type: ignore[attr-defined]
    odd = btf.type_by_id(ids[Odd])
    assert [(m.name, m.offset) for m in odd.members] == [("a_byte", 0), ("", 8), ("_9lives", 40)]  # type: ignore[attr-defined]
    assert btf.type_by_id(ids[Number]).kind is Kind.UNION and btf.sizeof(odd) == 7


@nokernel
def test_ctypes_refuses_what_btf_cannot_say() -> None:
    class Swapped(ctypes.BigEndianStructure if sys.byteorder == "little" else ctypes.LittleEndianStructure):  # type: ignore[misc]
        _fields_ = [("x", ctypes.c_uint32)]

    class SwappedBytes(ctypes.BigEndianStructure if sys.byteorder == "little" else ctypes.LittleEndianStructure):  # type: ignore[misc]
        _fields_ = [("x", ctypes.c_uint8)]

    for bad in (ctypes.c_wchar, Swapped, SwappedBytes, int, "c_int"):
        with pytest.raises(TypeError):
            btf_from_ctypes(bad)  # type: ignore[arg-type]


# ---- clang output, .BTF.ext, map definitions ---------------------------------------------------


@nokernel
def test_clang_btf_round_trips(clang_btf: tuple[bytes, bytes]) -> None:
    btf = parse(clang_btf[0])
    assert parse(encode(btf)) == btf
    maps = btf.by_name(".maps", Datasec)
    names = [btf.type_by_id(v.type).name for v in maps.vars]  # type: ignore[attr-defined]
    assert sorted(names) == ["hmap", "inner", "outer", "progs"]
    val = btf.by_name("val", Struct)
    assert [(m.name, m.offset, m.bitfield_size) for m in val.members][2:] == [("b", 160, 3), ("c", 163, 5)]  # type: ignore[attr-defined]
    cfg = btf.by_name("cfg", Var)
    assert [type(t) for t in (btf.type_by_id(cfg.type), btf.resolve(cfg.type))] == [Const, Int]  # type: ignore[attr-defined]


@nokernel
def test_map_definitions_decode_like_libbpf(clang_btf: tuple[bytes, bytes]) -> None:
    btf = parse(clang_btf[0])
    defs = map_defs(btf)
    hmap = defs["hmap"]
    assert (hmap.type, hmap.max_entries, hmap.map_flags, hmap.key_size, hmap.value_size) == (1, 16, 1, 4, 24)
    assert hmap.key is not None and hmap.key.name == "__u32" and isinstance(hmap.key, Typedef)
    assert hmap.value == btf.by_name("val", Struct) and hmap.pinning is None
    outer = defs["outer"]
    assert isinstance(outer.values, MapDef) and outer.value_size == 4
    assert (outer.values.name, outer.values.type, outer.values.max_entries) == ("outer.inner", 2, 4)
    progs = defs["progs"]
    assert isinstance(progs.values, FuncProto) and (progs.key_size, progs.value_size) == (4, 4)
    assert defs["inner"].values is None


@nokernel
def test_map_definition_errors_name_the_member() -> None:
    b = Builder()
    i = b.add(Int(name="int", size=4))
    b.add(Struct(name="bad", size=8, members=(Member(name="type", type=i, offset=0),)))
    b.add(Struct(name="odd", size=8, members=(Member(name="colour", type=b.add(Pointer(type=i)), offset=0),)))
    btf = b.build()
    with pytest.raises(BTFError, match="map 'm': member 'type': __uint needs a pointer, found INT 'int'"):
        map_def(btf, btf.by_name("bad"), "m")
    with pytest.raises(BTFError, match="unknown attribute 'colour'"):
        map_def(btf, btf.by_name("odd"), "m")
    with pytest.raises(BTFError, match="must be a struct"):
        map_def(btf, i, "m")


@nokernel
def test_btf_ext_records(clang_btf: tuple[bytes, bytes]) -> None:
    btf = parse(clang_btf[0])
    ext = parse_ext(clang_btf[1], btf)
    (func,) = ext.func_info["xdp"]
    assert func.insn_off == 0 and btf.type_by_id(func.type_id).name == "prog"
    lines = ext.line_info["xdp"]
    assert lines and all(line.file_name.endswith("prog.bpf.c") for line in lines)
    assert any("counter += cfg" in line.source for line in lines) and lines[0].line > 0
    assert ext.core_relos == {}
    with pytest.raises(BTFError, match="magic"):
        parse_ext(b"\0" * 32, btf)
    with pytest.raises(BTFError, match="past the end"):
        parse_ext(clang_btf[1][:-8], btf)


# ---- the kernel ------------------------------------------------------------------------------


kernel = pytest.mark.usefixtures("no_fd_leak")


@kernel
def test_load_and_read_back() -> None:
    btf = every_kind()
    with load(btf) as handle:
        info = handle.info()
        assert info.id == handle.id > 0 and not info.kernel and info.size == len(encode(btf))
        expected = parse(sanitize(encode(btf)))  # kinds this kernel refuses are rewritten (pybpf.btf.sanitize)
        assert parse(handle.raw()) == expected and handle.btf() == expected
        with BtfHandle.from_id(handle.id) as again:
            assert again.id == handle.id and again.fd != handle.fd
        with BtfHandle.from_fd(handle.fd) as dup:
            assert dup.id == handle.id
    assert handle.closed
    with pytest.raises(ValueError, match="closed"):
        _ = handle.fd
    handle.close()


@kernel
def test_load_failure_carries_the_kernel_log() -> None:
    b = Builder()
    b.add(Struct(name="1bad", size=0))
    with pytest.raises(BTFLoadError) as caught:
        load(b.build())
    assert caught.value.errno == errno.EINVAL
    assert "1bad" in caught.value.log and "Invalid name" in str(caught.value)
    with pytest.raises(BTFLoadError, match="magic"):
        load(b"\0" * 64)


@kernel
def test_kernel_vmlinux_btf_matches_sysfs() -> None:
    if probes.release() < (5, 11):
        probes.skip(f"BTF objects carry names (and a kernel flag) from Linux 5.11; this is {probes.running()}")
    found = [i for i in commands.iter_ids(Cmd.BTF_GET_NEXT_ID, "list BTF") if _btf_name(i) == "vmlinux"]
    assert found, "the kernel lists no vmlinux BTF"
    with BtfHandle.from_id(found[0]) as handle:
        info = handle.info()
        assert info.kernel and info.name == "vmlinux"
        assert handle.raw() == Path("/sys/kernel/btf/vmlinux").read_bytes()
        assert handle.btf() is vmlinux()


def _btf_name(btf_id: int) -> str:
    with BtfHandle.from_id(btf_id) as handle:
        return handle.info().name


@kernel
def test_map_with_btf_dumps_structured_in_bpftool() -> None:
    if shutil.which("bpftool") is None:
        pytest.skip("bpftool is not installed")
    handle, key_id, value_id = load_map_types(Key, Value)
    attr = MapCreateAttr(
        map_type=MapType.HASH, key_size=ctypes.sizeof(Key), value_size=ctypes.sizeof(Value), max_entries=4,
        map_name=b"btf_test", btf_fd=handle.fd, btf_key_type_id=key_id, btf_value_type_id=value_id,
    )
    with handle:
        fd = commands.map_create(attr)
    try:
        info = commands.map_info(fd)
        assert (info.btf_key_type_id, info.btf_value_type_id) == (key_id, value_id) and info.btf_id > 0
        key = Key((ctypes.c_uint8 * 4)(10, 0, 0, 1), 8080)
        value = Value(b"hello", 7, Inner(1, 5, 17), True, -3)
        bpf(Cmd.MAP_UPDATE_ELEM, MapElemAttr(map_fd=fd, key=ctypes.addressof(key), value=ctypes.addressof(value)), "update")
        out = subprocess.run(["bpftool", "-j", "map", "dump", "id", str(info.id)], capture_output=True, text=True, check=True)
        (entry,) = json.loads(out.stdout)
        assert entry["formatted"]["key"] == {"addr": [10, 0, 0, 1], "port": 8080}
        formatted = entry["formatted"]["value"]
        assert formatted["name"] == "hello" and formatted["count"] == 7 and formatted["ok"] is True and formatted["delta"] == -3
        assert formatted["inner"] == {"x": 1, "flag": "0x5", "mode": "0x11"}
    finally:
        os.close(fd)


@kernel
def test_socket_maps_refuse_btf_types() -> None:
    for map_type in (MapType.SOCKMAP, MapType.SOCKHASH, MapType.XSKMAP):
        handle, key_id, value_id = load_map_types(ctypes.c_uint32, ctypes.c_uint32)
        with handle:
            attr = MapCreateAttr(
                map_type=map_type, key_size=4, value_size=4, max_entries=4,
                btf_fd=handle.fd, btf_key_type_id=key_id, btf_value_type_id=value_id,
            )
            with pytest.raises(OSError) as caught:
                os.close(commands.map_create(attr))
            assert caught.value.errno == ENOTSUPP
