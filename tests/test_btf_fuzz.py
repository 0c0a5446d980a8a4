"""Fuzzing the BTF parsers with mutated real blobs: every failure is a ``BTFError``, none hangs.

``PYBPF_FUZZ_EXAMPLES`` sets the number of examples per test (default keeps the file under 20 s).
"""

from __future__ import annotations

import ctypes
import os
import struct
from array import array
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pybpf.btf import BTF, BTFError, btf_from_ctypes, encode, parse, parse_ext
from pybpf.btf.layout import index_records as _index
from test_btf import MAPS_C, Key, Value, compile_bpf, every_kind

pytestmark = pytest.mark.nokernel

EXAMPLES = int(os.environ.get("PYBPF_FUZZ_EXAMPLES", "400"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=timedelta(seconds=2),  # a hang shows up as a deadline failure
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
INTERESTING = [0, 1, 2, 3, 4, 12, 24, 0x7F, 0xFF, 0xFFFF, 0x10000, 0xFFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]


def _vmlinux_prefix(types: int = 150, string_bytes: int = 4096) -> bytes:
    """The start of the kernel's BTF: its first types (whole records) and strings, header patched."""
    path = Path("/sys/kernel/btf/vmlinux")
    if not path.exists():
        return b""
    data = path.read_bytes()
    _, _, _, hdr_len, type_off, type_len, str_off, _ = struct.unpack_from("<HBBIIIII", data)
    offsets, _ = _index(array("I", data[hdr_len + type_off : hdr_len + type_off + type_len]), 1)
    kept = data[hdr_len + type_off : hdr_len + type_off + 4 * offsets[types]]
    strings = data[hdr_len + str_off : hdr_len + str_off + string_bytes - 1] + b"\0"
    header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(kept), len(kept), len(strings))
    return header + kept + strings


def _seeds() -> list[bytes]:
    clang_btf, _ = _clang()
    seeds = [encode(every_kind()), encode(every_kind(), byteorder="big"), encode(btf_from_ctypes(Key, Value)[0]), clang_btf]
    return [seed for seed in seeds + [_vmlinux_prefix()] if seed]


_CLANG: list[tuple[bytes, bytes]] = []


def _clang() -> tuple[bytes, bytes]:
    if not _CLANG:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            try:
                _CLANG.append(compile_bpf(MAPS_C, Path(tmp)))
            except pytest.skip.Exception:
                _CLANG.append((b"", b""))
    return _CLANG[0]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A seed blob with a few bit flips and 32-bit words overwritten, now and then a cut or an insertion."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip"] * 3 + ["word"] * 4 + ["cut", "insert"]))
        low = 24 if len(data) > 24 and draw(st.integers(0, 4)) else 0  # mostly past the header
        pos = draw(st.integers(low, max(len(data) - 1, low)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "word":
            pos -= pos % 4
            value = draw(st.sampled_from(INTERESTING) | st.integers(0, 0xFFFFFFFF))
            data[pos : pos + 4] = value.to_bytes(4, draw(st.sampled_from(["little", "big"])))
        elif op == "cut":
            del data[pos : pos + draw(st.integers(1, 64))]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


def _exercise(btf: BTF) -> None:
    """Touch everything a user might: every type, its size and resolution, names, re-encoding."""
    for t in btf.types:
        for call in (btf.sizeof, btf.resolve):
            try:
                call(t)
            except BTFError:
                pass
        if t.name:
            assert t in btf.find(t.name)
    assert parse(encode(btf)) == btf


SEEDS = _seeds()


@FUZZ
@given(blob=mutated(SEEDS))
def test_mutated_btf_parses_or_raises_btf_error(blob: bytes) -> None:
    try:
        btf = parse(blob)
    except BTFError:
        return
    _exercise(btf)


@FUZZ
@given(blob=mutated(SEEDS))
def test_lazy_parse_fails_only_with_btf_error(blob: bytes) -> None:
    try:
        btf = parse(blob, lazy=True)
        for type_id in range(len(btf)):
            btf.type_by_id(type_id)
    except BTFError:
        return


@FUZZ
@given(blob=st.binary(max_size=256))
def test_random_bytes_never_crash(blob: bytes) -> None:
    try:
        parse(blob)
    except BTFError:
        pass


@pytest.mark.skipif(not _clang()[1], reason="clang is not installed")
@FUZZ
@given(data=st.data())
def test_mutated_btf_ext_parses_or_raises_btf_error(data: st.DataObject) -> None:
    btf_data, ext_data = _clang()
    btf = parse(btf_data)
    blob = data.draw(mutated([ext_data]))
    try:
        ext = parse_ext(blob, btf)
    except BTFError:
        return
    assert all(isinstance(name, str) for name in ext.func_info)


def test_ctypes_struct_seed_is_valid() -> None:
    """The ctypes seed itself parses (so mutations start from real, valid data)."""
    btf = parse(encode(btf_from_ctypes(Key, Value)[0]))
    assert btf.sizeof(btf.by_name("Value")) == ctypes.sizeof(Value)
