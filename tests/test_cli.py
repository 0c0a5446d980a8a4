"""The ``pybpf`` command driven as a user would (subprocesses, and ``main`` in-process where only
the grammar is tested), its output compared byte for byte with the real bpftool's."""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pybpf import Map, MapType, ProgramType, possible_cpus
from pybpf.asm import R0, Assembler
from pybpf.cli import main
from pybpf.cli.registry import OBJECTS
from pybpf.programs import Program, ProgramSpec


def pybpf(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([sys.executable, "-m", "pybpf", *args], capture_output=True, text=True, timeout=120)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def bpftool(*args: str) -> str:
    out = subprocess.run(["bpftool", *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def bpftool_run(*args: str) -> tuple[int, str, str]:
    out = subprocess.run(["bpftool", *args], capture_output=True, text=True, timeout=60)
    return out.returncode, out.stdout, out.stderr


def run(*args: str) -> tuple[int, str, str]:
    """``pybpf ARGS`` in this process: (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(args))
    return status, out.getvalue(), err.getvalue()


class Entry(ctypes.Structure):
    _fields_ = [("hits", ctypes.c_int64), ("port", ctypes.c_uint16), ("name", ctypes.c_char * 8), ("last", ctypes.c_uint8 * 3)]


@pytest.fixture
def pinned(pin_dir: Path) -> Iterator[dict[str, str]]:
    """Maps and a program pinned under ``pin_dir`` and held by no process (so bpftool shows no pids)."""
    paths = {name: str(pin_dir / name) for name in ("hash", "btf", "pcpu", "pcpu_btf", "wide", "frozen", "prog")}
    with Map.create(type=MapType.HASH, key_size=4, value_size=8, max_entries=8, name="cli_hash") as m:
        m[b"\x01\0\0\0"] = b"\x02" + b"\0" * 7
        m.pin(paths["hash"])
    with Map.create(type=MapType.HASH, key=ctypes.c_uint32, value=Entry, max_entries=4, name="cli_btf") as m:
        m[7] = Entry(-3, 443, b"https", (ctypes.c_uint8 * 3)(1, 2, 3))
        m[9] = Entry(5, 80, b"http", (ctypes.c_uint8 * 3)(4, 5, 6))
        m.pin(paths["btf"])
    with Map.create(type=MapType.PERCPU_ARRAY, key_size=4, value_size=4, max_entries=2, name="cli_pcpu") as m:
        m.pin(paths["pcpu"])
    with Map.create(type=MapType.PERCPU_HASH, key=ctypes.c_uint32, value=ctypes.c_uint32, max_entries=4, name="cli_pcpu_btf") as m:
        m[1] = [5 + cpu for cpu in range(possible_cpus())]
        m.pin(paths["pcpu_btf"])
    with Map.create(type=MapType.HASH, key_size=20, value_size=40, max_entries=2, name="cli_wide") as m:
        m[bytes(range(20))] = bytes(range(100, 140))
        m.pin(paths["wide"])
    with Map.create(type=MapType.ARRAY, key=ctypes.c_uint32, value=ctypes.c_uint64, max_entries=2, name="cli_frozen") as m:
        m.freeze()
        m.pin(paths["frozen"])
    with Program.load(ProgramSpec(ProgramType.SOCKET_FILTER, Assembler().mov64(R0, 0).exit(), name="cli_prog")) as prog:
        prog.pin(paths["prog"])
    yield paths


def map_id(path: str) -> int:
    with Map.from_pin(path) as m:
        return m.id


# ---- the grammar ----------------------------------------------------------------------------

def test_options_anywhere(pinned: dict[str, str]) -> None:
    ident = str(map_id(pinned["hash"]))
    expected = run("--json", "map", "show", "id", ident)
    assert expected[0] == 0 and json.loads(expected[1])["name"] == "cli_hash"
    for args in (["map", "show", "--json", "id", ident], ["map", "show", "id", ident, "-j"], ["map", "-j", "show", "id", ident],
                 ["map", "list", "--json", "id", ident]):
        assert run(*args) == expected, args
    pretty = run("map", "show", "id", ident, "-p")
    assert pretty[0] == 0 and pretty[1] == bpftool("-p", "map", "show", "id", ident)
    assert run("-jp", "map", "show", "id", ident) == pretty == run("map", "show", "id", ident, "--pretty")
    listed = run("map", "list", "--json")
    assert listed[0] == 0 and any(r["id"] == int(ident) for r in json.loads(listed[1]))


def _every_help() -> Iterator[list[str]]:
    yield ["--help"]
    for obj in OBJECTS:
        yield [obj, "--help"]
        status, text, _ = run(obj, "--help")
        for line in text.splitlines():
            words = line.split()
            if obj in ("map", "prog", "xsk") and line.startswith("  pybpf ") and len(words) > 2:
                yield [obj, words[2], "--help"]
    yield ["map", "help"]
    yield ["reuseport", "status", "--help"]


def test_every_verb_has_help_without_rst() -> None:
    seen = set()
    for args in _every_help():
        status, out, err = run(*args)
        assert status == 0 and out and not err, args
        assert "`" not in out, (args, out)
        seen.add(" ".join(args))
    assert {"map show --help", "map dump --help", "map lookup --help", "prog show --help", "xsk capture --help"} <= seen
    assert "MAP := { id MAP_ID" in run("map", "show", "--help")[1]
    out = pybpf("map", "show", "--help").stdout
    assert out.startswith("usage: pybpf map show")


def test_version() -> None:
    from pybpf import __version__

    assert run("--version") == (0, f"pybpf {__version__}\n", "")
    assert run("-V") == (0, f"pybpf {__version__}\n", "")
    assert json.loads(run("-j", "--version")[1]) == {"version": __version__}


@pytest.mark.parametrize(
    "args",
    [
        ["map", "show", "id", "{hash}", "junk"],
        ["map", "dump", "id", "{hash}", "junk"],
        ["map", "lookup", "id", "{hash}", "key", "1", "0", "0", "0", "1"],
        ["map", "delete", "id", "{hash}", "key", "1", "0", "0", "0", "0"],
        ["map", "update", "id", "{hash}", "key", "1", "0", "0", "0", "value", *["0"] * 8, "any", "junk"],
        ["map", "freeze", "id", "{hash}", "junk"],
        ["map", "pin", "id", "{hash}", "/sys/fs/bpf/x", "junk"],
        ["prog", "show", "pinned", "{prog}", "junk"],
    ],
)
def test_trailing_words_are_refused(pinned: dict[str, str], args: list[str]) -> None:
    args = [a.replace("{hash}", str(map_id(pinned["hash"]))).replace("{prog}", pinned["prog"]) for a in args]
    status, out, err = run(*args)
    assert status == 255 and out == "" and "unexpected" in err and err.count("\n") == 1, (args, err)
    with Map.from_pin(pinned["hash"]) as m:  # nothing was changed on the way
        assert m[b"\x01\0\0\0"] == b"\x02" + b"\0" * 7 and len(m) == 1
        assert "frozen:\t0" in Path(f"/proc/self/fdinfo/{m.fd}").read_text()


def test_ids_beyond_u32_are_refused(pinned: dict[str, str]) -> None:
    ident = map_id(pinned["hash"])
    with Program.from_pin(pinned["prog"]) as prog:
        prog_id = prog.info().id
    for args in (["map", "show", "id", str(2**32 + ident)], ["map", "dump", "id", str(2**32 + ident)],
                 ["prog", "show", "id", str(2**32 + prog_id)], ["map", "show", "id", hex(2**64 + ident)]):
        status, out, err = run(*args)
        assert status == 255 and out == "" and "out of range" in err, (args, out, err)


def test_wrong_kind_pins_are_refused(pinned: dict[str, str]) -> None:
    for args, words in ((["map", "show", "pinned", pinned["prog"]], "is a program, not a map"),
                        (["map", "dump", "pinned", pinned["prog"]], "is a program, not a map"),
                        (["map", "lookup", "pinned", pinned["prog"], "key", "0"], "is a program, not a map"),
                        (["prog", "show", "pinned", pinned["hash"]], "is a map, not a program")):
        status, out, err = run(*args)
        assert status == 255 and out == "" and words in err, (args, out, err)
        assert bpftool_run(*args)[0] == 255


def test_errors_under_json_are_json_on_stdout(pinned: dict[str, str]) -> None:
    status, out, err = run("-j", "map", "show", "pinned", pinned["prog"])
    assert status == 255 and err == "" and json.loads(out) == {"error": f"{pinned['prog']} is a program, not a map"}
    assert out == '{"error":"%s is a program, not a map"}\n' % pinned["prog"]
    status, out, err = run("map", "show", "id", "junk", "-p")
    assert status == 255 and err == "" and out == '{\n    "error": "map id: \'junk\' is not a number"\n}\n'
    status, out, err = run("-j", "reuseport", "status", "no-such-group-here", "--pin-root", pinned["hash"] + ".none")
    assert status == 1 and err == "" and "error" in json.loads(out)
    status, out, err = run("-j", "map", "frobnicate")
    assert status == 255 and err == "" and "unknown verb" in json.loads(out)["error"]


def test_exit_codes_are_bpftools(pinned: dict[str, str]) -> None:
    ident = str(map_id(pinned["hash"]))
    cases = [
        ["map", "show", "id", ident],
        ["map", "show", "id", "4000000000"],
        ["map", "lookup", "id", ident, "key", "1", "0", "0", "0"],
        ["map", "lookup", "id", ident, "key", "9", "0", "0", "0"],
        ["-j", "map", "lookup", "id", ident, "key", "9", "0", "0", "0"],
        ["map", "delete", "id", ident, "key", "9", "0", "0", "0"],
        ["map", "show", "pinned", pinned["prog"]],
        ["map", "lookup", "id", ident, "key", "1", "0", "0"],
        ["map", "show", "id", "x"],
        ["-j", "map", "update", "id", ident, "key", "1", "0", "0", "0", "value", *["3"] * 8],
    ]
    for args in cases:
        ours, theirs = run(*args), bpftool_run(*args)
        assert ours[0] == theirs[0], (args, ours, theirs)
        if args[0] == "-j" and ours[0] in (0, 254):
            assert ours[1] == theirs[1], (args, ours, theirs)  # `null` for a missing key and for a done update


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["map", "lookup", "pinned", "/sys/fs/bpf/definitely-not-here", "key", "1"], "No such file"),
        (["map", "create", "/sys/fs/bpf/x", "type", "bogus"], "unknown map type"),
        (["map", "create", "/sys/fs/bpf/x", "type", "sockmap", "key", "8", "value", "8", "entries", "1"], "MapSpec.key_size"),
        (["map", "show", "id", "abc"], "not a number"),
        (["map", "show", "name", "no_such_map_here"], "no map named"),
        (["map", "dump", "sideways", "1"], "expected 'id', 'pinned' or 'name'"),
        (["map", "show", "--frobnicate"], "unrecognized option '--frobnicate'"),
        (["frobnicate"], "unknown object 'frobnicate'"),
        (["map", "lookup", "name", "no_such_map_here", "key", "999"], "no map named"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(args: list[str], words: str) -> None:
    out = pybpf(*args, check=False)
    assert out.returncode == 255 and out.stdout == ""
    assert words in out.stderr and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr


def test_missing_key_is_a_clear_error(pin_dir: Path) -> None:
    path = str(pin_dir / "m")
    pybpf("map", "create", path, "type", "array", "key", "4", "value", "4", "entries", "2")
    out = pybpf("map", "lookup", "pinned", path, "key", "9", "0", "0", "0", check=False)
    assert out.returncode == 254 and "key 09 00 00 00: not found" in out.stderr and "b'" not in out.stderr
    pybpf("map", "create", path + "h", "type", "hash", "key", "4", "value", "4", "entries", "2")
    status, _, err = run("map", "delete", "pinned", path + "h", "key", "hex", "0a", "0", "0", "0")
    assert status == 254 and "key 0a 00 00 00: not found" in err
    short = pybpf("map", "lookup", "pinned", path, "key", "9", check=False)
    assert "expected 4 bytes of key" in short.stderr
    assert "'256' is not a byte" in run("map", "lookup", "pinned", path, "key", "256", "0", "0", "0")[2]


# ---- bpftool's shapes, byte for byte --------------------------------------------------------

def test_show_and_dump_match_bpftool_byte_for_byte(pinned: dict[str, str]) -> None:
    for name in ("hash", "btf", "pcpu", "pcpu_btf", "wide", "frozen"):
        for verb in ("show", "dump"):
            for options in ([], ["-j"], ["-p"]):
                args = [*options, "map", verb, "pinned", pinned[name]]
                status, out, err = run(*args)
                assert status == 0 and err == "", (args, err)
                assert out == bpftool(*args), args
    text = run("map", "show", "pinned", pinned["btf"])[1]
    assert "\tbtf_id " in text and "\tbtf_id " in run("map", "show", "pinned", pinned["frozen"])[1]
    assert "  frozen\n" in run("map", "show", "pinned", pinned["frozen"])[1]


def test_percpu_formatted_is_bpftools_shape(pinned: dict[str, str]) -> None:
    dumped = json.loads(run("-j", "map", "dump", "pinned", pinned["pcpu_btf"])[1])
    formatted = dumped[0]["formatted"]
    assert formatted["key"] == 1 and formatted["values"][0] == {"cpu": 0, "value": 5}
    assert formatted["values"] == [{"cpu": cpu, "value": 5 + cpu} for cpu in range(possible_cpus())]


def test_btf_text_dump_is_bpftools_block(pinned: dict[str, str]) -> None:
    out = run("map", "dump", "pinned", pinned["btf"])[1]
    assert out.startswith('[{\n        "key": ') and out.endswith("\n]\n") and "Found" not in out
    assert out == bpftool("map", "dump", "pinned", pinned["btf"])
    looked = run("map", "lookup", "pinned", pinned["btf"], "key", "7", "0", "0", "0")[1]
    assert looked == bpftool("map", "lookup", "pinned", pinned["btf"], "key", "7", "0", "0", "0")


def test_prog_show_matches_bpftool(pinned: dict[str, str]) -> None:
    for options in ([], ["-j"]):
        args = [*options, "prog", "show", "pinned", pinned["prog"]]
        ours, theirs = run(*args)[1], bpftool(*args)
        if options:
            a, b = json.loads(ours), json.loads(theirs)
            assert abs(a.pop("loaded_at") - b.pop("loaded_at")) <= 1 and a == b
        else:
            strip = [line for line in ours.splitlines() if "loaded_at" not in line]
            assert strip == [line for line in theirs.splitlines() if "loaded_at" not in line]
            assert ours.count("\tloaded_at ") == 1


# ---- what a verb imports --------------------------------------------------------------------

def test_show_dump_and_prog_list_import_only_what_they_use(pinned: dict[str, str]) -> None:
    ident = str(map_id(pinned["hash"]))
    probe = ("import sys, io, contextlib\nfrom pybpf.cli import main\n"
             "with contextlib.redirect_stdout(io.StringIO()): status = main(sys.argv[1:])\n"
             "print(status, ' '.join(sorted(sys.modules)))")
    for args in (["map", "show", "id", ident], ["map", "dump", "id", ident], ["prog", "list"], ["map", "list"]):
        done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=60)
        status, modules = done.stdout.split(" ", 1)
        assert status == "0", done.stderr
        loaded = set(modules.split())
        heavy = {m for m in loaded if m.split(".")[0] in ("asyncio", "argparse", "json", "ssl", "dataclasses", "inspect")
                 or m.startswith(("pybpf.btf", "pybpf.apps", "pybpf.elf", "pybpf.collection", "pybpf.map"))}
        assert not heavy, (args, sorted(heavy))


# ---- the verbs, end to end ------------------------------------------------------------------

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


def test_demo_runs() -> None:
    out = pybpf("demo")
    assert "FAIL" not in out.stdout and "SOCKHASH" in out.stdout


def test_prog_and_btf_verbs(pin_dir: Path) -> None:
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
    with Map.create(type=MapType.HASH, key=ctypes.c_uint32, value=Entry, max_entries=4, name="typed_dump") as m:
        m[7] = Entry(-3, 443, b"https", (ctypes.c_uint8 * 3)(1, 2, 3))
        m[9] = Entry(5, 80, b"http", (ctypes.c_uint8 * 3)(4, 5, 6))
        ours = json.loads(pybpf("-j", "map", "dump", "id", str(m.id)).stdout)
        theirs = json.loads(bpftool("-j", "map", "dump", "id", str(m.id)))
        assert sorted(map(json.dumps, ours)) == sorted(map(json.dumps, theirs))
        assert {e["formatted"]["key"]: e["formatted"]["value"]["name"] for e in ours} == {7: "https", 9: "http"}
        looked = json.loads(pybpf("-j", "map", "lookup", "name", "typed_dump", "key", "7", "0", "0", "0").stdout)
        assert looked["formatted"]["value"] == {"hits": -3, "port": 443, "name": "https", "last": [1, 2, 3]}
        assert pybpf("map", "dump", "id", str(m.id)).stdout == bpftool("map", "dump", "id", str(m.id))


def test_dump_of_a_hostile_btf_value_is_a_clean_error(pin_dir: Path) -> None:
    """``struct { int s; struct {} a[0xffffffff]; }`` fits in 4 bytes; formatting it would never end."""
    from pybpf import MapSpec
    from pybpf.btf import Array, Builder, Int, IntEncoding, Member, Struct, load

    b = Builder()
    int_id = b.add(Int(name="int", size=4, encoding=IntEncoding.SIGNED))
    empty = b.add(Struct(name="", size=0))
    huge = b.add(Array(type=empty, index_type=int_id, nelems=0xFFFFFFFF))
    hostile = b.add(Struct(name="hostile", size=4, members=(Member(name="s", type=int_id, offset=0),
                                                             Member(name="a", type=huge, offset=32))))
    with load(b.build()) as handle, Map.create(MapSpec(type=MapType.ARRAY, key_size=4, value_size=4, max_entries=1, btf=handle,
                                                       btf_key_type_id=int_id, btf_value_type_id=hostile)) as m:
        for options in ([], ["-j"]):
            out = pybpf(*options, "map", "dump", "id", str(m.id), check=False)
            assert out.returncode == 255 and "refusing to format" in out.stdout + out.stderr
        assert json.loads(pybpf("-j", "map", "dump", "id", str(m.id), check=False).stdout)["error"].startswith("map id")
