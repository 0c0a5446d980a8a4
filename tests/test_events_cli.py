"""``pybpf execsnoop`` and ``pybpf map event_pipe``: the commands, run as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pybpf import Map, MapType
from pybpf.apps.execsnoop import ExecSnoop, header, line
from eventprogs import perf_output, perf_record, ringbuf_copy
from scale import TIME

TRUE = "/bin/true"


def pybpf(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pybpf", *args], capture_output=True, text=True, timeout=timeout * TIME)


def test_execsnoop_sees_an_exec_with_its_arguments_and_result(tmp_path: Path) -> None:
    with ExecSnoop() as snoop:
        ok = subprocess.run([TRUE, "first", "second arg"])
        failed = subprocess.run(["/bin/sh", "-c", f"exec {tmp_path}/missing 2>/dev/null"])
        assert ok.returncode == 0 and failed.returncode != 0
        seen = []
        deadline = time.monotonic() + 10 * TIME
        while time.monotonic() < deadline and not any(r.ret != 0 and r.args[:1] == (f"{tmp_path}/missing",) for r in seen):
            seen += snoop.poll(0.5)
    me = os.getpid()
    true = [r for r in seen if r.args == (TRUE, "first", "second arg")]
    assert true and true[0].ret == 0 and true[0].comm == "true" and true[0].ppid == me and true[0].uid == os.getuid()
    assert not true[0].truncated
    missing = [r for r in seen if r.args[:1] == (f"{tmp_path}/missing",)]
    assert missing and missing[0].ret == -2  # ENOENT, and the comm is still the shell's
    assert line(true[0]).startswith("true ") and header().split() == ["PCOMM", "PID", "PPID", "RET", "ARGS"]


def test_execsnoop_marks_cut_arguments() -> None:
    with ExecSnoop(max_args=3) as snoop:
        subprocess.run([TRUE, "a", "b", "c", "d"])
        deadline = time.monotonic() + 10 * TIME
        found = []
        while time.monotonic() < deadline and not found:
            found = [r for r in snoop.poll(0.5) if r.args[:1] == (TRUE,) and r.pid != os.getpid()]
        assert found[0].args == (TRUE, "a", "b") and found[0].truncated
        assert line(found[0]).endswith(" ...")
    with pytest.raises(ValueError, match="max_args"):
        ExecSnoop(max_args=0)


def test_execsnoop_command_prints_bcc_columns_and_json(tmp_path: Path) -> None:
    marker = f"pybpf-{os.getpid()}"
    for args, check in ((["execsnoop", "-n", "^true$", "--count", "1"], "text"),
                        (["execsnoop", "--json", "-n", "^true$", "--count", "1"], "json")):
        stop = threading.Event()

        def run_until_stopped() -> None:  # the command needs a moment to attach: exec until it has seen one
            deadline = time.monotonic() + 30 * TIME
            while not stop.is_set() and time.monotonic() < deadline:
                subprocess.run([TRUE, marker])
                stop.wait(0.2)

        worker = threading.Thread(target=run_until_stopped)
        worker.start()
        try:
            done = pybpf(*args, "--duration", str(30 * TIME))
        finally:
            stop.set()
            worker.join()
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        if check == "text":
            assert lines[0].split() == ["PCOMM", "PID", "PPID", "RET", "ARGS"]
            assert lines[1].split()[0] == "true" and lines[1].split()[3] == "0"
        else:
            record = json.loads(lines[0])
            assert record["comm"] == "true" and record["ret"] == 0 and record["args"][0] == TRUE


def test_event_pipe_prints_ring_and_perf_records(pin_dir: Path) -> None:
    with Map.create(type=MapType.RINGBUF, max_entries=4096) as ring, ringbuf_copy(ring, 20) as prog:
        ring.pin(pin_dir / "ring")
        for i in range(3):
            prog.test_run(bytes(range(i, i + 20)))
        shown = pybpf("map", "event_pipe", "pinned", str(pin_dir / "ring"), "count", "2")
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.splitlines()
        assert lines[0].startswith("== @") and lines[0].endswith("size: 20 =====")
        assert lines[1] == " ".join(f"{b:02x}" for b in range(16)) and lines[2] == "10 11 12 13"
        as_json = pybpf("--json", "map", "event_pipe", "pinned", str(pin_dir / "ring"), "count", "1", "type", "struct ethhdr")
        (record,) = json.loads(as_json.stdout)  # a JSON array, streamed as bpftool's
        assert record["data"][0] == "0x02"  # the third record: count 2 above consumed exactly two
        assert record["formatted"]["h_dest"] == [2, 3, 4, 5, 6, 7]
    with Map.create(type=MapType.PERF_EVENT_ARRAY, key_size=4, value_size=4, max_entries=os.cpu_count() or 1) as events, \
            perf_output(events, 16) as prog:
        events.pin(pin_dir / "perf")
        stop = threading.Event()

        def produce() -> None:  # until the command has opened its events and printed one
            deadline = time.monotonic() + 30 * TIME
            while not stop.wait(0.1) and time.monotonic() < deadline:
                prog.test_run(bytes(range(16)))

        worker = threading.Thread(target=produce)
        worker.start()
        try:
            shown = pybpf("--json", "map", "event_pipe", "pinned", str(pin_dir / "perf"), "count", "1", "timeout", str(30 * TIME))
        finally:
            stop.set()
            worker.join()
        assert shown.returncode == 0, shown.stderr
        (record,) = json.loads(shown.stdout)
        assert bytes(int(b, 16) for b in record["data"])[:16] == perf_record(bytes(range(16)), 16)


def test_event_pipe_errors(pin_dir: Path) -> None:
    with Map.create(type=MapType.ARRAY, key_size=4, value_size=4, max_entries=1) as array:
        array.pin(pin_dir / "array")
        shown = pybpf("map", "event_pipe", "pinned", str(pin_dir / "array"))
        assert shown.returncode == 255 and "event_pipe reads PERF_EVENT_ARRAY and RINGBUF maps, not ARRAY" in shown.stderr
        shown = pybpf("map", "event_pipe", "pinned", str(pin_dir / "array"), "bogus", "1")
        assert shown.returncode == 255 and "unknown option 'bogus'" in shown.stderr


def test_perf_list_matches_bpftool(tmp_path: Path) -> None:
    import shutil

    from pybpf import ProgramType
    from eventprogs import reporter

    bpftool = shutil.which("bpftool") or "/usr/sbin/bpftool"
    me = os.getpid()
    with Map.create(type=MapType.RINGBUF, max_entries=4096) as ring, reporter(ring, ProgramType.TRACEPOINT) as tp, \
            reporter(ring, ProgramType.KPROBE) as probe, reporter(ring, ProgramType.RAW_TRACEPOINT) as raw:
        with tp.attach_tracepoint("syscalls", "sys_enter_getppid"), probe.attach_uprobe("libc.so.6", "getpid", pid=me), \
                probe.attach_uprobe("libc.so.6", "getpid", retprobe=True, pid=me), raw.attach_raw_tracepoint("sys_enter"):
            ours = [r for r in json.loads(pybpf("--json", "perf", "list").stdout) if r["pid"] == me]
            theirs = json.loads(subprocess.run([bpftool, "--json", "perf", "list"], capture_output=True, text=True, check=True).stdout)
            assert ours == [r for r in theirs if r["pid"] == me]
            assert sorted(r["fd_type"] for r in ours) == ["raw_tracepoint", "tracepoint", "uprobe", "uretprobe"]
            text = pybpf("perf", "list").stdout
            assert f"pid {me}  fd {ours[0]['fd']}: prog_id {ours[0]['prog_id']}  " in text
        assert not [r for r in json.loads(pybpf("--json", "perf", "list").stdout) if r["pid"] == me]
