"""Typed values from BTF: ctypes types built from BTF, the bpftool-shaped formatter, maps typed
without declarations (from an object, a pin, an id), hostile types bounded."""

from __future__ import annotations

import ctypes
import enum
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pybpf import Map, MapSpec, MapType
from pybpf.btf import (
    BTF,
    Array,
    Builder,
    Const,
    Enum,
    Enum64,
    EnumValue,
    Float,
    Int,
    IntEncoding,
    Member,
    Pointer,
    Restrict,
    Struct,
    Typedef,
    TypeTag,
    Union,
    Volatile,
    btf_from_ctypes,
    encode,
    load,
    parse,
)
from pybpf.btf.typed import MAX_ITEMS, BTFTypeWarning, format_value, python_type
from pybpf.collection import CollectionSpec
from test_elf import objects  # noqa: F401 - the session fixture compiling tests/bpf/*.c

BPFTOOL = shutil.which("bpftool")
kernel = pytest.mark.usefixtures("no_fd_leak")


# ---- types built from BTF ----------------------------------------------------------------------


class Inner(ctypes.Structure):
    _fields_ = [("x", ctypes.c_uint8), ("flag", ctypes.c_uint32, 3), ("mode", ctypes.c_uint32, 5), ("y", ctypes.c_int8)]


class Value(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char * 8), ("count", ctypes.c_uint64), ("delta", ctypes.c_int16), ("inner", Inner),
        ("arr", ctypes.c_uint32 * 3), ("ratio", ctypes.c_double),
    ]


def test_struct_with_bitfields_padding_and_arrays_matches_ctypes() -> None:
    btf, ids = btf_from_ctypes(Value)
    btf = parse(encode(btf))
    made = python_type(btf, ids[Value])
    assert made.__name__ == "Value" and ctypes.sizeof(made) == ctypes.sizeof(Value)
    for name, *_ in Value._fields_:
        assert getattr(made, name).offset == getattr(Value, name).offset
    raw = bytes(Value(b"hello", 7, -3, Inner(1, 5, 17, -9), (ctypes.c_uint32 * 3)(1, 2, 3), 2.5))
    got = made.from_buffer_copy(raw)
    assert (got.name, got.count, got.delta, got.ratio, list(got.arr)) == (b"hello", 7, -3, 2.5, [1, 2, 3])
    assert (got.inner.x, got.inner.flag, got.inner.mode, got.inner.y) == (1, 5, 17, -9)
    assert bytes(got) == raw
    assert format_value(btf, ids[Value], raw) == {
        "name": "hello", "count": 7, "delta": -3, "inner": {"x": 1, "flag": "0x5", "mode": "0x11", "y": -9},
        "arr": [1, 2, 3], "ratio": 2.5,
    }


def _one(btf_types: list[Any]) -> tuple[BTF, int]:
    b = Builder()
    last = 0
    for t in btf_types:
        last = b.add(t)
    return b.build(), last


def test_top_level_scalars() -> None:
    b = Builder()
    u16 = b.add(Int(name="u16", size=2))
    s64 = b.add(Int(name="s64", size=8, encoding=IntEncoding.SIGNED))
    color = b.add(Enum(name="color", size=4, values=(EnumValue(name="RED", value=1), EnumValue(name="BLUE", value=7))))
    anon = b.add(Enum(size=4, values=(EnumValue(name="A", value=1),)))
    wide = b.add(Enum64(name="wide", size=8, values=(EnumValue(name="BIG", value=1 << 40),)))
    char = b.add(Int(name="char", size=1, encoding=IntEncoding.CHAR))
    text = b.add(Array(type=char, index_type=u16, nelems=6))
    double = b.add(Float(name="double", size=8))
    ptr = b.add(Pointer(type=0))
    td = b.add(Typedef(name="count_t", type=b.add(Const(type=b.add(Volatile(type=s64))))))
    btf = b.build()
    assert python_type(btf, u16) is ctypes.c_uint16 and python_type(btf, s64) is ctypes.c_int64
    assert python_type(btf, td) is ctypes.c_int64 and python_type(btf, ptr) is ctypes.c_uint64
    color_type = python_type(btf, color)
    got = color_type.from_buffer_copy((7).to_bytes(4, sys.byteorder))
    assert isinstance(got, enum.IntEnum) and got.name == "BLUE" and got == 7
    assert color_type.from_buffer_copy((9).to_bytes(4, sys.byteorder)) == 9  # outside the enum: an int
    assert python_type(btf, anon) is ctypes.c_uint32  # anonymous: int
    assert python_type(btf, wide).from_buffer_copy((1 << 40).to_bytes(8, sys.byteorder)).name == "BIG"
    assert python_type(btf, text).from_buffer_copy(b"ab\0cd\0") == b"ab\0cd\0"
    assert python_type(btf, double).from_buffer_copy(struct.pack("=d", 1.25)) == 1.25
    assert format_value(btf, color, (7).to_bytes(4, sys.byteorder)) == "BLUE"
    assert format_value(btf, text, b"ab\0cd\0") == "ab"


def test_what_ctypes_cannot_express_stays_bytes_with_a_warning() -> None:
    b = Builder()
    i128 = b.add(Int(name="__int128", size=16, encoding=IntEncoding.SIGNED))
    holder = b.add(Struct(name="holder", size=16, members=(Member(name="big", type=i128, offset=0),)))
    u32 = b.add(Int(name="u32", size=4))
    clash = b.add(Struct(name="clash", size=8, members=(Member(name="_fields_", type=u32, offset=0), Member(name="b", type=u32, offset=32))))
    btf = b.build()
    for type_id, reason in ((holder, "128-bit integer"), (clash, "'_fields_'")):
        with pytest.warns(BTFTypeWarning, match=reason):
            assert python_type(btf, type_id, "map 'x' value") is None
    assert format_value(btf, holder, (5).to_bytes(16, sys.byteorder)) == {"big": "0x5"}


def hostile() -> tuple[BTF, int]:
    """``struct { int s; struct {} a[0xffffffff]; }``: 4 bytes, four billion empty elements."""
    b = Builder()
    i32 = b.add(Int(name="int", size=4, encoding=IntEncoding.SIGNED))
    empty = b.add(Struct(size=0))
    many = b.add(Array(type=empty, index_type=i32, nelems=0xFFFFFFFF))
    value = b.add(Struct(name="hostile", size=4, members=(Member(name="s", type=i32, offset=0), Member(name="a", type=many, offset=32))))
    return b.build(), value


def test_hostile_type_is_refused_quickly() -> None:
    btf, value = hostile()
    start = time.monotonic()
    with pytest.raises(ValueError, match=f"more than {MAX_ITEMS} elements"):
        format_value(btf, value, bytes(4))
    with pytest.warns(BTFTypeWarning, match="zero-size elements"):
        assert python_type(btf, value) is None
    assert time.monotonic() - start < 1


@kernel
def test_hostile_map_dumps_with_a_clean_error() -> None:
    btf, value = hostile()
    with load(btf) as handle, Map.create(MapSpec(type=MapType.ARRAY, key_size=4, value_size=4, max_entries=1, btf=handle,
                                                  btf_key_type_id=1, btf_value_type_id=value)) as m:
        assert m.info().btf_value_type_id == value  # the kernel took it
        with pytest.warns(BTFTypeWarning):
            with Map.from_id(m.id) as opened:
                assert opened[0] == bytes(4)
        start = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "pybpf", "map", "dump", "id", str(m.id)], capture_output=True, text=True, timeout=60)
        assert done.returncode != 0 and done.stderr.count("\n") == 1 and ("more than" in done.stderr or "refusing" in done.stderr)
        assert time.monotonic() - start < 30


# ---- maps typed without declarations -----------------------------------------------------------


@kernel
def test_object_maps_are_typed(objects: dict[str, Path]) -> None:  # noqa: F811
    pin_root = Path(f"/sys/fs/bpf/pybpf-test-{uuid.uuid4()}")
    spec = CollectionSpec.from_file(objects["typed"])
    with spec.load(pin_root=pin_root) as coll:
        stats = coll.maps["stats"]  # PERCPU_HASH of struct pair
        pair = stats._value.ctype  # the type built from the object's BTF
        stats[3] = pair(packets=1, bytes=1500)
        got = stats[3]
        assert [(v.packets, v.bytes) for v in got] == [(1, 1500)] * len(got) and type(got[0]).__name__ == "pair"
        data = coll.maps[".data"][0]  # a data section reads as a struct of its variables
        assert data.calls == 100 and type(data).__name__ == "data"
        assert coll.maps["flows"].get(1) is None
        rodata = coll.maps[".rodata"][0]
        assert rodata.factor == 3 and rodata.greeting == b"hello"
    shutil.rmtree(pin_root, ignore_errors=True)


@kernel
@pytest.mark.skipif(BPFTOOL is None, reason="bpftool is not installed")
def test_map_pinned_by_libbpf_is_typed(objects: dict[str, Path]) -> None:  # noqa: F811
    root = Path(f"/sys/fs/bpf/pybpf-test-{uuid.uuid4()}")
    try:
        done = subprocess.run([BPFTOOL, "prog", "loadall", str(objects["typed"]), str(root), "pinmaps", str(root / "maps")],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        with Map.from_pin(root / "maps" / "flows") as m:
            flow = m._value.ctype  # struct flow, built from the BTF libbpf gave the kernel
            m[1] = flow(comm=b"bash", bytes=1500, state=7, proto=6, flags=0x801)
            got = m[1]
            assert (got.comm, got.bytes, got.state, got.proto, got.flags) == (b"bash", 1500, 7, 6, 0x801)
            got.addr.addr4 = 0x0100007F
            m[2] = got
            assert bytes(m[2].addr.addr6[:4]) == (0x0100007F).to_bytes(4, sys.byteorder) and isinstance(m[1].bytes, int)
            with Map.from_pin(root / "maps" / "flows", typed=False) as raw:
                assert raw[1] == bytes(got.__class__.from_buffer_copy(raw[1]))
            listed = subprocess.run([BPFTOOL, "-j", "map", "dump", "pinned", str(root / "maps" / "flows")], capture_output=True, text=True, check=True)
            theirs = {e["formatted"]["key"]: e["formatted"]["value"] for e in json.loads(listed.stdout)}
            assert theirs[1]["state"] == "GONE" and theirs[1]["comm"] == "bash" and theirs[1]["flags"] == "0x801"
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=False)


# ---- every kind, round trip through a real map, checked against bpftool ---------------------


def _ints() -> st.SearchStrategy[tuple[Any, ...]]:
    return st.tuples(st.just("int"), st.sampled_from([1, 2, 4, 8, 16]), st.booleans())


_ENUM_VALUES = st.lists(st.integers(0, 2**31 - 1), min_size=1, max_size=3, unique=True)
_SCALARS = st.one_of(
    _ints(),
    st.just(("char",)),
    st.tuples(st.just("enum"), st.sampled_from([4, 8]), _ENUM_VALUES, st.booleans()),  # the kernel checks enum members as 4 bytes
    st.tuples(st.just("enum64"), st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=3, unique=True)),
    st.just(("ptr",)),
    st.tuples(st.just("float"), st.sampled_from([4, 8])),
)


def _trees() -> st.SearchStrategy[Any]:
    def extend(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        member = st.one_of(inner, st.tuples(st.just("bits"), st.integers(1, 12), st.booleans()))
        return st.one_of(
            st.tuples(st.just("array"), inner, st.integers(0, 3)),
            st.tuples(st.just("chars"), st.integers(1, 8)),
            st.tuples(st.just("struct"), st.lists(member, min_size=1, max_size=4)),
            st.tuples(st.just("union"), st.lists(inner, min_size=1, max_size=3)),
            st.tuples(st.sampled_from(["typedef", "const", "volatile", "restrict", "type_tag"]), inner),
        )

    return st.recursive(_SCALARS, extend, max_leaves=8)


class _Build:
    """Turns a generated tree into BTF types laid out as C would (natural alignment)."""

    def __init__(self) -> None:
        self.b = Builder()
        self.u32 = self.b.add(Int(name="unsigned int", size=4))
        self.count = 0
        self.has_float = False

    def name(self, stem: str) -> str:
        self.count += 1
        return f"{stem}{self.count}"

    def add(self, tree: Any) -> tuple[int, int, int]:
        """(type id, size, alignment)."""
        kind = tree[0]
        b = self.b
        if kind == "int":
            _, size, signed = tree
            enc = IntEncoding.SIGNED if signed else IntEncoding.NONE
            return b.add(Int(name=self.name("int"), size=size, encoding=enc)), size, min(size, 8)
        if kind == "char":
            return b.add(Int(name="char", size=1, encoding=IntEncoding.CHAR)), 1, 1
        if kind == "enum":
            _, size, values, named = tree
            vals = tuple(EnumValue(name=self.name("V"), value=v % (1 << (8 * size - 1))) for v in values)
            return b.add(Enum(name=self.name("e") if named else "", size=size, values=vals)), size, size
        if kind == "enum64":
            vals = tuple(EnumValue(name=self.name("W"), value=v) for v in tree[1])
            return b.add(Enum64(name=self.name("w"), size=8, values=vals)), 8, 8
        if kind == "ptr":
            return b.add(Pointer(type=0)), 8, 8
        if kind == "float":
            self.has_float = True
            return b.add(Float(name=self.name("float"), size=tree[1])), tree[1], tree[1]
        if kind == "array":
            element, size, align = self.add(tree[1])
            return b.add(Array(type=element, index_type=self.u32, nelems=tree[2])), size * tree[2], align
        if kind == "chars":
            char = b.add(Int(name="char", size=1, encoding=IntEncoding.CHAR))
            return b.add(Array(type=char, index_type=self.u32, nelems=tree[1])), tree[1], 1
        if kind in ("typedef", "const", "volatile", "restrict", "type_tag"):
            below = tree[1]
            while kind != "type_tag" and below[0] == "type_tag":
                below = below[1]  # the kernel wants type tags before (outside) other modifiers
            inner, size, align = self.add(below)
            cls = {"typedef": Typedef, "const": Const, "volatile": Volatile, "restrict": Restrict, "type_tag": TypeTag}[kind]
            name = self.name("t") if kind in ("typedef", "type_tag") else ""
            return b.add(cls(name=name, type=inner)), size, align
        if kind == "union":
            parts = [self.add(t) for t in tree[1]]
            align = max(p[2] for p in parts)
            size = -(-max(p[1] for p in parts) // align) * align
            members = tuple(Member(name=self.name("u"), type=p[0], offset=0) for p in parts)
            return b.add(Union(name=self.name("un"), size=size, members=members)), size, align
        assert kind == "struct"
        members, pos, align = [], 0, 1
        for part in tree[1]:
            if part[0] == "bits":
                _, width, signed = part
                if pos // 32 != (pos + width - 1) // 32:
                    pos = -(-pos // 32) * 32
                enc = IntEncoding.SIGNED if signed else IntEncoding.NONE
                unit = b.add(Int(name=self.name("bf"), size=4, encoding=enc))
                members.append(Member(name=self.name("m"), type=unit, offset=pos, bitfield_size=width))
                pos += width
                align = max(align, 4)
                continue
            type_id, size, a = self.add(part)
            pos = -(-pos // (a * 8)) * a * 8
            members.append(Member(name=self.name("m"), type=type_id, offset=pos))
            pos += size * 8
            align = max(align, a)
        size = -(-(-(-pos // 8)) // align) * align
        return b.add(Struct(name=self.name("s"), size=size, members=tuple(members))), size, align


def _bpftool_formatted(map_id: int) -> Any:
    """bpftool's ``formatted`` value, or None where bpftool writes broken JSON (v7.1: a ``"`` char
    unescaped, ``(unsupported-kind`` for FLOAT and TYPE_TAG)."""
    out = subprocess.run([BPFTOOL, "-j", "map", "dump", "id", str(map_id)], capture_output=True, text=True, check=True)  # type: ignore[list-item]
    try:
        (entry,) = json.loads(out.stdout)
    except json.JSONDecodeError:
        assert "unsupported-kind" in out.stdout or '"""' in out.stdout or '"\\"' in out.stdout, out.stdout
        return None
    return entry["formatted"]["value"]


def _same(ours: Any, theirs: Any) -> bool:
    if isinstance(ours, float) or isinstance(theirs, float):
        return ours == theirs or (ours != ours and theirs != theirs)
    if isinstance(ours, dict) and isinstance(theirs, dict):
        return ours.keys() == theirs.keys() and all(_same(ours[k], theirs[k]) for k in ours)
    if isinstance(ours, list) and isinstance(theirs, list):
        return len(ours) == len(theirs) and all(_same(a, b) for a, b in zip(ours, theirs))
    return bool(ours == theirs)


@kernel
@pytest.mark.skipif(BPFTOOL is None, reason="bpftool is not installed")
@settings(max_examples=int(40 * float(os.environ.get("PYBPF_TEST_SCALE", "1"))), deadline=None, suppress_health_check=list(HealthCheck))
@given(tree=_trees(), data=st.data())
def test_every_kind_round_trips_through_a_map(tree: Any, data: st.DataObject) -> None:
    build = _Build()
    value_id, size, _ = build.add(tree)
    if not 0 < size <= 4096:
        return
    btf = build.b.build()
    raw = data.draw(st.binary(min_size=size, max_size=size))
    with load(btf) as handle, Map.create(MapSpec(type=MapType.HASH, key_size=4, value_size=size, max_entries=1, btf=handle,
                                                  btf_key_type_id=build.u32, btf_value_type_id=value_id)) as m:
        btf = handle.btf()  # as the kernel holds it: kinds it refuses were rewritten (pybpf.btf.sanitize)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BTFTypeWarning)
            py = python_type(btf, value_id)
        event("typed" if py is not None else "bytes")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BTFTypeWarning)
            typed = Map.from_id(m.id)
        with typed:
            typed[1] = raw
            got = typed[1]
            if py is None:
                assert got == raw
            elif isinstance(got, ctypes.Structure | ctypes.Union | ctypes.Array):
                assert bytes(got) == raw
                typed[1] = got  # updates take what lookups give
            elif isinstance(got, bytes):
                assert got == raw
            elif isinstance(got, float):
                assert struct.pack("=f" if size == 4 else "=d", got) == raw or got != got
            else:
                signed = isinstance(py, type) and issubclass(py, ctypes._SimpleCData) and py._type_ in "bhilq"
                assert int(got) == int.from_bytes(raw, sys.byteorder, signed=signed)
                typed[1] = got
            assert m[1] == raw  # the bytes the kernel holds are what was written
        ours = format_value(btf, value_id, raw)
        theirs = _bpftool_formatted(m.id)
        if theirs is not None:
            assert _same(ours, theirs), (ours, theirs)
