"""Reading object files: maps, static values, programs by section, relocations, subprograms,
global data, BTF layout; every C source in ``tests/bpf`` is compiled with clang once per run."""

from __future__ import annotations

import io
import os
import platform
import shutil
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from pybpf import AttachType, MapFlags, MapSpec, MapType, Pinning, ProgramType
from pybpf._sys.syscall import Door, use_door
from pybpf.asm import Insn
from pybpf.btf import Datasec, Struct, Var
from pybpf.collection import CollectionSpec
from pybpf.elf import ELFError, data_map_name, section_def
from pybpf.programs import ProgramSpec
from pybpf.elf import programs as programs_module
from pybpf.elf.sections import SLEEPABLE, XDP_HAS_FRAGS

pytestmark = pytest.mark.nokernel

BPF_SOURCES = Path(__file__).parent / "bpf"
CLANG = shutil.which("clang-16") or shutil.which("clang")
HELPERS = Path("/usr/include/bpf/bpf_helpers.h")
OBJECTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "seed_maps": ("seed_maps.c", ()),
    "seed_maps_nobtf": ("seed_maps.c", ("-g0",)),
    "xskmap": ("xskmap.c", ()),
    "features": ("features.c", ()),
    "typed": ("typed.c", ()),
    "core": ("core.c", ()),
    "core_poisoned": ("core_poisoned.c", ()),
    "kfunc": ("kfunc.c", ()),
    "core_bitfields": ("core_bitfields.c", ()),
    "sockets": ("sockets.c", ()),
    "pinned": ("pinned.c", ()),
    "pinned32": ("pinned.c", ("-DENTRIES=32",)),
    "rejected": ("rejected.c", ()),
    "bad_field": ("bad_field.c", ()),
}
"""Object name -> (source in tests/bpf, extra clang flags)."""

_BUILT: dict[str, Path] = {}


def _multiarch_include() -> str:
    """Where Debian keeps ``asm/types.h`` (``linux/bpf.h`` needs it; clang -target bpf does not look there)."""
    return f"/usr/include/{platform.machine()}-linux-gnu"


def build_objects(directory: Path) -> dict[str, Path]:
    """Compile every object of ``OBJECTS`` into ``directory`` once per run, in parallel.

    Without clang-16 or libbpf's ``bpf_helpers.h`` the tests are skipped, or fail under
    ``PYBPF_REQUIRE_KERNEL=1``.
    """
    if _BUILT:
        return _BUILT
    missing = "clang (clang-16) is not installed" if CLANG is None else None
    if missing is None and not HELPERS.exists():
        missing = f"{HELPERS} is missing (apt-get install libbpf-dev)"
    if missing is not None:
        if os.environ.get("PYBPF_REQUIRE_KERNEL") == "1":
            pytest.fail(f"PYBPF_REQUIRE_KERNEL=1 but {missing}")
        pytest.skip(missing)
    assert CLANG is not None
    running = {}
    for name, (source, flags) in OBJECTS.items():
        out = directory / f"{name}.o"
        command = [CLANG, "-g", "-O2", "-target", "bpf", f"-I{_multiarch_include()}", *flags, "-c", str(BPF_SOURCES / source), "-o", str(out)]
        running[name] = (out, subprocess.Popen(command, stderr=subprocess.PIPE, text=True))
    for name, (out, process) in running.items():
        _, errors = process.communicate()
        if process.returncode:
            pytest.fail(f"clang failed on {OBJECTS[name][0]}:\n{errors}")
        _BUILT[name] = out
    return _BUILT


@pytest.fixture(scope="session")
def objects(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The compiled test objects by name (see ``OBJECTS``)."""
    return build_objects(tmp_path_factory.mktemp("bpf-objects"))


def read(objects: dict[str, Path], name: str) -> CollectionSpec:
    return CollectionSpec.from_file(objects[name])


def slots(code: bytes) -> list[tuple[int, Insn]]:
    """Each instruction with the index of its first 8-byte slot."""
    out, at = [], 0
    for insn in Insn.unpack(code):
        out.append((at, insn))
        at += insn.slots
    return out


def datasec(spec: CollectionSpec, name: str) -> dict[str, int]:
    """Variable offsets of a section, from the object's (fixed-up) BTF."""
    assert spec.btf is not None
    (found,) = spec.btf.types.find(name, Datasec)
    return {spec.btf.types.type_by_id(v.type).name: v.offset for v in found.vars}


# ---- every example of seeds/maps.md ------------------------------------------------------------


def test_legacy_map(objects: dict[str, Path]) -> None:
    spec = read(objects, "seed_maps").maps["my_map"]
    assert spec == MapSpec(type=MapType.HASH, key_size=4, value_size=4, max_entries=100, flags=MapFlags.NO_PREALLOC, name="my_map")


def test_btf_map_with_struct_value(objects: dict[str, Path]) -> None:
    spec = read(objects, "seed_maps")
    icmpcnt = spec.maps["icmpcnt"]
    assert (icmpcnt.type, icmpcnt.key_size, icmpcnt.value_size, icmpcnt.max_entries) == (MapType.ARRAY, 4, 12, 16)
    assert spec.btf is not None
    types = spec.btf.types
    assert types.type_by_id(icmpcnt.btf_key_type_id).name == "int"
    value = types.type_by_id(icmpcnt.btf_value_type_id)
    assert isinstance(value, Struct) and value.name == "my_value" and [m.name for m in value.members] == ["x", "y", "z"]


def test_map_in_map_with_static_values(objects: dict[str, Path]) -> None:
    outer = read(objects, "seed_maps").maps["m_array_of_maps"]
    assert (outer.type, outer.key_size, outer.value_size, outer.max_entries) == (MapType.ARRAY_OF_MAPS, 4, 4, 8)
    inner = outer.inner_map
    assert inner is not None and (inner.type, inner.key_size, inner.value_size, inner.max_entries) == (MapType.ARRAY, 4, 4, 4)
    assert tuple(outer.contents) == ((0, "inner_map"),)


def test_prog_array_with_static_values(objects: dict[str, Path]) -> None:
    spec = read(objects, "seed_maps")
    tail = spec.maps["prog_array_init"]
    assert (tail.type, tail.key_size, tail.value_size, tail.max_entries) == (MapType.PROG_ARRAY, 4, 4, 2)
    assert tuple(tail.contents) == ((1, "tailcall_1"),)
    assert "tailcall_1" in spec.programs


def test_xskmap_seed(objects: dict[str, Path]) -> None:
    spec = read(objects, "xskmap")
    xsks = spec.maps["xsks_map"]
    assert (xsks.type, xsks.key_size, xsks.value_size, xsks.max_entries) == (MapType.XSKMAP, 4, 4, 64)
    program = spec.programs["xsk_redir_prog"]
    assert (program.type, program.expected_attach_type, program.license) == (ProgramType.XDP, AttachType.XDP, "GPL")
    assert isinstance(program, ProgramSpec)
    assert {ref.map for ref in program.references} == {"xsks_map"}


# ---- every BTF map attribute, global data --------------------------------------------------------


def test_every_btf_map_attribute(objects: dict[str, Path]) -> None:
    maps = read(objects, "features").maps
    sized = maps["sized"]
    assert (sized.key_size, sized.value_size, sized.max_entries, sized.numa_node) == (8, 16, 32, 0)
    assert sized.create_flags == MapFlags.NO_PREALLOC | MapFlags.NUMA_NODE
    seen = maps["seen"]
    assert (seen.type, seen.key_size, seen.value_size, seen.max_entries, seen.map_extra) == (MapType.BLOOM_FILTER, 0, 4, 128, 3)
    assert maps["shared"].pinning == Pinning.BY_NAME and maps["sized"].pinning == Pinning.NONE
    assert (maps["stats"].type, maps["stats"].value_size) == (MapType.PERCPU_HASH, 16)
    by_hash = maps["by_hash"]
    assert by_hash.type == MapType.HASH_OF_MAPS and tuple(by_hash.contents) == ((1, "first"), (3, "second"))
    assert by_hash.inner_map is not None and (by_hash.inner_map.value_size, by_hash.inner_map.max_entries) == (8, 1)
    assert (maps["socks"].key_size, maps["socks"].value_size) == (4, 8)
    assert (maps["socks_by_cookie"].type, maps["socks_by_cookie"].key_size) == (MapType.SOCKHASH, 8)


def test_unknown_map_attribute_is_named(objects: dict[str, Path]) -> None:
    with pytest.raises(ELFError, match="colour") as caught:
        read(objects, "bad_field")
    assert "bad_field.o" in str(caught.value)


def test_btf_maps_need_btf(objects: dict[str, Path]) -> None:
    with pytest.raises(ELFError, match=r"\.maps needs the object's BTF"):
        read(objects, "seed_maps_nobtf")


def test_global_data_maps(objects: dict[str, Path]) -> None:
    spec = read(objects, "features")
    data, rodata, bss = spec.maps[".data"], spec.maps[".rodata"], spec.maps[".bss"]
    assert [m.name for m in (data, rodata, bss)] == ["features.data", "features.rodata", "features.bss"]
    for found in (data, rodata, bss):
        assert (found.type, found.key_size, found.max_entries) == (MapType.ARRAY, 4, 1)
    assert data.flags == MapFlags.MMAPABLE and bss.flags == MapFlags.MMAPABLE
    assert rodata.flags == MapFlags.MMAPABLE | MapFlags.RDONLY_PROG
    assert tuple(data.contents) == ((0, (100).to_bytes(8, sys.byteorder)),)
    assert bss.contents == () and bss.value_size >= 12
    (_, raw), = rodata.contents
    offsets = datasec(spec, ".rodata")
    assert raw[offsets["factor"] : offsets["factor"] + 4] == (3).to_bytes(4, sys.byteorder)
    assert raw[offsets["greeting"] : offsets["greeting"] + 6] == b"hello\0"
    assert spec.btf is not None and data.btf_value_type_id == spec.btf.types.find(".data", Datasec)[0].id


@pytest.mark.parametrize(
    ("object_name", "section", "expected"),
    [
        ("icmp_counter", ".data", "icmp_cou.data"),
        ("icmp_counter", ".rodata", "icmp_cou.rodata"),
        ("x", ".bss", "x.bss"),
        ("my-prog", ".data", "my_prog.data"),
        ("anything", ".rodata.str1.1", ".rodata.str1.1"),
        ("anything", ".data.a_very_long_name", ".data.a_very_lo"),
    ],
)
def test_data_map_names_follow_libbpf(object_name: str, section: str, expected: str) -> None:
    assert data_map_name(object_name, section) == expected


def test_datasec_layout_is_fixed_up(objects: dict[str, Path]) -> None:
    spec = read(objects, "seed_maps")
    offsets = datasec(spec, ".maps")
    assert list(offsets.values()) == sorted(offsets.values()) and len(set(offsets.values())) == len(offsets)
    assert spec.btf is not None
    (maps_sec,) = spec.btf.types.find(".maps", Datasec)
    assert maps_sec.size > max(offsets.values())


# ---- programs ------------------------------------------------------------------------------------


def test_programs_by_section(objects: dict[str, Path]) -> None:
    found = {**read(objects, "features").programs, **read(objects, "sockets").programs}
    expected = {
        "with_calls": (ProgramType.XDP, AttachType.XDP),
        "classify": (ProgramType.SCHED_CLS, None),
        "filter": (ProgramType.SOCKET_FILTER, None),
        "pick": (ProgramType.SK_REUSEPORT, AttachType.SK_REUSEPORT_SELECT),
        "pick_or_migrate": (ProgramType.SK_REUSEPORT, AttachType.SK_REUSEPORT_SELECT_OR_MIGRATE),
        "on_sockops": (ProgramType.SOCK_OPS, AttachType.CGROUP_SOCK_OPS),
        "cgroup_skb": (ProgramType.CGROUP_SKB, None),
        "on_sleep": (ProgramType.KPROBE, None),
        "untyped": (ProgramType.UNSPEC, None),
        "parser": (ProgramType.SK_SKB, AttachType.SK_SKB_STREAM_PARSER),
        "stream_verdict": (ProgramType.SK_SKB, AttachType.SK_SKB_STREAM_VERDICT),
        "echo": (ProgramType.SK_SKB, AttachType.SK_SKB_VERDICT),
        "msg": (ProgramType.SK_MSG, AttachType.SK_MSG_VERDICT),
    }
    assert {name: (p.type, p.expected_attach_type) for name, p in found.items()} == expected
    assert "global_sum" not in found and "scale" not in found  # .text functions are subprograms
    assert found["with_calls"].license == "Dual BSD/GPL"


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("socket", (ProgramType.SOCKET_FILTER, None, 0)),
        ("sk_skb/verdict", (ProgramType.SK_SKB, AttachType.SK_SKB_VERDICT, 0)),
        ("sk_skb", (ProgramType.SK_SKB, None, 0)),
        ("sk_reuseport/migrate", (ProgramType.SK_REUSEPORT, AttachType.SK_REUSEPORT_SELECT_OR_MIGRATE, 0)),
        ("classifier", (ProgramType.SCHED_CLS, None, 0)),
        ("tc/ingress", (ProgramType.SCHED_CLS, AttachType.TCX_INGRESS, 0)),
        ("cgroup/connect4", (ProgramType.CGROUP_SOCK_ADDR, AttachType.CGROUP_INET4_CONNECT, 0)),
        ("cgroup_skb/egress", (ProgramType.CGROUP_SKB, AttachType.CGROUP_INET_EGRESS, 0)),
        ("kprobe/tcp_connect", (ProgramType.KPROBE, None, 0)),
        ("kretprobe", (ProgramType.KPROBE, None, 0)),
        ("uprobe.s/bin:main", (ProgramType.KPROBE, None, SLEEPABLE)),
        ("tracepoint/syscalls/sys_enter_write", (ProgramType.TRACEPOINT, None, 0)),
        ("xdp.frags", (ProgramType.XDP, AttachType.XDP, XDP_HAS_FRAGS)),
        ("xdp/devmap", (ProgramType.XDP, AttachType.XDP_DEVMAP, 0)),
        ("fentry/tcp_v4_connect", (ProgramType.TRACING, AttachType.TRACE_FENTRY, 0)),
        ("sk_lookup", (ProgramType.SK_LOOKUP, AttachType.SK_LOOKUP, 0)),
    ],
)
def test_section_table(section: str, expected: tuple[ProgramType, AttachType | None, int]) -> None:
    found = section_def(section)
    assert found is not None and (found.type, found.attach, found.flags) == expected


@pytest.mark.parametrize("section", ["xdpx", "kprobes/x", "sockets", "", "sk_skb/verdicts"])
def test_unknown_sections(section: str) -> None:
    assert section_def(section) is None


def test_map_and_data_references(objects: dict[str, Path]) -> None:
    spec = read(objects, "features")
    program = spec.programs["with_calls"]
    assert isinstance(program, ProgramSpec)
    lddw = {at for at, insn in slots(program.instructions()) if insn.wide}
    assert {ref.insn for ref in program.references} <= lddw
    by_map: dict[str, set[int | None]] = {}
    for ref in program.references:
        by_map.setdefault(ref.map, set()).add(ref.offset)
    bss, rodata = datasec(spec, ".bss"), datasec(spec, ".rodata")
    assert by_map[".data"] == {0}
    assert by_map[".bss"] == {bss["last_len"], bss["hidden_total"]}
    assert by_map[".rodata"] <= {rodata["factor"], rodata["greeting"]} and by_map[".rodata"]
    seed = read(objects, "seed_maps").programs["entry"]
    assert {ref.map for ref in seed.references} == {"my_map", "icmpcnt", "m_array_of_maps", "prog_array_init"}  # type: ignore[attr-defined]
    assert all(ref.offset is None for ref in seed.references)  # type: ignore[attr-defined]


def _callees(spec: CollectionSpec, program: str) -> tuple[list[str], set[int], set[int]]:
    """Function names by func_info, their starts, and the targets of calls and function addresses."""
    found = spec.programs[program]
    assert spec.btf is not None
    names = [spec.btf.types.type_by_id(f.type_id).name for f in found.func_info]
    starts = {f.insn_off for f in found.func_info}
    targets = {at + insn.imm + 1 for at, insn in slots(found.instructions()) if insn.src in (1, 4) and insn.code in (0x85, 0x18)}
    return names, starts, targets


def test_subprograms_are_appended_and_calls_fixed(objects: dict[str, Path]) -> None:
    spec = read(objects, "features")
    names, starts, targets = _callees(spec, "with_calls")
    assert names[0] == "with_calls" and set(names) == {"with_calls", "add_one", "scale", "global_sum"}
    assert targets == starts - {0}  # every call (and bpf_loop's callback address) lands on a function
    names, starts, targets = _callees(spec, "classify")
    assert set(names) == {"classify", "global_sum", "scale"} and targets == starts - {0}
    callback = [insn for _, insn in slots(spec.programs["with_calls"].instructions()) if insn.wide and insn.src == 4]
    assert len(callback) == 1  # BPF_PSEUDO_FUNC: the address of add_one


def test_line_info_follows_the_code(objects: dict[str, Path]) -> None:
    program = read(objects, "features").programs["with_calls"]
    offsets = [line.insn_off for line in program.line_info]
    length = len(program.instructions()) // 8
    assert offsets[0] == 0 and offsets == sorted(offsets) and offsets[-1] < length
    assert {f.insn_off for f in program.func_info} <= set(offsets)
    assert any("bpf_loop" in line.source for line in program.line_info)


# ---- bad input -----------------------------------------------------------------------------------


def test_not_an_object(tmp_path: Path) -> None:
    junk = tmp_path / "junk.o"
    junk.write_bytes(b"\x7fELF" + b"\0" * 10)
    with pytest.raises(ELFError, match="junk.o"):
        CollectionSpec.from_file(junk)
    with pytest.raises(ELFError):
        CollectionSpec.from_bytes(b"")
    with pytest.raises(ELFError, match="not a BPF object"):
        CollectionSpec.from_bytes(Path(sys.executable).resolve().read_bytes()[:1 << 20])


def test_truncated_object(objects: dict[str, Path]) -> None:
    data = objects["seed_maps"].read_bytes()
    for cut in (16, 64, len(data) // 2, len(data) - 1):
        with pytest.raises(ValueError):
            CollectionSpec.from_bytes(data[:cut])


def _strtab_offset(data: bytes, name: bytes) -> int:
    """Where ``name`` sits in the object's ``.strtab`` (symbol names)."""
    strtab = ELFFile(io.BytesIO(data)).get_section_by_name(".strtab")
    start = strtab["sh_offset"]
    return data.index(name + b"\0", start, start + strtab["sh_size"])


def test_symbol_missing_for_a_btf_map(objects: dict[str, Path]) -> None:
    """A ``.maps`` variable whose symbol is gone (renamed) is refused, naming the map."""
    data = bytearray(objects["xskmap"].read_bytes())
    data[_strtab_offset(bytes(data), b"xsks_map")] = ord("y")
    with pytest.raises(ELFError, match="'xsks_map'"):
        CollectionSpec.from_bytes(bytes(data))


def test_call_into_nothing(objects: dict[str, Path]) -> None:
    """A subprogram call whose target is not a function is refused, naming the caller."""
    data = bytearray(objects["features"].read_bytes())
    text = ELFFile(io.BytesIO(bytes(data))).get_section_by_name(".text")["sh_offset"]
    call = data.index(bytes([0x85, 0x10]), text)  # global_sum's call of scale: aim it past every function
    data[call + 4 : call + 8] = (0x7FFF).to_bytes(4, sys.byteorder)
    with pytest.raises(ELFError, match="'global_sum'.*does not start a function"):
        CollectionSpec.from_bytes(bytes(data))


def test_linking_is_bounded(objects: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Every program copies the subprograms it calls: the total is capped, so a small hostile file
    cannot expand without bound."""
    monkeypatch.setattr(programs_module, "MAX_LINKED_BYTES", 64 * 8)
    with pytest.raises(ELFError, match="exceed 64 instructions"):
        read(objects, "features")


def test_reading_makes_no_syscalls(objects: dict[str, Path]) -> None:
    """Behind a door that fails on use, every object still reads: parsing never asks the kernel."""
    def refuse(*args: object) -> int:
        raise AssertionError("a syscall while reading an object")

    with use_door(Door(refuse, refuse, "refusing")):
        for path in objects.values():
            try:
                CollectionSpec.from_file(path)
            except ValueError:
                pass


def test_specs_are_plain_data(objects: dict[str, Path]) -> None:
    spec = read(objects, "seed_maps")
    spec.maps["icmpcnt"].max_entries = 64
    del spec.programs["entry"]
    assert read(objects, "seed_maps").maps["icmpcnt"].max_entries == 16
    assert struct.calcsize("=5I") == 20  # the legacy struct bpf_map_def the C declares
    assert isinstance(spec.btf.types.by_name("icmpcnt", Var), Var)  # type: ignore[union-attr]
