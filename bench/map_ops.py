"""ns/op of map operations: pybpf vs the leanest raw-ctypes loop (and pylibbpf when installed),
side by side in one run, interleaved, pinned to one CPU.

HASH map, u32 key -> u64 value, ``--entries`` elements (100k by default). The raw loop is the
Python limit: prebuilt ctypes key and value objects set with ``.value``, one prebuilt attr, the
untyped libc ``syscall``, nothing else. Each contender runs in turn, ``--rounds`` times; the table
shows medians and the ratio to the raw loop. The "layers" rows price what pybpf adds between
``m[k] = v`` and the syscall. Also: ``items()`` (batch) vs ``get_next_key`` + lookup, a lookup typed
from BTF vs a declared ctypes type, and mmap'ed ARRAY element access.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import platform
import shutil
import statistics
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pybpf
from pybpf import Map, MapFlags, MapType

_NR_BPF = {"x86_64": 321, "aarch64": 280}[platform.machine()]
_LOOKUP, _UPDATE, _DELETE, _NEXT, _LOOKUP_BATCH, _UPDATE_BATCH = 1, 2, 3, 4, 24, 26
_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall


class _Elem(ctypes.Structure):
    """``union bpf_attr`` for element commands (written here: the baseline uses nothing of pybpf)."""

    _fields_ = [("map_fd", ctypes.c_uint32), ("key", ctypes.c_uint64), ("value", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


class _Batch(ctypes.Structure):
    _fields_ = [("in_batch", ctypes.c_uint64), ("out_batch", ctypes.c_uint64), ("keys", ctypes.c_uint64),
                ("values", ctypes.c_uint64), ("count", ctypes.c_uint32), ("map_fd", ctypes.c_uint32),
                ("elem_flags", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


class Raw:
    """The baseline: what the leanest hand-written ctypes loop does, with nothing in between."""

    def __init__(self, fd: int, n: int) -> None:
        self.n, self.fd = n, fd
        self.key, self.value = ctypes.c_uint32(), ctypes.c_uint64()
        self.attr = _Elem(fd, ctypes.addressof(self.key), ctypes.addressof(self.value))
        self.del_attr = _Elem(fd, ctypes.addressof(self.key))

    def update(self) -> None:
        key, value, ref, syscall = self.key, self.value, ctypes.byref(self.attr), _syscall
        for i in range(self.n):
            key.value = i
            value.value = i
            if syscall(_NR_BPF, _UPDATE, ref, 32) < 0:
                raise OSError(ctypes.get_errno(), "update")

    def lookup(self) -> None:
        key, value, ref, syscall = self.key, self.value, ctypes.byref(self.attr), _syscall
        for i in range(self.n):
            key.value = i
            if syscall(_NR_BPF, _LOOKUP, ref, 32) < 0:
                raise OSError(ctypes.get_errno(), "lookup")
            value.value  # noqa: B018 - the read is the point

    def delete(self) -> None:
        key, ref, syscall = self.key, ctypes.byref(self.del_attr), _syscall
        for i in range(self.n):
            key.value = i
            if syscall(_NR_BPF, _DELETE, ref, 32) < 0:
                raise OSError(ctypes.get_errno(), "delete")

    def update_in_a_call(self) -> None:
        """The raw update wrapped in one Python function call per element: the price of a call."""
        key, value, ref, syscall = self.key, self.value, ctypes.byref(self.attr), _syscall

        def update(k: int, v: int) -> None:
            key.value = k
            value.value = v
            if syscall(_NR_BPF, _UPDATE, ref, 32) < 0:
                raise OSError(ctypes.get_errno(), "update")

        for i in range(self.n):
            update(i, i)

    def batch_update(self) -> None:
        keys = struct.pack(f"={self.n}I", *range(self.n))
        values = struct.pack(f"={self.n}Q", *range(self.n))
        kb, vb = ctypes.create_string_buffer(keys, len(keys)), ctypes.create_string_buffer(values, len(values))
        attr = _Batch(keys=ctypes.addressof(kb), values=ctypes.addressof(vb), count=self.n, map_fd=self.fd)
        if _syscall(_NR_BPF, _UPDATE_BATCH, ctypes.byref(attr), ctypes.sizeof(attr)) < 0:
            raise OSError(ctypes.get_errno(), "update_batch")

    def batch_lookup(self) -> None:
        chunk = 4096
        kb, vb = ctypes.create_string_buffer(4 * chunk), ctypes.create_string_buffer(8 * chunk)
        tok_in, tok_out = ctypes.create_string_buffer(8), ctypes.create_string_buffer(8)
        first, got_total = True, 0
        while True:
            attr = _Batch(in_batch=0 if first else ctypes.addressof(tok_in), out_batch=ctypes.addressof(tok_out),
                          keys=ctypes.addressof(kb), values=ctypes.addressof(vb), count=chunk, map_fd=self.fd)
            ret = _syscall(_NR_BPF, _LOOKUP_BATCH, ctypes.byref(attr), ctypes.sizeof(attr))
            got = attr.count
            got_total += len(list(zip(struct.unpack_from(f"={got}I", kb), struct.unpack_from(f"={got}Q", vb))))
            if ret < 0:
                break
            ctypes.memmove(tok_in, tok_out, 8)
            first = False
        assert got_total == self.n, got_total

    def next_key_iterate(self) -> None:
        """Iterate with get_next_key + lookup: what ``items()`` must beat."""
        nxt = ctypes.c_uint32()
        first = _Elem(self.fd, 0, ctypes.addressof(self.key))
        walk = _Elem(self.fd, ctypes.addressof(self.key), ctypes.addressof(nxt))
        look = ctypes.byref(self.attr)
        count = 0
        ret = _syscall(_NR_BPF, _NEXT, ctypes.byref(first), 32)
        while ret == 0:
            _syscall(_NR_BPF, _LOOKUP, look, 32)
            (self.key.value, self.value.value)  # noqa: B018
            count += 1
            ret = _syscall(_NR_BPF, _NEXT, ctypes.byref(walk), 32)
            self.key.value = nxt.value
        assert count == self.n, count


def _pylibbpf_map(entries: int) -> tuple[Any, Any] | str:
    """``(object, map)`` of pylibbpf over bench/c/map_ops.c, or why it cannot run here."""
    try:
        import pylibbpf
    except ImportError:
        return "pylibbpf is not installed (pip install pylibbpf)"
    clang = shutil.which("clang-16") or shutil.which("clang")
    if clang is None:
        return "clang is not installed"
    out = Path(tempfile.mkdtemp(prefix="pybpf-bench-")) / "map_ops.o"
    include = f"-I/usr/include/{platform.machine()}-linux-gnu"  # asm/types.h
    subprocess.run([clang, "-O2", "-g", "-target", "bpf", include, "-c", str(Path(__file__).parent / "c" / "map_ops.c"),
                    "-o", str(out)], check=True)
    obj = pylibbpf.BpfObject(str(out))
    obj.load()
    return obj, obj["counts"]


def _timed(fn: Callable[[], None], n: int) -> float:
    t0 = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - t0) / n


def run(entries: int, rounds: int) -> tuple[list[tuple[str, float, float, float]], str]:
    """Rows ``(name, pybpf, raw, pylibbpf)`` in ns/op (NaN where a contender has no such row)."""
    nan = float("nan")
    m = Map.create(type=MapType.HASH, key=ctypes.c_uint32, value=ctypes.c_uint64, max_entries=max(entries, 1 << 20))
    base = Raw(m.fd, entries)
    peer = _pylibbpf_map(entries)
    note = peer if isinstance(peer, str) else "pylibbpf 0.0.6 (a compiled C++ extension over libbpf)"
    lib_map = None if isinstance(peer, str) else peer[1]

    def py_update() -> None:
        update = m.update
        for i in range(entries):
            update(i, i)

    def py_subscript_update() -> None:
        for i in range(entries):
            m[i] = i

    def py_lookup() -> None:
        lookup = m.lookup
        for i in range(entries):
            lookup(i)

    def py_delete() -> None:
        delete = m.delete
        for i in range(entries):
            delete(i)

    def lib_update() -> None:
        update = lib_map.update
        for i in range(entries):
            update(i, i)

    def lib_lookup() -> None:
        lookup = lib_map.lookup
        for i in range(entries):
            lookup(i)

    def lib_delete() -> None:
        delete = lib_map.delete_elem
        for i in range(entries):
            delete(i)

    def fill() -> None:
        base.batch_update()
        if lib_map is not None:
            lib_update()

    def clear() -> None:
        m.clear()
        if lib_map is not None:
            for key in list(lib_map.keys()):
                lib_map.delete_elem(key)

    # (name, pybpf, raw, pylibbpf, needs a full map before)
    cases: list[tuple[str, Callable[[], None], Callable[[], None], Callable[[], None] | None, bool]] = [
        ("update", py_update, base.update, lib_update if lib_map is not None else None, False),
        ("lookup", py_lookup, base.lookup, lib_lookup if lib_map is not None else None, True),
        ("delete", py_delete, base.delete, lib_delete if lib_map is not None else None, True),
        ("update as m[k] = v", py_subscript_update, base.update, None, False),
        ("batch update", lambda: m.update_batch(range(entries), range(entries)), base.batch_update, None, False),
        ("batch lookup / items()", lambda: _count(m.items(), entries), base.batch_lookup, None, True),
    ]
    timings: dict[str, list[list[float]]] = {name: [[], [], []] for name, *_ in cases}
    for r in range(rounds):
        for name, ours, theirs, lib, needs_full in cases:
            contenders = [(0, ours), (1, theirs)] + ([(2, lib)] if lib is not None else [])
            for which, fn in contenders if r % 2 == 0 else contenders[::-1]:
                fill() if needs_full else clear()
                timings[name][which].append(_timed(fn, entries))
    rows = [(name, *(statistics.median(t) if t else nan for t in times)) for name, times in timings.items()]

    layers: list[list[float]] = [[], [], [], []]
    for _ in range(rounds):
        for which, fn in enumerate((base.update, base.update_in_a_call, py_update, py_subscript_update)):
            clear()
            layers[which].append(_timed(fn, entries))
    raw_t, call_t, method_t, sub_t = (statistics.median(t) for t in layers)
    rows.append(("layer: one Python call per op", call_t, raw_t, nan))
    rows.append(("layer: pybpf m.update (per-thread check)", method_t, call_t, nan))
    rows.append(("layer: pybpf m[k] = v (subscript slot)", sub_t, method_t, nan))

    fill()
    items_t, walk_t = [], []
    for _ in range(rounds):
        items_t.append(_timed(lambda: _count(m.items(), entries), entries))
        walk_t.append(_timed(base.next_key_iterate, entries))
    rows.append(("items() vs raw next_key+lookup", statistics.median(items_t), statistics.median(walk_t), nan))
    m.close()
    rows.append(_typed_row(entries, rounds))
    rows.extend(_mmap_rows(rounds))
    return rows, note


def _count(items: Any, expect: int) -> None:
    assert sum(1 for _ in items) == expect


class _Pair(ctypes.Structure):
    _fields_ = [("packets", ctypes.c_uint64), ("bytes", ctypes.c_uint64)]


def _typed_row(entries: int, rounds: int) -> tuple[str, float, float, float]:
    """Lookup of a struct value typed from the map's BTF (no declaration) vs declared as ctypes."""
    with Map.create(type=MapType.HASH, key=ctypes.c_uint32, value=_Pair, max_entries=entries) as made:
        made.update_batch(range(entries), [_Pair(i, i) for i in range(entries)])
        with Map.from_id(made.id) as typed, Map.from_id(made.id, key=ctypes.c_uint32, value=_Pair) as declared:
            assert type(typed[1]).__name__ == "_Pair" and typed[1].bytes == 1
            times: tuple[list[float], list[float]] = ([], [])
            for _ in range(rounds):
                for which, bpf_map in enumerate((typed, declared)):
                    lookup = bpf_map.lookup
                    times[which].append(_timed(lambda: [lookup(i) for i in range(entries)] and None, entries))
    return ("typed lookup (BTF) vs declared ctypes", statistics.median(times[0]), statistics.median(times[1]), float("nan"))


def _mmap_rows(rounds: int) -> list[tuple[str, float, float, float]]:
    nan = float("nan")
    with Map.create(type=MapType.ARRAY, key_size=4, value_size=8, max_entries=1024, flags=MapFlags.MMAPABLE) as arr:
        view = arr.mmap().cast("Q")
        n = 1_000_000
        reads, writes = [], []
        for _ in range(rounds):
            t0 = time.perf_counter_ns()
            for i in range(n):
                view[i & 1023]
            reads.append((time.perf_counter_ns() - t0) / n)
            t0 = time.perf_counter_ns()
            for i in range(n):
                view[i & 1023] = i
            writes.append((time.perf_counter_ns() - t0) / n)
        view.release()
    return [("mmap ARRAY read (loop incl.)", statistics.median(reads), nan, nan),
            ("mmap ARRAY write (loop incl.)", statistics.median(writes), nan, nan)]


def _cell(value: float, width: int) -> str:
    return f"{value:{width}.0f}" if value == value else f"{'-':>{width}}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--cpu", type=int, default=os.cpu_count() - 1 if os.cpu_count() else 0,
                        help="CPU to pin the benchmark to (default: the last)")
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.cpu})
    rows, note = run(args.entries, args.rounds)
    print(f"pybpf {pybpf.__version__}: HASH u32->u64, {args.entries} entries, median of {args.rounds} interleaved "
          f"rounds, CPU {args.cpu}, load {os.getloadavg()[0]:.1f}; {note}")
    print(f"{'operation':44} {'pybpf ns':>9} {'base ns':>8} {'ratio':>7} {'pylibbpf':>9} {'ratio':>7}")
    for name, ours, theirs, lib in rows:
        ratio = f"{ours / theirs:6.2f}x" if theirs == theirs else f"{'-':>7}"
        lib_ratio = f"{ours / lib:6.2f}x" if lib == lib else f"{'-':>7}"
        print(f"{name:44} {_cell(ours, 9)} {_cell(theirs, 8)} {ratio} {_cell(lib, 9)} {lib_ratio}")
    print("base: the raw loop; for 'layer' rows the row above; for 'typed' the declared type. "
          "pylibbpf ratio: pybpf / pylibbpf.")


if __name__ == "__main__":
    main()
