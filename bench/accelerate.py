"""Socket-to-socket acceleration against plain loopback TCP, side by side in one run.

Three contenders, each on its own child cgroup (never the root), with the same C client and
server (``bench/accelerate_c/ends.c``, compiled here with clang) in every row:

- ``plain``: no programs, loopback TCP;
- ``pybpf``: ``pybpf.apps.accelerate.Accelerator`` (the ready-made ``sockops_insert`` and
  ``sk_msg_to_peer``);
- ``C pair``: a hand-written sock_ops + sk_msg pair (``bench/accelerate_c/sockmap_pair.bpf.c``),
  compiled with clang-16 here, loaded and attached with bpftool.

Per contender and layout: 64-byte request/response round-trip time (p50, p99 of ``--count``
ping-pongs), throughput of ``--size`` bytes (1 GiB) in ``--chunk`` writes, and CPU seconds per GiB
of the whole machine (``/proc/stat``: it grows with other people's load, so the load average is
printed too). Layouts: ``split`` (server on CPU 0, client on CPU 1), ``same-cpu`` (both on CPU 0),
``busy-poll`` (split, ``SO_BUSY_POLL`` 50 µs on every socket) and ``1MiB-writes`` (split, 1 MiB
writes). Contenders are interleaved (the order rotates every round), each round runs every
layout, and the tables show medians over ``--rounds`` rounds with the ratios to plain TCP in the
same layout; the goals (RTT <= 0.9x, throughput >= 1.2x, CPU/GiB <= 0.75x) are for ``split``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from pybpf._sys.cgroupfs import cgroup2_root  # noqa: E402
from pybpf.apps.accelerate import Accelerator  # noqa: E402

GIB = 1 << 30
TICK = os.sysconf("SC_CLK_TCK")
CONTENDERS = ("plain", "pybpf", "C pair")
LAYOUTS = {
    "split": {"server": "0", "client": "1", "chunk": None, "env": {}},
    "same-cpu": {"server": "0", "client": "0", "chunk": None, "env": {}},
    "busy-poll": {"server": "0", "client": "1", "chunk": None, "env": {"ENDS_BUSY_POLL": "50"}},
    "1MiB-writes": {"server": "0", "client": "1", "chunk": 1 << 20, "env": {}},
}


def machine_busy() -> float:
    """Busy CPU seconds of the whole machine so far (user+nice+system+irq+softirq+steal)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / TICK


def build(work: Path) -> tuple[Path, Path]:
    """Compile the endpoints and the C pair; their paths."""
    clang = shutil.which("clang-16") or shutil.which("clang")
    if clang is None:
        raise SystemExit("bench/accelerate.py needs clang-16 (apt install clang-16)")
    ends, pair = work / "ends", work / "sockmap_pair.o"
    subprocess.run([clang, "-O2", "-Wall", "-o", str(ends), str(HERE / "accelerate_c" / "ends.c")], check=True)
    arch_include = f"/usr/include/{os.uname().machine}-linux-gnu"
    subprocess.run([clang, "-O2", "-g", "-target", "bpf", "-Wall", f"-I{arch_include}", "-c",
                    str(HERE / "accelerate_c" / "sockmap_pair.bpf.c"), "-o", str(pair)], check=True)
    return ends, pair


@contextlib.contextmanager
def cgroups() -> Iterator[dict[str, str]]:
    """One fresh child cgroup per contender, removed (with what runs in it) at the end."""
    tag = uuid.uuid4().hex[:8]
    made = {name: os.path.join(cgroup2_root(), f"pybpf-bench-{tag}-{name.replace(' ', '-')}") for name in CONTENDERS}
    for path in made.values():
        os.mkdir(path)
    try:
        yield made
    finally:
        for path in made.values():
            with contextlib.suppress(OSError):
                with open(os.path.join(path, "cgroup.kill"), "w") as f:
                    f.write("1")
            for _ in range(200):
                try:
                    os.rmdir(path)
                    break
                except OSError:
                    time.sleep(0.05)


@contextlib.contextmanager
def c_pair(obj: Path, cgroup: str) -> Iterator[None]:
    """The C pair loaded and attached with bpftool; detached and unpinned at the end."""
    bpftool = shutil.which("bpftool") or "/usr/sbin/bpftool"
    pins = f"/sys/fs/bpf/pybpf-bench-{uuid.uuid4().hex[:8]}"
    try:
        subprocess.run([bpftool, "prog", "loadall", str(obj), pins, "pinmaps", f"{pins}/maps"], check=True)
        subprocess.run([bpftool, "prog", "attach", "pinned", f"{pins}/sk_msg_pair", "msg_verdict", "pinned",
                        f"{pins}/maps/sock_hash"], check=True)
        subprocess.run([bpftool, "cgroup", "attach", cgroup, "sock_ops", "pinned", f"{pins}/sockops_pair"], check=True)
        yield
    finally:
        subprocess.run([bpftool, "cgroup", "detach", cgroup, "sock_ops", "pinned", f"{pins}/sockops_pair"],
                       capture_output=True)
        shutil.rmtree(pins, ignore_errors=True)


def in_cgroup(cgroup: str, cpu: str, argv: list[str], env: dict[str, str]) -> list[str]:
    """``argv`` started inside ``cgroup`` and pinned to ``cpu``."""
    return ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && cpu=$1 && shift && exec taskset -c "$cpu" "$@"', cgroup, cpu, *argv]


def start_server(ends: Path, cgroup: str, cpu: str, env: dict[str, str]) -> tuple[subprocess.Popen[str], int]:
    """The server on a free port of 127.0.0.1 (loopback is shared with everyone on the machine)."""
    server = subprocess.Popen(in_cgroup(cgroup, cpu, [str(ends), "server", "0"], env), stdout=subprocess.PIPE,
                              text=True, env={**os.environ, **env})
    assert server.stdout is not None
    words = server.stdout.readline().split()
    if len(words) != 2 or words[0] != "ready":
        server.kill()
        server.wait()
        raise RuntimeError("the server did not start")
    return server, int(words[1])


def client(ends: Path, cgroup: str, cpu: str, env: dict[str, str], *args: object, timeout: float = 600) -> list[float]:
    done = subprocess.run(in_cgroup(cgroup, cpu, [str(ends), *map(str, args)], env), capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **env})
    if done.returncode:
        raise RuntimeError(f"client {args}: {done.stderr.strip()}")
    return [float(x) for x in done.stdout.split()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--size", type=int, default=GIB, help="bytes per throughput run (default 1 GiB)")
    ap.add_argument("--chunk", type=int, default=1 << 16, help="write size (default 64 KiB)")
    ap.add_argument("--count", type=int, default=20000, help="ping-pongs per RTT run")
    ap.add_argument("--layouts", default=",".join(LAYOUTS), help=f"comma-separated, of {', '.join(LAYOUTS)}")
    args = ap.parse_args()
    layouts = [name.strip() for name in args.layouts.split(",") if name.strip()]
    for name in layouts:
        if name not in LAYOUTS:
            raise SystemExit(f"unknown layout {name!r}")
    if os.cpu_count() and os.cpu_count() < 2:  # type: ignore[operator]
        raise SystemExit("needs 2 CPUs")
    results: dict[tuple[str, str], dict[str, list[float]]] = {}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="pybpf-bench-") as tmp, cgroups() as cg:
        ends, pair = build(Path(tmp))
        with Accelerator(cg["pybpf"]) as accel, c_pair(pair, cg["C pair"]):
            for rnd in range(args.rounds):
                order = CONTENDERS[rnd % 3:] + CONTENDERS[:rnd % 3]
                for layout in layouts:
                    spec = LAYOUTS[layout]
                    for who in order:
                        server, port = start_server(ends, cg[who], spec["server"], spec["env"])
                        try:
                            p50, p99 = client(ends, cg[who], spec["client"], spec["env"], "rtt", port, args.count, 64)
                            busy = machine_busy()
                            seconds, = client(ends, cg[who], spec["client"], spec["env"], "bulk", port, args.size,
                                              spec["chunk"] or args.chunk)
                            cpu = (machine_busy() - busy) / (args.size / GIB)
                        finally:
                            server.kill()
                            server.wait()
                            if server.stdout:
                                server.stdout.close()
                        row = results.setdefault((layout, who), {"p50": [], "p99": [], "gibps": [], "cpu": []})
                        row["p50"].append(p50)
                        row["p99"].append(p99)
                        row["gibps"].append(args.size / GIB / seconds)
                        row["cpu"].append(cpu)
                print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr, flush=True)
            left = accel.status().sockets
        assert left == 0, f"{left} sockets still accelerated"
    load_after = os.getloadavg()
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; {os.cpu_count()} CPUs; "
          f"{args.rounds} rounds, medians; {args.size / GIB:g} GiB per throughput run, {args.count} ping-pongs of 64 B")
    print(f"{'layout':<12} {'contender':<8} {'RTT p50 µs':>11} {'p99 µs':>9} {'GiB/s':>7} {'CPU s/GiB':>10}   "
          f"{'RTT':>6} {'thru':>6} {'CPU':>6}  (x plain)")
    for layout in layouts:
        base = {k: statistics.median(v) for k, v in results[(layout, "plain")].items()}
        for who in CONTENDERS:
            m = {k: statistics.median(v) for k, v in results[(layout, who)].items()}
            print(f"{layout:<12} {who:<8} {m['p50']:>11.1f} {m['p99']:>9.1f} {m['gibps']:>7.2f} {m['cpu']:>10.2f}   "
                  f"{m['p50'] / base['p50']:>6.2f} {m['gibps'] / base['gibps']:>6.2f} {m['cpu'] / base['cpu']:>6.2f}")
    if "split" in layouts:
        split = {who: {k: statistics.median(v) for k, v in results[("split", who)].items()} for who in CONTENDERS}
        base = split["plain"]
        for who in ("pybpf", "C pair"):
            m = split[who]
            goals = [m["p50"] / base["p50"] <= 0.9, m["gibps"] / base["gibps"] >= 1.2, m["cpu"] / base["cpu"] <= 0.75]
            print(f"goals ({who}, split): RTT <= 0.9x {'met' if goals[0] else 'NOT met'}, throughput >= 1.2x "
                  f"{'met' if goals[1] else 'NOT met'}, CPU/GiB <= 0.75x {'met' if goals[2] else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
