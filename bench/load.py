"""Time to read and load a realistic object: pybpf vs ``bpftool prog loadall``, side by side.

The object is generated here (``--maps`` BTF maps of several types, a map-in-map and a program
array with static values, global data, ``--programs`` programs of seven types sharing a
subprogram) and compiled with clang-16. Each contender loads it and pins every program into a
fresh bpffs directory, which is then removed; the contenders run in turn, ``--rounds`` times,
interleaved, and the table shows medians and the ratio to bpftool. bpftool's time includes
starting its process; "pybpf, fresh interpreter" starts Python too, for the same footing.

A second table loads a CO-RE object (tests/bpf/core.c: BPF_CORE_READ of task_struct, externs)
the same way; pybpf parses the kernel's BTF once per process, so its in-process row excludes
that, and the one-time parse (with the first type lookup) has a row of its own.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from pybpf.collection import CollectionSpec

BPFFS = Path("/sys/fs/bpf")
CLANG = shutil.which("clang-16") or "clang"
BPFTOOL = shutil.which("bpftool") or "bpftool"

_MAP_KINDS = [  # (map type, value type, max_entries)
    ("HASH", "struct val", 1024),
    ("ARRAY", "struct val", 64),
    ("LRU_HASH", "struct val", 256),
    ("PERCPU_ARRAY", "struct val", 16),
    ("PERCPU_HASH", "struct val", 128),
]
_PROGRAM_KINDS = [  # (section, context type, return value) - sections libbpf 1.1 knows too
    ("xdp", "struct xdp_md", "XDP_PASS"),
    ("tc", "struct __sk_buff", "0"),
    ("socket", "struct __sk_buff", "0"),
    ("cgroup/skb", "struct __sk_buff", "1"),
    ("sk_skb/stream_parser", "struct __sk_buff", "ctx->len"),
    ("sk_msg", "struct sk_msg_md", "SK_PASS"),
    ("sockops", "struct bpf_sock_ops", "1"),
]


def source(maps: int, programs: int) -> str:
    """C for an object with ``maps`` data maps (plus three special ones) and ``programs`` programs."""
    out = [
        "#include <linux/bpf.h>",
        "#include <bpf/bpf_helpers.h>",
        "struct val { __u64 packets; __u64 bytes; __u32 flags; };",
        "__u64 base = 1;",
        "const volatile __u32 step = 2;",
        "__u64 hits;",
    ]
    for i in range(maps):
        kind, value, entries = _MAP_KINDS[i % len(_MAP_KINDS)]
        out.append(
            f"struct {{ __uint(type, BPF_MAP_TYPE_{kind}); __type(key, __u32); __type(value, {value}); "
            f"__uint(max_entries, {entries}); }} map_{i} SEC(\".maps\");"
        )
    out += [
        "struct inner { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 4); __type(key, __u32); __type(value, __u64); };",
        "struct inner inner_0 SEC(\".maps\");",
        "struct { __uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS); __uint(max_entries, 4); __type(key, __u32);",
        "  __array(values, struct inner); } outer SEC(\".maps\") = { .values = { [0] = &inner_0 } };",
        "int prog_0(struct xdp_md *ctx);",
        "struct { __uint(type, BPF_MAP_TYPE_PROG_ARRAY); __uint(max_entries, 4); __uint(key_size, 4);",
        "  __array(values, int (void *)); } jumps SEC(\".maps\") = { .values = { [1] = (void *)&prog_0 } };",
        "static __noinline int bump(void *map, __u32 key)",
        "{",
        "\tstruct val *v = bpf_map_lookup_elem(map, &key);",
        "\tif (!v)",
        "\t\treturn 0;",
        "\tv->packets += base;",
        "\tv->bytes += step;",
        "\treturn 1;",
        "}",
    ]
    for j in range(programs):
        section, context, result = _PROGRAM_KINDS[j % len(_PROGRAM_KINDS)]
        out += [
            f"SEC(\"{section}\")",
            f"int prog_{j}({context} *ctx)",
            "{",
            f"\thits += bump(&map_{j % maps}, {j}) + bump(&map_{(j + 1) % maps}, {j + 1});",
            f"\treturn {result};",
            "}",
        ]
    out.append('char LICENSE[] SEC("license") = "GPL";')
    return "\n".join(out) + "\n"


def compile_object(directory: Path, maps: int, programs: int) -> Path:
    """Write the generated C into ``directory`` and compile it; the object's path."""
    src, obj = directory / "bench.bpf.c", directory / "bench.bpf.o"
    src.write_text(source(maps, programs))
    include = f"-I/usr/include/{subprocess.check_output(['uname', '-m'], text=True).strip()}-linux-gnu"
    subprocess.run([CLANG, "-g", "-O2", "-target", "bpf", include, "-c", str(src), "-o", str(obj)], check=True)
    return obj


def _fresh_dir() -> Path:
    return BPFFS / f"pybpf-bench-{uuid.uuid4().hex[:8]}"


def run_pybpf(obj: Path) -> None:
    """Read and load ``obj`` with pybpf, pin every program, then unpin and close it all."""
    pins = _fresh_dir()
    pins.mkdir()
    try:
        with CollectionSpec.from_file(obj).load() as loaded:
            for name, program in loaded.programs.items():
                program.pin(pins / name)
    finally:
        shutil.rmtree(pins)


def run_pybpf_fresh(obj: Path) -> None:
    """``run_pybpf`` in a new Python process (interpreter start and imports included)."""
    code = "import sys; from bench.load import run_pybpf; from pathlib import Path; run_pybpf(Path(sys.argv[1]))"
    subprocess.run([sys.executable, "-c", code, str(obj)], check=True, cwd=Path(__file__).resolve().parent.parent)


def run_bpftool(obj: Path) -> None:
    """``bpftool prog loadall`` into a fresh bpffs directory, then remove it."""
    pins = _fresh_dir()
    try:
        subprocess.run([BPFTOOL, "prog", "loadall", str(obj), str(pins)], check=True, capture_output=True)
    finally:
        shutil.rmtree(pins, ignore_errors=True)


def read_only(obj: Path) -> None:
    """Only read ``obj`` into a ``CollectionSpec`` (no syscalls)."""
    CollectionSpec.from_file(obj)


def vmlinux_once(obj: Path) -> None:
    """The once-per-process part of a CO-RE load: parse vmlinux's BTF, find a type in it."""
    import importlib

    core = importlib.import_module("pybpf.btf.core")
    importlib.import_module("pybpf.btf.parse").vmlinux.cache_clear()
    core._KERNEL = None
    core.kernel_targets().candidates(core.kernel_targets().base.find("task_struct")[0])


def table(obj: Path, contenders: list[tuple[str, Callable[[Path], None]]], rounds: int) -> None:
    """Time ``contenders`` on ``obj`` interleaved; print medians and the ratio to the first."""
    for _, run in contenders:
        run(obj)  # warm up: page cache, imports, the kernel's BTF
    times: dict[str, list[float]] = {name: [] for name, _ in contenders}
    for _ in range(rounds):
        for name, run in contenders:
            start = time.perf_counter()
            run(obj)
            times[name].append(time.perf_counter() - start)
    baseline = statistics.median(times[contenders[0][0]])
    print(f"{'contender':32} {'median ms':>10} {'min ms':>8} {'vs bpftool':>11}")
    for name, _ in contenders:
        median = statistics.median(times[name])
        print(f"{name:32} {median * 1e3:10.1f} {min(times[name]) * 1e3:8.1f} {median / baseline:10.2f}x")


def main() -> None:
    """Generate, compile, time every contender interleaved, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", type=int, default=40, help="plain BTF maps in the object (default 40)")
    parser.add_argument("--programs", type=int, default=40, help="programs in the object (default 40)")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds per contender (default 9)")
    args = parser.parse_args()
    contenders: list[tuple[str, Callable[[Path], None]]] = [
        ("bpftool prog loadall", run_bpftool),
        ("pybpf load + pin", run_pybpf),
        ("pybpf, fresh interpreter", run_pybpf_fresh),
        ("pybpf read only (no syscalls)", read_only),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        obj = compile_object(Path(tmp), args.maps, args.programs)
        spec = CollectionSpec.from_file(obj)
        print(f"object: {len(spec.maps)} maps, {len(spec.programs)} programs, {obj.stat().st_size} bytes; {args.rounds} rounds")
        table(obj, contenders, args.rounds)
        core = Path(tmp) / "core.bpf.o"
        include = f"-I/usr/include/{subprocess.check_output(['uname', '-m'], text=True).strip()}-linux-gnu"
        source_c = Path(__file__).resolve().parent.parent / "tests" / "bpf" / "core.c"
        subprocess.run([CLANG, "-g", "-O2", "-target", "bpf", include, "-c", str(source_c), "-o", str(core)], check=True)
        relos = sum(len(p.core_relos) for p in CollectionSpec.from_file(core).programs.values())
        print(f"\nCO-RE object (tests/bpf/core.c): {relos} CO-RE relocations, externs; {args.rounds} rounds")
        table(core, [*contenders[:3], ("pybpf vmlinux BTF, once/process", vmlinux_once)], args.rounds)


if __name__ == "__main__":
    main()
