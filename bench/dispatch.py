"""Connections per second through sk_lookup dispatch against a plain listener, in one run.

Two network namespaces made here (loopback only), identical but for the dispatcher:

- ``plain``: a listener on 127.0.0.1:PORT, clients connect to it; no program in the namespace;
- ``dispatch``: ``pybpf.apps.dispatch`` loaded in the namespace, the same listener registered
  under a label bound to 127.0.0.0/8 on every port, clients connect to 127.0.0.2:9000, where
  nothing listens (each connection runs the SK_LOOKUP program: an LPM lookup for the port, one
  for every port, a SOCKMAP lookup and ``bpf_sk_assign``). Each mode keeps one destination for
  the whole run, so both reuse the same 4-tuple space.

A C client (``bench/dispatch_c/conns.c``, compiled here) connects and resets in a loop for
``--phase`` seconds, with the server on the other CPU; phases alternate (the order rotates every
round) ``--rounds`` times; the table shows the median rate of each and the cost per connection
of dispatch (goal: under 5%). The kernel's own run-time statistics (``BPF_ENABLE_STATS``, on only
in one extra phase: they cost two clock reads per run) give the program's ns per run, which
divided by the plain connection time is its share.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from pybpf import enable_stats  # noqa: E402
from pybpf.apps.dispatch import Dispatcher  # noqa: E402
from pybpf.programs import Program  # noqa: E402
from pybpf.testing.netns import NETNS_DIR, namespace  # noqa: E402

PORT = 8000


def build(work: Path) -> Path:
    clang = shutil.which("clang-16") or shutil.which("clang")
    if clang is None:
        raise SystemExit("bench/dispatch.py needs clang-16 (apt install clang-16)")
    out = work / "conns"
    subprocess.run([clang, "-O2", "-Wall", "-o", str(out), str(HERE / "dispatch_c" / "conns.c")], check=True)
    return out


def in_netns(netns: str, cpu: str, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, "taskset", "-c", cpu, *argv]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--phase", type=float, default=2.0, help="seconds per phase (default 2)")

    args = ap.parse_args()
    rates: dict[str, list[float]] = {"plain": [], "dispatch": []}
    failures, last_error = {"plain": 0, "dispatch": 0}, {"plain": "", "dispatch": ""}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="pybpf-bench-") as tmp, namespace() as plain_ns, namespace() as disp_ns:
        conns = build(Path(tmp))
        pins = Path("/sys/fs/bpf") / f"pybpf-bench-dispatch-{os.getpid()}"
        servers = []
        dispatcher = Dispatcher.load(os.path.join(NETNS_DIR, disp_ns), pins)
        try:
            for ns in (plain_ns, disp_ns):
                server = subprocess.Popen(in_netns(ns, "0", [str(conns), "server", "127.0.0.1", str(PORT)]),
                                          stdout=subprocess.PIPE, text=True)
                servers.append(server)
                assert server.stdout is not None and server.stdout.readline().strip() == "ready"
            dispatcher.bind("bench", "tcp", "127.0.0.0/8", 0)
            _register_server(dispatcher, servers[1].pid)
            for rnd in range(args.rounds):
                order = ("plain", "dispatch") if rnd % 2 == 0 else ("dispatch", "plain")
                for who in order:
                    count, failed, code = _phase(conns, who, plain_ns, disp_ns, args.phase)
                    failures[who] += failed
                    if failed:
                        last_error[who] = os.strerror(code)
                    rates[who].append(count / args.phase)
                print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr, flush=True)
            with enable_stats():  # apart: the statistics cost two clock reads per program run
                runs_before = _runs(dispatcher)
                _phase(conns, "dispatch", plain_ns, disp_ns, args.phase)
                runs_after = _runs(dispatcher)
        finally:
            for server in servers:
                server.kill()
                server.wait()
                if server.stdout:
                    server.stdout.close()
            dispatcher.unload()
    plain, disp = statistics.median(rates["plain"]), statistics.median(rates["dispatch"])
    cost = (1 / disp - 1 / plain) / (1 / plain)
    ns_per_run = (runs_after[1] - runs_before[1]) / max(1, runs_after[0] - runs_before[0])
    load_after = os.getloadavg()
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; {os.cpu_count()} CPUs; "
          f"{args.rounds} rounds of {args.phase:g} s per mode, medians")
    print(f"{'mode':<10} {'conn/s':>10} {'µs/conn':>9} {'failed':>7}")
    for who, rate in (("plain", plain), ("dispatch", disp)):
        print(f"{who:<10} {rate:>10.0f} {1e6 / rate:>9.2f} {failures[who]:>7} {last_error[who]}")
    print(f"dispatch costs {cost * 100:+.1f}% per connection (goal < 5%); the SK_LOOKUP program itself runs "
          f"{ns_per_run:.0f} ns per lookup (BPF_ENABLE_STATS, measured in a phase of its own) = "
          f"{ns_per_run / (1e9 / plain) * 100:.2f}% of a plain connection")
    return 0


def _phase(conns: Path, who: str, plain_ns: str, disp_ns: str, seconds: float) -> tuple[int, int, int]:
    """One client phase: ``(connections, failures, errno of the last failure)``. Each mode keeps
    one destination for the whole run, so both reuse the same 4-tuple space."""
    ns, target, port = (plain_ns, "127.0.0.1", PORT) if who == "plain" else (disp_ns, "127.0.0.2", 9000)
    done = subprocess.run(in_netns(ns, "1", [str(conns), "client", target, str(port), str(seconds)]),
                          capture_output=True, text=True, timeout=60 + seconds)
    count, failed, code = map(int, done.stdout.split())
    return count, failed, code


def _register_server(dispatcher: Dispatcher, pid: int) -> None:
    """The C server's listening socket (``ip netns exec`` runs it as a child of ``pid``)."""
    for candidate in [pid, *_children(pid)]:
        try:
            dispatcher.register_pid(candidate, "bench", "tcp", "127.0.0.1", PORT)
            return
        except LookupError:
            continue
    raise RuntimeError("could not find the server's socket")


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def _runs(dispatcher: Dispatcher) -> tuple[int, int]:
    """``(run_cnt, run_time_ns)`` of the dispatcher's program."""
    with Program.from_id(dispatcher.link.info().prog_id) as prog:
        info = prog.info()
    return info.run_cnt, info.run_time_ns


if __name__ == "__main__":
    sys.exit(main())
