"""Cold start of the command: fresh ``pybpf map show id N``, ``map dump id N`` (a 4-element map) and
``prog list`` processes against a bare ``python -c pass``, side by side; ``import pybpf`` too.

Goals (issue 18): each verb within 2.5x the bare start, ``import pybpf`` within 2x. The contenders
run in turn, ``--rounds`` times, interleaved (the order shuffled each round); the table shows the
median wall time of a whole process and its ratio to the bare start. Two footings: "venv" is the
interpreter and ``pybpf`` script as installed here (an editable install's finder runs at every
start, so the bare start already pays for pathlib, re and enum); "plain" is ``python -S`` with
the source on PYTHONPATH (an installed wheel's footing: the bare start imports almost nothing).
Then ``python -X importtime`` shows which imports dominate ``import pybpf`` and ``map show``.

Bytecode is cached first (``compileall``) and the children run without PYTHONDONTWRITEBYTECODE:
with it every start compiles pybpf's modules from source, as an installed wheel never does.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from pybpf import Map, MapType

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
SCRIPT = Path(PYTHON).with_name("pybpf")
BPFTOOL = shutil.which("bpftool")


def _contenders(map_id: int) -> dict[str, tuple[list[str], dict[str, str] | None]]:
    """name -> (argv, extra environment)."""
    venv_cli = [str(SCRIPT)] if SCRIPT.exists() else [PYTHON, "-m", "pybpf"]
    plain_env = {"PYTHONPATH": str(ROOT)}
    plain_cli = [PYTHON, "-S", "-m", "pybpf"]
    verbs = {"map show id N": ["map", "show", "id", str(map_id)], "map dump id N": ["map", "dump", "id", str(map_id)],
             "prog list": ["prog", "list"]}
    out: dict[str, tuple[list[str], dict[str, str] | None]] = {
        "venv: python -c pass": ([PYTHON, "-c", "pass"], None),
        "venv: import pybpf": ([PYTHON, "-c", "import pybpf"], None),
    }
    out.update({f"venv: pybpf {name}": (venv_cli + words, None) for name, words in verbs.items()})
    out["plain: python -S -c pass"] = ([PYTHON, "-S", "-c", "pass"], plain_env)
    out["plain: import pybpf"] = ([PYTHON, "-S", "-c", "import pybpf"], plain_env)
    out.update({f"plain: pybpf {name}": (plain_cli + words, plain_env) for name, words in verbs.items()})
    if BPFTOOL:
        out["bpftool map show id N"] = ([BPFTOOL, "map", "show", "id", str(map_id)], None)
    return out


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    """The children's environment: bytecode cached as an installed package's is."""
    env = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
    return {**env, **(extra or {})}


def _time(argv: list[str], env: dict[str, str] | None) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system) of one whole process; it must succeed. CPU time
    is what a loaded machine distorts least (waiting for a CPU is not counted)."""
    start = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(env))
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"{' '.join(argv)} failed ({child.returncode}); run it by hand to see why")
    return elapsed, usage.ru_utime + usage.ru_stime


def _importtime(argv: list[str], env: dict[str, str] | None, repeats: int) -> list[tuple[int, int, str]]:
    """Every module ``argv`` imports, as ``-X importtime`` reports it: (self us, cumulative us, name),
    each the least of ``repeats`` runs (a noisy machine preempts single imports)."""
    best: dict[str, tuple[int, int]] = {}
    for _ in range(repeats):
        done = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, env=_env(env), timeout=60, text=True)
        for line in done.stderr.splitlines():
            if line.startswith("import time:") and "self [us]" not in line:
                own, cumulative, name = (part.strip() for part in line[len("import time:"):].split("|"))
                was = best.get(name, (int(own), int(cumulative)))
                best[name] = (min(was[0], int(own)), min(was[1], int(cumulative)))
    return [(own, cumulative, name) for name, (own, cumulative) in best.items()]


def _print_top(title: str, rows: list[tuple[int, int, str]], top: int) -> None:
    print(f"\n{title}: {sum(r[0] for r in rows) / 1000:.1f} ms in {len(rows)} modules (least of each); "
          f"the top {top} by self time")
    print(f"{'self ms':>8} {'cumul ms':>9}  module")
    for own, cumulative, name in sorted(rows, reverse=True)[:top]:
        print(f"{own / 1000:8.1f} {cumulative / 1000:9.1f}  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    parser.add_argument("--top", type=int, default=15, help="modules listed from -X importtime (default 15)")
    args = parser.parse_args()
    subprocess.run([PYTHON, "-m", "compileall", "-q", str(ROOT / "pybpf")], check=True, env=_env(None), timeout=300)
    load = os.getloadavg()
    with Map.create(type=MapType.HASH, key_size=4, value_size=8, max_entries=4, name="bench_cli") as m:
        for i in range(4):
            m[i.to_bytes(4, sys.byteorder)] = (i * 3).to_bytes(8, sys.byteorder)
        contenders = _contenders(m.id)
        for argv, env in contenders.values():  # warm the page cache and check each one runs
            _time(argv, env)
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
        order = list(contenders)
        for _ in range(args.rounds):
            random.shuffle(order)
            for name in order:
                samples[name].append(_time(*contenders[name]))
        bare_rows = _importtime([PYTHON, "-c", "pass"], None, args.rounds)
        import_rows = _importtime([PYTHON, "-c", "import pybpf"], None, args.rounds)
        show_rows = _importtime([PYTHON, "-m", "pybpf", "map", "show", "id", str(m.id)], None, args.rounds)
    wall = {name: statistics.median(t[0] for t in times) * 1000 for name, times in samples.items()}
    cpu = {name: statistics.median(t[1] for t in times) * 1000 for name, times in samples.items()}
    print(f"cold start, median of {args.rounds} interleaved rounds; load average {load[0]:.2f} at start, "
          f"{os.getloadavg()[0]:.2f} at end, {os.cpu_count()} CPUs")
    print(f"{'contender':<40} {'wall ms':>8} {'ratio':>7} {'CPU ms':>8} {'ratio':>7}  goal (on the wall ratio)")
    for name in samples:
        footing = "plain" if name.startswith("plain") else "venv"
        bare = f"{footing}: python -c pass" if footing == "venv" else "plain: python -S -c pass"
        ratio, cpu_ratio = wall[name] / wall[bare], cpu[name] / cpu[bare]
        goal = 2.0 if "import pybpf" in name else 2.5 if "pybpf " in name else None
        mark = "" if goal is None else f"{goal}x {'ok' if ratio <= goal else 'MISSED'}"
        print(f"{name:<40} {wall[name]:8.1f} {ratio:6.2f}x {cpu[name]:8.1f} {cpu_ratio:6.2f}x  {mark}")
    seen = {row[2] for row in bare_rows}
    _print_top("python -X importtime, import pybpf (beyond the bare start)", [r for r in import_rows if r[2] not in seen], args.top)
    seen |= {row[2] for row in import_rows}
    _print_top("python -X importtime, pybpf map show id N (beyond import pybpf)", [r for r in show_rows if r[2] not in seen], args.top)


if __name__ == "__main__":
    main()
