"""Events into user space, side by side in one run: pybpf's RingBuffer (``consume`` and ``poll``)
and PerfBuffer (default one wake-up per record, and batched with ``wakeup_events``) against a
minimal pure-Python mmap+epoll ring reader, a C consumer on libbpf (``ring_buffer__poll``,
``perf_buffer__poll``; bench/c/events_consumer.c, built here with gcc) and bcc's Python readers
(python3-bpfcc, when it can compile here).

Producer: a tc program run by ``BPF_PROG_TEST_RUN`` in batches of ``repeat`` from this process,
paced to an offered rate. Each consumer runs in its own process (its CPU time alone is measured,
from ready to drained) and calls a no-op handler per record. Rounds interleave the contenders;
the table shows medians:

* CPU s per million events delivered, events delivered per second and records lost, for 64 B and
  1 KiB records, at an offered rate (1M/s for ring buffers, 200k/s for perf buffers);
* RingBuffer ``consume``'s highest sustained rate (offered rates doubling until records are lost);
* wake-up latency, event to Python (p50/p99): one record every 2 ms, stamped with
  ``bpf_ktime_get_ns`` and compared with ``CLOCK_MONOTONIC`` on receipt.

A ring buffer wakes its reader only once the reader has caught up (records committed meanwhile ride
on the same wake-up), so batching is natural there; a perf buffer wakes per record by default.
"""

from __future__ import annotations

import argparse
import ctypes
import mmap
import os
import resource
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import pybpf  # noqa: E402
from pybpf import Map, MapType, PerfBuffer, Program, ProgramSpec, ProgramType, RingBuffer  # noqa: E402
from pybpf.asm import DW, FP, R0, R1, R2, R3, R4, R5, R6, R7, Assembler, Helper  # noqa: E402

RING_SIZE = 1 << 20
PERF_PAGES = 8
BCC_HEADERS = "/usr/src/linux-headers-6.1*"
"""Debian's kernel headers for bcc (BCC_KERNEL_SOURCE): its -common and -amd64 halves are merged
into one symlink tree, since this kernel ships no headers (no /lib/modules, no CONFIG_IKHEADERS)."""


# ---- producers ----------------------------------------------------------------------------------


def ring_producer(ring: Any, size: int) -> Program:
    """Reserve ``size`` bytes, copy the packet there, stamp bytes 0..8 with ktime, submit."""
    a = Assembler()
    a.mov64(R6, R1)
    a.ld_map_fd(R1, ring).mov64(R2, size).mov64(R3, 0).call(Helper.ringbuf_reserve)
    a.jeq(R0, 0, "out").mov64(R7, R0)
    a.mov64(R1, R6).mov64(R2, 0).mov64(R3, R7).mov64(R4, size).call(Helper.skb_load_bytes)
    a.call(Helper.ktime_get_ns).stx(DW, R7, R0, 0)
    a.mov64(R1, R7).mov64(R2, 0).call(Helper.ringbuf_submit)
    a.label("out").mov64(R0, 0).exit()
    return Program.load(ProgramSpec(ProgramType.SCHED_CLS, a, name="bench_ring"))


def perf_producer(events: Any, size: int) -> Program:
    """``bpf_perf_event_output``: ktime (8 bytes from the stack) then ``size - 8`` packet bytes."""
    a = Assembler()
    a.mov64(R6, R1)
    a.call(Helper.ktime_get_ns).stx(DW, FP, R0, -8)
    a.mov64(R1, R6).ld_map_fd(R2, events).ld_imm64(R3, (size - 8) << 32 | 0xFFFFFFFF)
    a.mov64(R4, FP).add64(R4, -8).mov64(R5, 8).call(Helper.perf_event_output)
    a.mov64(R0, 0).exit()
    return Program.load(ProgramSpec(ProgramType.SCHED_CLS, a, name="bench_perf"))


def produce(prog: Program, size: int, total: int, rate: float | None, batch: int = 1000) -> float:
    """Run ``prog`` ``total`` times at ``rate`` runs/s (None: as fast as possible); seconds taken."""
    data = bytes(max(size, 16))
    start = time.monotonic()
    sent = 0
    while sent < total:
        n = min(batch, total - sent)
        prog.test_run(data, repeat=n)
        sent += n
        if rate:
            ahead = start + sent / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
    return time.monotonic() - start


# ---- consumers (each in its own process) ------------------------------------------------------------


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


_stop = False


def _on_stop(*_: object) -> None:
    global _stop
    _stop = True


def _stamp(view: Any) -> int:
    return int.from_bytes(view[:8], "little")


class MinimalRing:
    """The Python limit: a ring reader with nothing but mmap, epoll and a loop."""

    def __init__(self, fd: int, size: int) -> None:
        page = mmap.PAGESIZE
        self.cons_map = mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.prod_map = mmap.mmap(fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self.cons = memoryview(self.cons_map).cast("Q")
        self.prod = memoryview(self.prod_map)[:8].cast("Q")
        self.data = memoryview(self.prod_map)[page:]
        self.lens = self.data.cast("I")
        self.mask = size - 1
        self.epoll = select.epoll()
        self.epoll.register(fd, select.EPOLLIN)

    def poll(self, timeout: float, handle: Callable[[Any], object]) -> int:
        n = self.drain(handle)
        if n == 0:
            self.epoll.poll(timeout)
            n = self.drain(handle)
        return n

    def drain(self, handle: Callable[[Any], object]) -> int:
        cons, prod, data, lens, mask = self.cons[0], self.prod[0], self.data, self.lens, self.mask
        n = 0
        while cons < prod:
            off = cons & mask
            length = lens[off >> 2]
            if length & 0x80000000:
                break
            cons += ((length & 0x3FFFFFFF) + 15) & ~7
            if not length & 0x40000000:
                handle(data[off + 8: off + 8 + length])
                n += 1
        self.cons[0] = cons
        return n


def consumer(kind: str, pin: str, latency: bool) -> None:
    """Run one consumer until SIGUSR1; print ``count cpu lost [latencies...]``."""
    signal.signal(signal.SIGUSR1, _on_stop)
    lat: list[int] = []
    now = time.monotonic_ns
    handle: Callable[[Any], object] = (lambda v: lat.append(now() - _stamp(v))) if latency else (lambda v: None)
    lost = 0
    if kind.startswith("bcc-"):
        return bcc_consumer(kind, pin, latency)
    m = Map.from_pin(pin)
    count = 0
    if kind == "minimal":
        reader: Any = MinimalRing(m.fd, m.max_entries)
        step: Callable[[], int] = lambda: reader.poll(0.1, handle)
        drain: Callable[[], int] = lambda: reader.drain(handle)
    elif kind == "pybpf-consume":
        reader = RingBuffer(m)
        step = lambda: reader.consume(handle, 0.1)
        drain = lambda: reader.consume(handle)
    elif kind == "pybpf-poll":
        reader = RingBuffer(m)

        def step() -> int:
            records = reader.poll(0.1)
            for r in records:
                handle(r)
            return len(records)
        drain = lambda: len([handle(r) for r in reader.poll(0)])
    elif kind.startswith("pybpf-perf"):
        reader = PerfBuffer(m, PERF_PAGES, wakeup_events=32 if kind == "pybpf-perf-batched" else 1)
        step = lambda: reader.consume(handle, 0.1)
        drain = lambda: reader.consume(handle)
    else:
        raise SystemExit(f"unknown consumer {kind}")
    start = _cpu()
    print("ready", flush=True)
    while not _stop:
        count += step()
    count += drain()
    lost = getattr(reader, "lost", 0)
    print(count, f"{_cpu() - start:.6f}", lost, *lat[:100000], flush=True)


BCC_RING = r"""
BPF_RINGBUF_OUTPUT(events, %(pages)d);
int produce(struct __sk_buff *skb) {
    void *p = events.ringbuf_reserve(%(size)d);
    if (!p)
        return 0;
    bpf_skb_load_bytes(skb, 0, p, %(size)d);
    u64 t = bpf_ktime_get_ns();
    __builtin_memcpy(p, &t, 8);
    events.ringbuf_submit(p, 0);
    return 0;
}
"""

BCC_PERF = r"""
BPF_PERF_OUTPUT(events);
int produce(struct __sk_buff *skb) {
    u64 t = bpf_ktime_get_ns();
    events.perf_submit_skb(skb, %(size)d - 8, &t, sizeof(t));
    return 0;
}
"""


def bcc_consumer(kind: str, pin: str, latency: bool) -> None:
    """bcc's Python readers on bcc's own program; the program is pinned at ``pin`` for the producer."""
    from bcc import BPF  # type: ignore[import-not-found]

    size = int(os.environ["BENCH_SIZE"])
    ring = kind == "bcc-ring"
    b = BPF(text=(BCC_RING if ring else BCC_PERF) % {"size": size, "pages": RING_SIZE // mmap.PAGESIZE})
    fn = b.load_func("produce", BPF.SCHED_CLS)
    Program.from_fd(fn.fd).pin(pin)
    count = 0
    lost = 0
    lat: list[int] = []
    now = time.monotonic_ns

    def on_ring(ctx: Any, data: Any, size_: Any) -> None:
        nonlocal count
        count += 1
        if latency:
            lat.append(now() - ctypes.c_uint64.from_address(data).value)

    def on_sample(cpu: Any, data: Any, size_: Any) -> None:
        nonlocal count
        count += 1
        if latency:
            lat.append(now() - ctypes.c_uint64.from_address(data).value)

    def on_lost(n: int) -> None:
        nonlocal lost
        lost += n

    if ring:
        b["events"].open_ring_buffer(on_ring)
        poll = lambda: b.ring_buffer_poll(100)
        drain = lambda: b.ring_buffer_consume()
    else:
        b["events"].open_perf_buffer(on_sample, page_cnt=PERF_PAGES, lost_cb=on_lost)
        poll = lambda: b.perf_buffer_poll(100)
        drain = lambda: b.perf_buffer_poll(0)
    start = _cpu()
    print("ready", flush=True)
    while not _stop:
        poll()
    drain()
    print(count, f"{_cpu() - start:.6f}", lost, *lat[:100000], flush=True)


# ---- one measurement -------------------------------------------------------------------------------


class Setup:
    """The pinned maps and producer programs of one record size."""

    def __init__(self, root: Path, size: int) -> None:
        self.size, self.root = size, root
        self.ring = Map.create(type=MapType.RINGBUF, max_entries=RING_SIZE, name="bench_ring")
        self.perf = Map.create(type=MapType.PERF_EVENT_ARRAY, key_size=4, value_size=4, max_entries=pybpf.possible_cpus(),
                               name="bench_perf")
        self.ring.pin(root / f"ring{size}")
        self.perf.pin(root / f"perf{size}")
        self.ring_prog, self.perf_prog = ring_producer(self.ring, size), perf_producer(self.perf, size)

    def close(self) -> None:
        for obj in (self.ring_prog, self.perf_prog, self.ring, self.perf):
            obj.close()


def run_one(kind: str, setup: Setup, total: int, rate: float | None, c_binary: Path | None, latency: bool = False) -> dict[str, Any]:
    """Start the consumer, produce, stop it; its counts, CPU and (with ``latency``) delays."""
    perf = "perf" in kind
    pin = str(setup.root / (f"perf{setup.size}" if perf else f"ring{setup.size}"))
    prog = setup.perf_prog if perf else setup.ring_prog
    env = dict(os.environ, BENCH_SIZE=str(setup.size))
    if kind.startswith("libbpf"):
        assert c_binary is not None
        command = [str(c_binary), "perf" if perf else "ring", pin] + (["latency"] if latency else [])
    else:
        if kind.startswith("bcc"):
            pin = str(setup.root / f"bcc{uuid.uuid4().hex[:8]}")
        command = [sys.executable, __file__, "--consumer", kind, "--pin", pin] + (["--latency"] if latency else [])
    child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        ready = child.stdout.readline() if child.stdout else ""
        if ready.strip() != "ready":
            child.kill()
            raise RuntimeError(f"{kind} did not start: {ready!r} {child.communicate()[1][-2000:]}")
        if kind.startswith("bcc"):
            prog = Program.from_pin(pin)
        time.sleep(0.05)
        if latency:
            data = bytes(max(setup.size, 16))
            for _ in range(total):
                prog.test_run(data)
                time.sleep(0.002)
            seconds = 0.0
        else:
            seconds = produce(prog, setup.size, total, rate)
        time.sleep(0.1)
        child.send_signal(signal.SIGUSR1)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if kind.startswith("bcc"):
            prog.close()
            Path(pin).unlink(missing_ok=True)
    fields = out.split()
    if len(fields) < 3:
        raise RuntimeError(f"{kind}: no result: {out!r} {err[-2000:]}")
    count, cpu, lost = int(fields[0]), float(fields[1]), int(fields[2])
    lat = sorted(int(x) for x in fields[3:])
    return {"count": count, "cpu": cpu, "lost": max(total - count, lost if perf else 0), "seconds": seconds, "lat": lat}


# ---- the contenders and the table ------------------------------------------------------------------


def build_c(directory: Path) -> Path | None:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None or not Path("/usr/include/bpf/libbpf.h").exists():
        print("bench: no gcc or libbpf-dev: the C consumer is left out", file=sys.stderr)
        return None
    out = directory / "events_consumer"
    subprocess.run([gcc, "-O2", "-o", str(out), str(HERE / "c" / "events_consumer.c"), "-lbpf"], check=True)
    return out


def bcc_works(build: Path) -> str | None:
    """None when bcc's Python module compiles and loads a program here; else why not."""
    try:
        env = _bcc_env(build)
    except FileNotFoundError as err:
        return str(err)
    probe = subprocess.run([sys.executable, "-c", "import bcc; bcc.BPF(text='int f(void *c) { return 0; }')"],
                           capture_output=True, text=True, timeout=120, env=env)
    if probe.returncode == 0:
        os.environ.update(env)
        return None
    last = [line for line in probe.stderr.splitlines() if line.strip()][-3:]
    return " | ".join(last) or f"exit {probe.returncode}"


def _bcc_env(build: Path) -> dict[str, str]:
    env = dict(os.environ)
    if "BCC_KERNEL_SOURCE" not in env:
        import glob

        common = sorted(glob.glob(BCC_HEADERS + "-common"))
        arch = sorted(p for p in glob.glob(BCC_HEADERS) if not p.endswith("-common"))
        if not common or not arch:
            raise FileNotFoundError(f"no kernel headers for bcc ({BCC_HEADERS}-common and -amd64: apt-get install linux-headers-6.1.0-NN-amd64)")
        tree = build / "kernel-headers"
        subprocess.run(["cp", "-rs", common[-1] + "/.", str(tree)], check=True)
        subprocess.run(["cp", "-rsf", arch[-1] + "/.", str(tree)], check=True)
        env["BCC_KERNEL_SOURCE"] = str(tree)
    extra = "/usr/lib/python3/dist-packages"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH", ""), str(HERE.parent), extra) if p)
    return env


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000, help="events per throughput run (default 1M)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", default="64,1024")
    parser.add_argument("--latency-events", type=int, default=500)
    parser.add_argument("--no-bcc", action="store_true")
    parser.add_argument("--consumer")
    parser.add_argument("--pin")
    parser.add_argument("--latency", action="store_true")
    args = parser.parse_args()
    if args.consumer:
        if args.consumer.startswith("bcc"):
            sys.path.append("/usr/lib/python3/dist-packages")
        consumer(args.consumer, args.pin, args.latency)
        return
    root = Path("/sys/fs/bpf") / f"pybpf-bench-{uuid.uuid4().hex[:12]}"
    root.mkdir()
    build = Path(tempfile.mkdtemp(prefix="pybpf-bench-"))
    try:
        c_binary = build_c(build)
        bcc_reason = "left out (--no-bcc)" if args.no_bcc else bcc_works(build)
        if bcc_reason:
            print(f"bench: bcc's Python readers are left out: {bcc_reason}", file=sys.stderr)
        report(args, root, c_binary, bcc_reason is None)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(build, ignore_errors=True)


def report(args: argparse.Namespace, root: Path, c_binary: Path | None, bcc: bool) -> None:
    ring_kinds = ["pybpf-consume", "pybpf-poll", "minimal"] + (["libbpf-ring"] if c_binary else []) + (["bcc-ring"] if bcc else [])
    perf_kinds = ["pybpf-perf", "pybpf-perf-batched"] + (["libbpf-perf"] if c_binary else []) + (["bcc-perf"] if bcc else [])
    load = os.getloadavg()
    print(f"# events into user space: {args.events} events per run, {args.rounds} rounds interleaved, medians; "
          f"kernel {os.uname().release}, {os.cpu_count()} CPUs, load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} at start")
    for size in (int(s) for s in args.sizes.split(",")):
        setup = Setup(root, size)
        try:
            results: dict[tuple[str, float], list[dict[str, Any]]] = {}
            plan = [(k, 1_000_000.0) for k in ring_kinds] + [(k, 200_000.0) for k in perf_kinds]
            for _ in range(args.rounds):
                for kind, rate in plan:
                    total = args.events if rate >= 1_000_000 else args.events // 5
                    results.setdefault((kind, rate), []).append(run_one(kind, setup, total, rate, c_binary))
            print(f"\n## {size} B records\n")
            print("| reader | offered | CPU s per million events | delivered events/s | lost | vs C |")
            print("|---|---|---|---|---|---|")
            c_cpu = {}
            for (kind, rate), runs in results.items():
                per_million = _median([r["cpu"] / max(r["count"], 1) * 1e6 for r in runs])
                if kind.startswith("libbpf"):
                    c_cpu["perf" if "perf" in kind else "ring"] = per_million
            for (kind, rate), runs in results.items():
                per_million = _median([r["cpu"] / max(r["count"], 1) * 1e6 for r in runs])
                delivered = _median([r["count"] / max(r["seconds"], 1e-9) for r in runs])
                lost = _median([r["lost"] for r in runs])
                base = c_cpu.get("perf" if "perf" in kind else "ring")
                ratio = f"{per_million / base:.1f}x" if base else "-"
                print(f"| {kind} | {rate / 1000:.0f}k/s | {per_million:.2f} | {delivered / 1000:.0f}k | {lost:.0f} | {ratio} |")
            if size == 64:
                sustained(setup, args, c_binary)
                latencies(setup, args, c_binary, bcc)
        finally:
            setup.close()


def sustained(setup: Setup, args: argparse.Namespace, c_binary: Path | None) -> None:
    print("\n### RingBuffer consume: offered rate -> delivered, lost (64 B, median of rounds)\n")
    print("| offered | delivered events/s | lost | CPU s per million |")
    print("|---|---|---|---|")
    for rate in (1e6, 2e6, 4e6, None):
        runs = [run_one("pybpf-consume", setup, args.events, rate, c_binary) for _ in range(args.rounds)]
        delivered = _median([r["count"] / max(r["seconds"], 1e-9) for r in runs])
        print(f"| {'max' if rate is None else f'{rate / 1e6:.0f}M/s'} | {delivered / 1000:.0f}k | {_median([r['lost'] for r in runs]):.0f} | "
              f"{_median([r['cpu'] / max(r['count'], 1) * 1e6 for r in runs]):.2f} |")


def latencies(setup: Setup, args: argparse.Namespace, c_binary: Path | None, bcc: bool) -> None:
    print(f"\n### Wake-up latency, event to reader ({args.latency_events} records, one every 2 ms)\n")
    print("| reader | p50 µs | p99 µs |")
    print("|---|---|---|")
    kinds = ["pybpf-consume", "minimal", "pybpf-perf"] + (["libbpf-ring", "libbpf-perf"] if c_binary else []) + \
        (["bcc-ring", "bcc-perf"] if bcc else [])
    for kind in kinds:
        lat = run_one(kind, setup, args.latency_events, None, c_binary, latency=True)["lat"]
        if lat:
            p50, p99 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]
            print(f"| {kind} | {p50 / 1000:.0f} | {p99 / 1000:.0f} |")


if __name__ == "__main__":
    main()
