"""The pybpf splice proxy against a plain asyncio relay and a direct connection, on loopback.

Each path moves ``--size`` bytes (1 GiB by default) from a client process to a sink process, in
64 KiB ``sendall`` writes: ``direct`` (no relay), ``asyncio`` (a Protocol-based asyncio relay, the
fastest pure-asyncio form) and ``splice`` (``pybpf.apps.proxy.SpliceProxy``: the kernel moves the
bytes; a direction whose target falls behind leaves the sockmap for ``splice(2)``, so a bulk
transfer into a slower sink mostly runs there, its copying charged to the relay process's system
time), the splice both with its own send-buffer default and with the kernel's. Every relay runs in
its own process (``bench/_relay.py``), and so do the client and the sink (``bench/_ends.py``).

Per path: throughput; CPU seconds per GiB of the whole machine (``/proc/stat``: user + nice +
system + irq + softirq over the transfer); the same for the transfer's own tasks (client, sink,
relay and every kernel thread, from ``/proc/PID/stat``: unlike the machine's figure it does not
grow with other people's load); CPU seconds per GiB of the relay process alone (utime + stime: the
kernel's work on behalf of the splice runs in softirq and kworker context and is not charged to
it); and the round-trip time of 64-byte request/response messages through the path. A second
table says where the CPU goes, how often the relay process was woken, and the tail: the time from
the client's last write to the sink's reply, i.e. what was still queued between them.

Paths are interleaved (the order rotates every round) and repeated ``--rounds`` times; the tables
show medians and the ratios to the asyncio relay against the goals. Socket buffers are the
kernel's defaults except where a row says otherwise. ``--attach`` and ``--splice-sndbuf`` try the
splice with other attach types and send buffers.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import os
import platform
import re
import select
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from pybpf.apps.proxy import Budget, SpliceProxy

HERE = Path(__file__).resolve().parent
GIB = 1 << 30
TICK = os.sysconf("SC_CLK_TCK")
SPLICE_DEFAULT_SNDBUF: int = Budget.split(inspect.signature(SpliceProxy).parameters["max_buffered"].default).sndbuf
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
LAUNCH: list[str] = []
"""Prefix of every child's command line (``ip netns exec NS`` with ``--lo-gso``)."""


def parse_size(text: str) -> int:
    """``1G``, ``256M``, ``64KiB``, ``1000`` -> bytes (binary units)."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"size {text!r} is not a number with an optional K, M or G")
    return int(match[1]) * _UNITS[match[2].upper()]


def human(size: int) -> str:
    """Bytes in the largest binary unit that divides them."""
    for unit in ("G", "M", "K"):
        if size and size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]} {unit}iB"
    return f"{size} B"


@dataclasses.dataclass(frozen=True)
class Route:
    """One way from the client to the sink: a relay command line, or none (``direct``)."""

    name: str
    relay: tuple[str, ...] = ()
    pythonpath: str = ""


@dataclasses.dataclass
class Sample:
    """One measured transfer; CPU figures in seconds per GiB moved."""

    gbits: float
    tail_ms: float
    machine_cpu: float
    tasks_cpu: float
    kernel_threads_cpu: float
    relay_cpu: float | None
    relay_wakeups: float | None
    breakdown: dict[str, float]


class Child:
    """A helper process speaking one line per answer on stdout; closing its stdin ends it."""

    def __init__(self, name: str, argv: list[str], pythonpath: str = "") -> None:
        self.name = name
        env = {**os.environ, "PYTHONPATH": pythonpath} if pythonpath else None
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0, env=env)
        self._pending = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")

    def expect(self, word: str, timeout: float) -> list[str]:
        """The next line's words after ``word``; an error if it says anything else or is late."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name}: no answer in {timeout:g} s")
            if select.select([self.proc.stdout], [], [], left)[0]:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    raise RuntimeError(f"{self.name} exited (status {self.proc.wait(5)})")
                self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        first, *rest = line.decode().split() or [""]
        if first != word:
            raise RuntimeError(f"{self.name}: {line.decode()}")
        return rest

    def kill(self) -> None:
        """Kill it if it is still running, and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def stop_all(children: list[Child], grace: float = 5.0) -> None:
    """Close every child's stdin (which ends it), wait up to ``grace`` seconds in all, kill the rest."""
    for child in children:
        if child.proc.stdin is not None:
            with contextlib.suppress(OSError):
                child.proc.stdin.close()
    deadline = time.monotonic() + grace
    for child in children:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.proc.wait(max(0.0, deadline - time.monotonic()))
        child.kill()


def start(name: str, argv: list[str], children: list[Child], timeout: float = 30.0,
          pythonpath: str = "") -> tuple[Child, int]:
    """Start a helper that answers ``ready PORT``; it joins ``children`` at once (for cleanup).
    ``pythonpath`` runs it against another checkout of pybpf."""
    child = Child(name, [*LAUNCH, sys.executable, *argv], pythonpath)
    children.append(child)
    return child, int(child.expect("ready", timeout)[0])


def machine_cpu() -> dict[str, int]:
    """The machine's CPU time so far, in ticks, from the first line of ``/proc/stat``."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    return dict(zip(names, fields))


def busy(ticks: dict[str, int]) -> int:
    """The ticks that count as work: user + nice + system + irq + softirq."""
    return ticks["user"] + ticks["nice"] + ticks["system"] + ticks["irq"] + ticks["softirq"]


def _stat_fields(pid: int | str) -> list[str]:
    """``/proc/PID/stat`` after the command name: index 1 is the parent, 11 and 12 utime and stime."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rpartition(")")[2].split()


def process_cpu(pid: int) -> int:
    """utime + stime of a process (all its threads), in ticks."""
    fields = _stat_fields(pid)
    return int(fields[11]) + int(fields[12])


def kernel_threads_cpu() -> dict[int, int]:
    """utime + stime in ticks of every kernel thread (kworkers, ksoftirqd, ...: children of kthreadd)."""
    found: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = _stat_fields(entry.name)
        except OSError:
            continue
        if fields[1] == "2":
            found[int(entry.name)] = int(fields[11]) + int(fields[12])
    return found


def wakeups(pid: int) -> int:
    """How many times the process went to sleep and was woken (voluntary context switches)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    return 0


@dataclasses.dataclass
class Snapshot:
    """The CPU counters a transfer is measured by, taken before and after it."""

    machine: dict[str, int]
    kernel_threads: dict[int, int]
    tasks: int
    relay: int
    relay_wakeups: int

    @classmethod
    def take(cls, pids: list[int], relay: int | None) -> Snapshot:
        return cls(machine=machine_cpu(), kernel_threads=kernel_threads_cpu(),
                   tasks=sum(process_cpu(pid) for pid in pids),
                   relay=process_cpu(relay) if relay else 0, relay_wakeups=wakeups(relay) if relay else 0)


def transfer(client: Child, port: int, size: int, pids: list[int], relay: Child | None, timeout: float) -> Sample:
    """Move ``size`` bytes through ``port`` once and account for the time and the CPU.

    ``pids`` are the processes of the transfer (client, sink, relay); the kernel threads are
    added to them, as they do the splice's sending.
    """
    client.send(f"bulk {port} {size} {timeout}")
    client.expect("ready", timeout)
    relay_pid = relay.pid if relay else None
    before = Snapshot.take(pids, relay_pid)
    client.send("go")
    seconds, tail = (float(word) for word in client.expect("done", timeout))
    after = Snapshot.take(pids, relay_pid)
    ticks_per_gib = TICK * size / GIB
    machine = {key: after.machine[key] - before.machine[key] for key in after.machine}
    kernel_threads = sum(ticks - before.kernel_threads.get(pid, 0) for pid, ticks in after.kernel_threads.items())
    return Sample(gbits=size * 8 / seconds / 1e9, tail_ms=tail * 1000,
                  machine_cpu=busy(machine) / ticks_per_gib,
                  tasks_cpu=(after.tasks - before.tasks + kernel_threads) / ticks_per_gib,
                  kernel_threads_cpu=kernel_threads / ticks_per_gib,
                  relay_cpu=(after.relay - before.relay) / ticks_per_gib if relay else None,
                  relay_wakeups=(after.relay_wakeups - before.relay_wakeups) * GIB / size if relay else None,
                  breakdown={"user": (machine["user"] + machine["nice"]) / ticks_per_gib,
                             "system": machine["system"] / ticks_per_gib,
                             "softirq": (machine["softirq"] + machine["irq"]) / ticks_per_gib})


def round_trips(client: Child, port: int, count: int, timeout: float) -> tuple[float, float]:
    """(median, p99) in microseconds of ``count`` 64-byte request/response exchanges."""
    client.send(f"rtt {port} {count} 64 {timeout}")
    median, p99 = client.expect("done", timeout)
    return float(median), float(p99)


def background_load(seconds: float = 1.0) -> float:
    """How many CPUs' worth of work the machine does while we sit still."""
    before, start = busy(machine_cpu()), time.monotonic()
    time.sleep(seconds)
    return (busy(machine_cpu()) - before) / TICK / (time.monotonic() - start)


def routes(splice_sndbufs: list[int | None], attach: str, compare: list[str], variants: list[str]) -> list[Route]:
    """direct, asyncio, one splice route per send buffer size (None: the proxy's default), one per
    variant (``LABEL:NAME=INT,...``: proxy options), and the proxy's default from each other
    checkout in ``compare``."""
    found = [Route("direct"), Route("asyncio relay", ("asyncio",))]
    for sndbuf in splice_sndbufs:
        shown = SPLICE_DEFAULT_SNDBUF if sndbuf is None else sndbuf
        label = f"sndbuf {human(shown)}" if shown else "kernel sndbuf"
        if sndbuf is None:
            label += ", proxy default"
        if attach != "verdict":
            label += f", {attach}"
        options = ("--attach", attach) if sndbuf is None else ("--sndbuf", str(sndbuf), "--attach", attach)
        found.append(Route(f"splice ({label})", ("splice", *options)))
    for variant in variants:
        label, _, options_text = variant.partition(":")
        extra = tuple(arg for item in options_text.split(",") if item for arg in ("--option", item))
        found.append(Route(f"splice ({label})", ("splice", *extra)))
    for checkout in compare:
        found.append(Route(f"splice ({Path(checkout).name} checkout)", ("splice",), str(Path(checkout).resolve())))
    return found


def _median(samples: list[Sample], field: str) -> float:
    return float(statistics.median(getattr(sample, field) for sample in samples))


GOALS = (("throughput", "gbits", ">=", 0.9), ("machine CPU/GiB", "machine_cpu", "<=", 0.7),
         ("tasks' CPU/GiB", "tasks_cpu", "<=", 0.7), ("relay-process CPU/GiB", "relay_cpu", "<", 0.05),
         ("RTT median", "rtt", "<", 1.0))


def _goal(ratio: float, op: str, limit: float) -> str:
    met = ratio >= limit if op == ">=" else ratio <= limit if op == "<=" else ratio < limit
    return "met" if met else "**not met**"


def report(samples: dict[Route, list[Sample]], rtts: dict[Route, list[tuple[float, float]]], args: argparse.Namespace) -> None:
    """Print the markdown tables: results, where the CPU goes, and the ratios against the goals."""
    medians = {route: {field: _median(got, field) for field in ("gbits", "machine_cpu", "tasks_cpu", "tail_ms")}
               for route, got in samples.items()}
    for route, got in samples.items():
        medians[route]["rtt"] = statistics.median(r[0] for r in rtts[route])
        medians[route]["p99"] = statistics.median(r[1] for r in rtts[route])
        if route.relay:
            medians[route]["relay_cpu"] = _median(got, "relay_cpu")
            medians[route]["relay_wakeups"] = _median(got, "relay_wakeups")
    print(f"\n{human(args.size)} per transfer in 64 KiB writes over 127.0.0.1, medians of {args.rounds} rounds; "
          f"RTT: {args.rtt_count} x 64-byte request/response. CPU in seconds per GiB moved: the machine's "
          "(/proc/stat), the transfer's tasks' (client, sink, relay and kernel threads) and the relay process's.\n")
    print("| path | Gbit/s | CPU s/GiB, machine | CPU s/GiB, tasks | CPU s/GiB, relay process | RTT median µs | RTT p99 µs |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for route, m in medians.items():
        relay = f"{m['relay_cpu']:.3f}" if route.relay else "-"
        print(f"| {route.name} | {m['gbits']:.2f} | {m['machine_cpu']:.2f} | {m['tasks_cpu']:.2f} | {relay} "
              f"| {m['rtt']:.0f} | {m['p99']:.0f} |")

    print("\nWhere it goes (medians): the machine's CPU s/GiB by kind; the tasks' CPU s/GiB split into client + sink "
          "and kernel threads; how often the relay process was woken; the tail (from the client's last write to "
          "the sink's reply).\n")
    print("| path | user | system | softirq + irq | client + sink | kernel threads | relay wakeups/GiB | tail ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for route, got in samples.items():
        parts = [statistics.median(s.breakdown[key] for s in got) for key in ("user", "system", "softirq")]
        ends = statistics.median(s.tasks_cpu - s.kernel_threads_cpu - (s.relay_cpu or 0.0) for s in got)
        woken = f"{medians[route]['relay_wakeups']:.0f}" if route.relay else "-"
        print(f"| {route.name} | {parts[0]:.2f} | {parts[1]:.2f} | {parts[2]:.2f} | {ends:.2f} "
              f"| {_median(got, 'kernel_threads_cpu'):.2f} | {woken} | {medians[route]['tail_ms']:.0f} |")

    base = medians[next(route for route in medians if route.relay[:1] == ("asyncio",))]
    print("\nAgainst the asyncio relay (splice / asyncio; goals: throughput >= 0.9x, CPU/GiB <= 0.7x, "
          "relay-process CPU < 5%, RTT < 1x):\n")
    print("| path | " + " | ".join(name for name, *_ in GOALS) + " |")
    print("|---|" + "---:|" * len(GOALS))
    for route, m in medians.items():
        if route.relay[:1] != ("splice",):
            continue
        cells = []
        for _, field, op, limit in GOALS:
            ratio = m[field] / base[field] if base[field] else float("inf")
            shown = f"{ratio:.1%}" if field == "relay_cpu" else f"{ratio:.2f}x"
            cells.append(f"{shown} ({_goal(ratio, op, limit)})")
        print(f"| {route.name} | " + " | ".join(cells) + " |")


def machine_facts() -> str:
    """nproc, kernel, Python, TCP congestion control."""
    congestion = Path("/proc/sys/net/ipv4/tcp_congestion_control").read_text().strip()
    return (f"{os.cpu_count()} CPUs (nproc), Linux {platform.release()}, Python {platform.python_version()}, "
            f"TCP congestion control {congestion}")


@contextlib.contextmanager
def private_loopback(gso: int | None) -> Iterator[None]:
    """With ``gso``: run every child in a fresh network namespace whose loopback has that
    gso_max_size and gro_max_size (the machine's own loopback is left alone); removed afterwards."""
    if gso is None:
        yield
        return
    name = f"pybpf-ns-bench-{uuid.uuid4().hex[:12]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up", "gso_max_size", str(gso), "gro_max_size", str(gso)],
                       check=True)
        LAUNCH[:] = ["ip", "netns", "exec", name]
        yield
    finally:
        LAUNCH.clear()
        subprocess.run(["ip", "netns", "del", name], check=False)


def run(args: argparse.Namespace) -> None:
    """Start the processes, warm every path up, run the interleaved rounds, print the tables."""
    with private_loopback(args.lo_gso):
        _run(args)


def _run(args: argparse.Namespace) -> None:
    load_before = background_load()
    print(f"{machine_facts()}; background load {load_before:.2f} CPUs", flush=True)
    children: list[Child] = []
    finished = False
    try:
        sink, sink_port = start("sink", [str(HERE / "_ends.py"), "sink"], children)
        client = Child("client", [*LAUNCH, sys.executable, str(HERE / "_ends.py"), "client"])
        children.append(client)
        paths: dict[Route, tuple[int, Child | None]] = {}
        for route in routes(args.splice_sndbuf, args.attach, args.compare, args.variant):
            if route.relay:
                relay, port = start(route.name, [str(HERE / "_relay.py"), *route.relay, "--upstream", str(sink_port)],
                                    children, pythonpath=route.pythonpath)
                paths[route] = (port, relay)
            else:
                paths[route] = (sink_port, None)
        for port, warm in paths.values():
            transfer(client, port, min(args.size, 64 << 20), [], warm, args.timeout)
            round_trips(client, port, 200, args.timeout)
        samples: dict[Route, list[Sample]] = {route: [] for route in paths}
        rtts: dict[Route, list[tuple[float, float]]] = {route: [] for route in paths}
        order = list(paths)
        for number in range(args.rounds):
            shift = number % len(order)
            for route in order[shift:] + order[:shift]:
                port, relay_child = paths[route]
                pids = [client.pid, sink.pid] + ([relay_child.pid] if relay_child else [])
                sample = transfer(client, port, args.size, pids, relay_child, args.timeout)
                samples[route].append(sample)
                rtts[route].append(round_trips(client, port, args.rtt_count, args.timeout))
                relay_cpu = "-" if sample.relay_cpu is None else f"{sample.relay_cpu:.3f}"
                print(f"round {number + 1}/{args.rounds} {route.name}: {sample.gbits:.2f} Gbit/s, CPU s/GiB machine "
                      f"{sample.machine_cpu:.2f} tasks {sample.tasks_cpu:.2f} relay {relay_cpu}, "
                      f"tail {sample.tail_ms:.0f} ms, RTT {rtts[route][-1][0]:.0f} µs", flush=True)
        finished = True
    finally:
        stop_all(children, grace=5.0 if finished else 0.0)
    report(samples, rtts, args)
    print(f"\nMachine: {machine_facts()}. Background load (CPUs busy while the bench sat idle for 1 s): "
          f"{load_before:.2f} before, {background_load():.2f} after.")


def _sndbufs(text: str) -> list[int | None]:
    return [None if item.strip() == "default" else parse_size(item) for item in text.split(",")]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=GIB, help="bytes per transfer, e.g. 256M (default 1G)")
    parser.add_argument("--rounds", type=int, default=3, help="measured transfers per path (default 3)")
    parser.add_argument("--rtt-count", type=int, default=2000, help="round trips per RTT measurement (default 2000)")
    parser.add_argument("--timeout", type=float, default=60.0, help="hard limit per transfer in seconds (default 60)")
    parser.add_argument("--splice-sndbuf", type=_sndbufs, default=[None, 0],
                        help="comma-separated send buffer sizes for splice rows: 'default' (the proxy's, "
                             f"{human(SPLICE_DEFAULT_SNDBUF)}), 0 (the kernel's) or a size (default: default,0)")
    parser.add_argument("--attach", choices=("verdict", "stream", "stream+parser"), default="verdict",
                        help="how the splice program is attached: SK_SKB_VERDICT (the proxy's), "
                             "SK_SKB_STREAM_VERDICT, or that with a stream parser")
    parser.add_argument("--lo-gso", type=parse_size, default=None, metavar="SIZE",
                        help="run everything in a fresh network namespace whose loopback has this gso_max_size and "
                             "gro_max_size (64K is the default; up to 512K with BIG TCP)")
    parser.add_argument("--variant", action="append", default=[], metavar="LABEL:NAME=INT,...",
                        help="also run the splice proxy with these SpliceProxy options, e.g. "
                             "'rcvbuf 2M:rcvbuf=2097152'; repeatable")
    parser.add_argument("--compare", action="append", default=[], metavar="CHECKOUT",
                        help="also run the splice proxy of another pybpf checkout (e.g. /work/main) side by side; repeatable")
    args = parser.parse_args(argv)
    if args.size <= 0 or args.rounds <= 0 or args.rtt_count <= 0:
        parser.error("--size, --rounds and --rtt-count must be positive")
    try:
        run(args)
    except (OSError, RuntimeError) as err:
        raise SystemExit(f"bench/proxy.py: {err}") from None


if __name__ == "__main__":
    main()
