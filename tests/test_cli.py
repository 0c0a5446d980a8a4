"""The ``pybpf`` command driven as a user would: subprocesses, JSON compared with bpftool's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def pybpf(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([sys.executable, "-m", "pybpf", *args], capture_output=True, text=True, timeout=120)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def bpftool(*args: str) -> str:
    out = subprocess.run(["bpftool", *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_map_verbs_match_bpftool(pin_dir: Path) -> None:
    path = str(pin_dir / "cli")
    pybpf("map", "create", path, "type", "hash", "key", "4", "value", "8", "entries", "8", "name", "cli_map")
    pybpf("map", "update", "pinned", path, "key", "1", "0", "0", "0", "value", "hex", "02", "00", "00", "00", "00", "00", "00", "00")
    pybpf("map", "update", "pinned", path, "key", "0x03", "0", "0", "0", "value", "4", "0", "0", "0", "0", "0", "0", "0", "noexist")
    ours = json.loads(pybpf("--json", "map", "show", "pinned", path).stdout)
    theirs = json.loads(bpftool("-j", "map", "show", "pinned", path))
    for field in ("id", "type", "name", "flags", "bytes_key", "bytes_value", "max_entries", "frozen"):
        assert ours[field] == theirs[field], field
    dumped = json.loads(pybpf("--json", "map", "dump", "name", "cli_map").stdout)
    assert sorted(map(json.dumps, dumped)) == sorted(map(json.dumps, json.loads(bpftool("-j", "map", "dump", "pinned", path))))
    got = json.loads(pybpf("-j", "map", "lookup", "id", str(ours["id"]), "key", "1", "0", "0", "0").stdout)
    assert got["value"][0] == "0x02"
    pybpf("map", "delete", "pinned", path, "key", "1", "0", "0", "0")
    assert "Found 1 element" in pybpf("map", "dump", "pinned", path).stdout
    pybpf("map", "freeze", "pinned", path)
    assert json.loads(pybpf("-j", "map", "show", "pinned", path).stdout)["frozen"] == 1
    listed = json.loads(pybpf("-j", "map", "list").stdout)
    assert any(r["id"] == ours["id"] for r in listed)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["map", "lookup", "pinned", "/sys/fs/bpf/definitely-not-here", "key", "1"], "No such file"),
        (["map", "create", "/sys/fs/bpf/x", "type", "bogus"], "unknown map type"),
        (["map", "create", "/sys/fs/bpf/x", "type", "sockmap", "key", "8", "value", "8", "entries", "1"], "MapSpec.key_size"),
        (["map", "show", "id", "abc"], "not a number"),
        (["map", "show", "name", "no_such_map_here"], "no map named"),
        (["map", "dump", "sideways", "1"], "expected 'id', 'pinned' or 'name'"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(args: list[str], words: str) -> None:
    out = pybpf(*args, check=False)
    assert out.returncode != 0
    assert words in out.stderr and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr


def test_missing_key_is_a_clear_error(pin_dir: Path) -> None:
    path = str(pin_dir / "m")
    pybpf("map", "create", path, "type", "array", "key", "4", "value", "4", "entries", "2")
    out = pybpf("map", "lookup", "pinned", path, "key", "9", "0", "0", "0", check=False)
    assert out.returncode == 1 and "no such element" in out.stderr
    short = pybpf("map", "lookup", "pinned", path, "key", "9", check=False)
    assert "expected 4 bytes of key" in short.stderr


def test_demo_runs() -> None:
    out = pybpf("demo")
    assert "FAIL" not in out.stdout and "SOCKHASH" in out.stdout


def test_prog_and_btf_verbs(pin_dir: Path) -> None:
    import ctypes

    from pybpf import Map, MapType, ProgramType
    from pybpf.asm import R0, Assembler
    from pybpf.programs import Program, ProgramSpec

    class Value(ctypes.Structure):
        _fields_ = [("hits", ctypes.c_uint64), ("port", ctypes.c_uint16)]

    with Program.load(ProgramSpec(ProgramType.SOCKET_FILTER, Assembler().mov64(R0, 0).exit(), name="cli_prog")) as prog, \
            Map.create(type=MapType.HASH, key=ctypes.c_uint32, value=Value, max_entries=2, name="cli_btf") as m:
        prog.pin(pin_dir / "p")
        ours = json.loads(pybpf("-j", "prog", "show", "pinned", str(pin_dir / "p")).stdout)
        theirs = json.loads(bpftool("-j", "prog", "show", "pinned", str(pin_dir / "p")))
        for field in ("id", "type", "name", "tag", "gpl_compatible", "bytes_xlated"):
            assert ours[field] == theirs[field], field
        assert any(r["id"] == prog.id for r in json.loads(pybpf("-j", "prog", "list").stdout))
        dump = pybpf("btf", "dump", "map", str(m.id)).stdout
        assert "STRUCT 'Value' size=16" in dump and "'port' type_id=" in dump
        types = json.loads(pybpf("-j", "btf", "dump", "map", str(m.id)).stdout)["types"]
        assert {t["name"] for t in types} >= {"Value"}
    head = subprocess.run(f"{sys.executable} -m pybpf btf dump file /sys/kernel/btf/vmlinux | head -1",
                          shell=True, capture_output=True, text=True, timeout=120)
    assert head.stdout.startswith("[1] ") and head.stdout.count("\n") == 1 and head.stderr == ""


def test_typed_dump_matches_bpftool() -> None:
    import ctypes

    from pybpf import Map, MapType

    class Entry(ctypes.Structure):
        _fields_ = [("hits", ctypes.c_int64), ("port", ctypes.c_uint16), ("name", ctypes.c_char * 8),
                    ("last", ctypes.c_uint8 * 3)]

    with Map.create(type=MapType.HASH, key=ctypes.c_uint32, value=Entry, max_entries=4, name="typed_dump") as m:
        m[7] = Entry(-3, 443, b"https", (ctypes.c_uint8 * 3)(1, 2, 3))
        m[9] = Entry(5, 80, b"http", (ctypes.c_uint8 * 3)(4, 5, 6))
        ours = json.loads(pybpf("-j", "map", "dump", "id", str(m.id)).stdout)
        theirs = json.loads(bpftool("-j", "map", "dump", "id", str(m.id)))
        assert sorted(map(json.dumps, ours)) == sorted(map(json.dumps, theirs))
        assert {e["formatted"]["key"]: e["formatted"]["value"]["name"] for e in ours} == {7: "https", 9: "http"}
        looked = json.loads(pybpf("-j", "map", "lookup", "name", "typed_dump", "key", "7", "0", "0", "0").stdout)
        assert looked["formatted"]["value"] == {"hits": -3, "port": 443, "name": "https", "last": [1, 2, 3]}
        assert 'value: {"hits": 5' in pybpf("map", "dump", "id", str(m.id)).stdout
