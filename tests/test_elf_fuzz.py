"""Fuzzing the object reader with mutated real objects: every failure is a ``ValueError`` (an
``ELFError`` or ``BTFError``), none hangs, none allocates beyond the input's size.

``PYBPF_FUZZ_EXAMPLES`` sets the number of examples per test (the default keeps the file under 20 s).
"""

from __future__ import annotations

import dataclasses
import io
import os
import struct
import tracemalloc
from datetime import timedelta
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pybpf.collection import CollectionSpec
from test_elf import build_objects

pytestmark = pytest.mark.nokernel

EXAMPLES = int(os.environ.get("PYBPF_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=timedelta(seconds=5),  # a hang shows up as a deadline failure (an example takes < 20 ms)
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
SEED_NAMES = ("seed_maps", "features", "sockets", "xskmap")
INTERESTING = [0, 1, 2, 3, 4, 7, 8, 12, 16, 24, 0x7F, 0x80, 0xFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1 << 40, (1 << 64) - 1]
_SHDR_FIELDS = {  # Elf64_Shdr: field -> (offset, struct format)
    "sh_name": (0, "I"), "sh_type": (4, "I"), "sh_flags": (8, "Q"), "sh_offset": (24, "Q"), "sh_size": (32, "Q"),
    "sh_link": (40, "I"), "sh_info": (44, "I"), "sh_entsize": (56, "Q"),
}
_EHDR_FIELDS = {"e_shoff": (0x28, "Q"), "e_shentsize": (0x3A, "H"), "e_shnum": (0x3C, "H"), "e_shstrndx": (0x3E, "H")}
_SYM_FIELDS = {"st_name": (0, "I"), "st_info": (4, "B"), "st_shndx": (6, "H"), "st_value": (8, "Q"), "st_size": (16, "Q")}
_REL_FIELDS = {"r_offset": (0, "Q"), "r_info": (8, "Q")}


@dataclasses.dataclass(frozen=True)
class Seed:
    """A compiled object and where its interesting parts are."""

    data: bytes
    section_headers: tuple[int, ...]
    symbols: tuple[int, ...]
    relocations: tuple[int, ...]
    ranges: dict[str, tuple[int, int]]


def _seed(data: bytes) -> Seed:
    elf = ELFFile(io.BytesIO(data))
    shoff, shentsize = elf["e_shoff"], elf["e_shentsize"]
    headers = tuple(shoff + i * shentsize for i in range(elf.num_sections()))
    symbols: list[int] = []
    relocations: list[int] = []
    ranges = {}
    for section in elf.iter_sections():
        start, size = section["sh_offset"], section["sh_size"]
        ranges[section.name] = (start, start + size)
        if section["sh_type"] == "SHT_SYMTAB":
            symbols += range(start, start + size, 24)
        elif section["sh_type"] == "SHT_REL":
            relocations += range(start, start + size, 16)
    return Seed(data, headers, tuple(symbols), tuple(relocations), ranges)


_SEEDS: list[Seed] = []


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> list[Seed]:
    if not _SEEDS:
        built = build_objects(tmp_path_factory.mktemp("bpf-fuzz"))
        _SEEDS.extend(_seed(built[name].read_bytes()) for name in SEED_NAMES)
    return _SEEDS


def read_or_value_error(data: bytes) -> None:
    """Read ``data``; any failure must be a ``ValueError`` (anything else fails the test)."""
    try:
        CollectionSpec.from_bytes(data, name="fuzz")
    except ValueError:
        pass


def _put(data: bytearray, at: int, fmt: str, value: int) -> None:
    size = struct.calcsize("=" + fmt)
    if at + size <= len(data):
        struct.pack_into("=" + fmt, data, at, value & ((1 << (8 * size)) - 1))


values = st.one_of(st.sampled_from(INTERESTING), st.integers(min_value=0, max_value=(1 << 64) - 1))


@FUZZ
@given(data=st.data())
def test_byte_flips(seeds: list[Seed], data: st.DataObject) -> None:
    seed = data.draw(st.sampled_from(seeds))
    region = data.draw(st.sampled_from(sorted(seed.ranges) + ["anywhere"]))
    start, end = seed.ranges.get(region, (0, len(seed.data)))
    if end <= start:
        start, end = 0, len(seed.data)
    mutated = bytearray(seed.data)
    for _ in range(data.draw(st.integers(min_value=1, max_value=8))):
        at = data.draw(st.integers(min_value=start, max_value=end - 1))
        mutated[at] = data.draw(st.integers(min_value=0, max_value=255))
    read_or_value_error(bytes(mutated))


@FUZZ
@given(data=st.data())
def test_truncations(seeds: list[Seed], data: st.DataObject) -> None:
    seed = data.draw(st.sampled_from(seeds))
    cut = data.draw(st.integers(min_value=0, max_value=len(seed.data) - 1))
    read_or_value_error(seed.data[:cut])


@FUZZ
@given(data=st.data())
def test_header_tweaks(seeds: list[Seed], data: st.DataObject) -> None:
    """Section headers, the ELF header, symbols and relocations given hostile field values."""
    seed = data.draw(st.sampled_from(seeds))
    mutated = bytearray(seed.data)
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        table, fields = data.draw(
            st.sampled_from([(seed.section_headers, _SHDR_FIELDS), ((0,), _EHDR_FIELDS), (seed.symbols, _SYM_FIELDS), (seed.relocations, _REL_FIELDS)])
        )
        if not table:
            continue
        base = data.draw(st.sampled_from(table))
        offset, fmt = fields[data.draw(st.sampled_from(sorted(fields)))]
        _put(mutated, base + offset, fmt, data.draw(values))
    read_or_value_error(bytes(mutated))


@pytest.mark.parametrize(
    ("section", "field", "value"),
    [
        (".bss", "sh_size", 1 << 40),
        (".symtab", "sh_size", 1 << 40),
        (".symtab", "sh_entsize", 0),
        (".BTF", "sh_size", 1 << 40),
        (".data", "sh_offset", (1 << 64) - 1),
        (".maps", "sh_type", 8),  # NOBITS: a .maps section without contents
    ],
)
def test_hostile_sizes_allocate_nothing(seeds: list[Seed], section: str, field: str, value: int) -> None:
    """Huge declared sizes are refused (or ignored) without allocating anything like them."""
    seed = seeds[1]
    elf = ELFFile(io.BytesIO(seed.data))
    index = next(i for i, s in enumerate(elf.iter_sections()) if s.name == section)
    mutated = bytearray(seed.data)
    offset, fmt = _SHDR_FIELDS[field]
    _put(mutated, seed.section_headers[index] + offset, fmt, value)
    tracemalloc.start()
    try:
        read_or_value_error(bytes(mutated))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * len(seed.data) + (8 << 20)


def test_seeds_read_cleanly(seeds: list[Seed]) -> None:
    for seed in seeds:
        assert CollectionSpec.from_bytes(seed.data).programs


def test_bad_files_name_themselves(tmp_path: Path, seeds: list[Seed]) -> None:
    path = tmp_path / "broken.o"
    path.write_bytes(seeds[0].data[:200])
    with pytest.raises(ValueError, match="broken.o"):
        CollectionSpec.from_file(path)
