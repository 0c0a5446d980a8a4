"""ns/op of map operations: pybpf vs a minimal raw-ctypes loop, side by side in one run.

HASH map, u32 key -> u64 value, ``--entries`` elements (100k by default). Each contender runs
in turn, ``--rounds`` times, interleaved; the table shows medians and the ratio to the raw loop
(the Python limit: prebuilt buffers, one ``struct`` pack and one syscall per element).
Also: ``items()`` (batch) vs ``get_next_key`` + lookup, and mmap'ed ARRAY element access.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import struct
import time
from collections.abc import Callable

import pybpf
from pybpf import Map, MapFlags, MapType
from pybpf._sys.attrs import MapBatchAttr, MapElemAttr
from pybpf._sys.syscall import NR_BPF, raw


class Raw:
    """The baseline: what a hand-written ctypes loop does, with nothing in between."""

    def __init__(self, fd: int, n: int) -> None:
        self.n = n
        self.key = bytearray(4)
        self.value = bytearray(8)
        self._k = (ctypes.c_char * 4).from_buffer(self.key)
        self._v = (ctypes.c_char * 8).from_buffer(self.value)
        self.attr = MapElemAttr(map_fd=fd, key=ctypes.addressof(self._k), value=ctypes.addressof(self._v))
        self.del_attr = MapElemAttr(map_fd=fd, key=ctypes.addressof(self._k))
        self.next_attr = MapElemAttr(map_fd=fd, key=ctypes.addressof(self._k), value=ctypes.addressof(self._v))
        self.fd = fd

    def update(self) -> None:
        pack, key, value, ref = struct.Struct("=I").pack_into, self.key, self.value, ctypes.byref(self.attr)
        pack_v = struct.Struct("=Q").pack_into
        for i in range(self.n):
            pack(key, 0, i)
            pack_v(value, 0, i)
            if raw(NR_BPF, 2, ref, 32) < 0:
                raise OSError(ctypes.get_errno(), "update")

    def lookup(self) -> None:
        pack, key, ref = struct.Struct("=I").pack_into, self.key, ctypes.byref(self.attr)
        unpack, value = struct.Struct("=Q").unpack_from, self.value
        for i in range(self.n):
            pack(key, 0, i)
            if raw(NR_BPF, 1, ref, 32) < 0:
                raise OSError(ctypes.get_errno(), "lookup")
            unpack(value)[0]

    def delete(self) -> None:
        pack, key, ref = struct.Struct("=I").pack_into, self.key, ctypes.byref(self.del_attr)
        for i in range(self.n):
            pack(key, 0, i)
            if raw(NR_BPF, 3, ref, 32) < 0:
                raise OSError(ctypes.get_errno(), "delete")

    def batch_update(self) -> None:
        keys = struct.pack(f"={self.n}I", *range(self.n))
        values = struct.pack(f"={self.n}Q", *range(self.n))
        kb, vb = ctypes.create_string_buffer(keys, len(keys)), ctypes.create_string_buffer(values, len(values))
        attr = MapBatchAttr(keys=ctypes.addressof(kb), values=ctypes.addressof(vb), count=self.n, map_fd=self.fd)
        if raw(NR_BPF, 26, ctypes.byref(attr), ctypes.sizeof(attr)) < 0:
            raise OSError(ctypes.get_errno(), "update_batch")

    def batch_lookup(self) -> None:
        chunk = 4096
        kb, vb = ctypes.create_string_buffer(4 * chunk), ctypes.create_string_buffer(8 * chunk)
        tok_in, tok_out = ctypes.create_string_buffer(8), ctypes.create_string_buffer(8)
        first, got_total = True, 0
        while True:
            attr = MapBatchAttr(in_batch=0 if first else ctypes.addressof(tok_in), out_batch=ctypes.addressof(tok_out),
                                keys=ctypes.addressof(kb), values=ctypes.addressof(vb), count=chunk, map_fd=self.fd)
            ret = raw(NR_BPF, 24, ctypes.byref(attr), ctypes.sizeof(attr))
            got = attr.count
            keys = struct.unpack_from(f"={got}I", kb)
            values = struct.unpack_from(f"={got}Q", vb)
            got_total += len(list(zip(keys, values)))
            if ret < 0:
                break
            ctypes.memmove(tok_in, tok_out, 8)
            first = False
        assert got_total == self.n, got_total

    def next_key_iterate(self) -> None:
        """Iterate with get_next_key + lookup: what ``items()`` must beat."""
        first = MapElemAttr(map_fd=self.fd, key=0, value=ctypes.addressof(self._k))
        nxt_key = bytearray(4)
        nk = (ctypes.c_char * 4).from_buffer(nxt_key)
        walk = MapElemAttr(map_fd=self.fd, key=ctypes.addressof(self._k), value=ctypes.addressof(nk))
        look = ctypes.byref(self.attr)
        unpack_k, unpack_v = struct.Struct("=I").unpack_from, struct.Struct("=Q").unpack_from
        count = 0
        ret = raw(NR_BPF, 4, ctypes.byref(first), 32)
        while ret == 0:
            raw(NR_BPF, 1, look, 32)
            (unpack_k(self.key)[0], unpack_v(self.value)[0])
            count += 1
            ret = raw(NR_BPF, 4, ctypes.byref(walk), 32)
            self.key[:] = nxt_key
        assert count == self.n, count


def run(entries: int, rounds: int) -> list[tuple[str, float, float]]:
    m = Map.create(type=MapType.HASH, key=ctypes.c_uint32, value=ctypes.c_uint64, max_entries=entries)
    base = Raw(m.fd, entries)

    def py_update() -> None:
        update = m.update
        for i in range(entries):
            update(i, i)

    def py_lookup() -> None:
        lookup = m.lookup
        for i in range(entries):
            lookup(i)

    def py_delete() -> None:
        delete = m.delete
        for i in range(entries):
            delete(i)

    def py_batch_update() -> None:
        m.update_batch(range(entries), range(entries))

    def py_items() -> None:
        assert sum(1 for _ in m.items()) == entries

    def py_items_by_next_key() -> None:
        assert sum(1 for _ in ((k, m.lookup(k)) for k in m._iter_key_bytes())) == entries

    # (name, pybpf, raw, needs a full map before, empties the map)
    cases: list[tuple[str, Callable[[], None], Callable[[], None], bool]] = [
        ("update", py_update, base.update, False),
        ("lookup", py_lookup, base.lookup, True),
        ("delete", py_delete, base.delete, True),
        ("batch update", py_batch_update, base.batch_update, False),
        ("batch lookup / items()", py_items, base.batch_lookup, True),
    ]
    timings: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name, *_ in cases}
    for _ in range(rounds):
        for name, ours, theirs, needs_full in cases:
            for which, fn in ((0, ours), (1, theirs)) if _ % 2 == 0 else ((1, theirs), (0, ours)):
                if needs_full:
                    base.batch_update()
                else:
                    m.clear()
                t0 = time.perf_counter_ns()
                fn()
                timings[name][which].append((time.perf_counter_ns() - t0) / entries)
    rows = [(name, statistics.median(a), statistics.median(b)) for name, (a, b) in timings.items()]

    base.batch_update()
    items_t, walk_t = [], []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        py_items()
        items_t.append((time.perf_counter_ns() - t0) / entries)
        t0 = time.perf_counter_ns()
        py_items_by_next_key()
        walk_t.append((time.perf_counter_ns() - t0) / entries)
    rows.append(("items() vs next_key+lookup", statistics.median(items_t), statistics.median(walk_t)))
    m.close()

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
    rows.append(("mmap ARRAY read (loop incl.)", statistics.median(reads), float("nan")))
    rows.append(("mmap ARRAY write (loop incl.)", statistics.median(writes), float("nan")))
    rows.append(_typed_row(entries, rounds))
    return rows


class _Pair(ctypes.Structure):
    _fields_ = [("packets", ctypes.c_uint64), ("bytes", ctypes.c_uint64)]


def _typed_row(entries: int, rounds: int) -> tuple[str, float, float]:
    """Lookup of a struct value typed from the map's BTF (no declaration) vs declared as ctypes."""
    with Map.create(type=MapType.HASH, key=ctypes.c_uint32, value=_Pair, max_entries=entries) as made:
        made.update_batch(range(entries), [_Pair(i, i) for i in range(entries)])
        with Map.from_id(made.id) as typed, Map.from_id(made.id, key=ctypes.c_uint32, value=_Pair) as declared:
            assert type(typed[1]).__name__ == "_Pair" and typed[1].bytes == 1
            times: tuple[list[float], list[float]] = ([], [])
            for _ in range(rounds):
                for which, m in enumerate((typed, declared)):
                    lookup = m.lookup
                    t0 = time.perf_counter_ns()
                    for i in range(entries):
                        lookup(i)
                    times[which].append((time.perf_counter_ns() - t0) / entries)
    return ("typed lookup (BTF) vs declared ctypes", statistics.median(times[0]), statistics.median(times[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    rows = run(args.entries, args.rounds)
    print(f"pybpf {pybpf.__version__}: HASH u32->u64, {args.entries} entries, median of {args.rounds} interleaved rounds")
    print(f"{'operation':32} {'pybpf ns/op':>12} {'raw ns/op':>10} {'ratio':>7}")
    for name, ours, theirs in rows:
        ratio = ours / theirs if theirs == theirs else float("nan")
        theirs_text = f"{theirs:10.0f}" if theirs == theirs else f"{'-':>10}"
        ratio_text = f"{ratio:6.2f}x" if ratio == ratio else f"{'-':>7}"
        print(f"{name:32} {ours:12.0f} {theirs_text} {ratio_text}")


if __name__ == "__main__":
    main()
