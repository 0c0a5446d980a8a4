"""``pybpf btf dump``: bpftool's raw format and JSON field names, bounded file reads, format c refused."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pybpf.btf import encode
from test_btf import every_kind
from test_elf import objects  # noqa: F401 - the session fixture compiling tests/bpf/*.c

BPFTOOL = shutil.which("bpftool")


def _pybpf(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pybpf", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(BPFTOOL is None, reason="bpftool is not installed")
def test_dump_matches_bpftool_for_every_kind(tmp_path: Path) -> None:
    path = tmp_path / "every.btf"
    path.write_bytes(encode(every_kind()))
    ours = _pybpf("btf", "dump", "file", str(path))
    theirs = subprocess.run([BPFTOOL, "btf", "dump", "file", str(path)], capture_output=True, text=True, check=True)  # type: ignore[list-item]
    assert ours.returncode == 0 and ours.stdout == theirs.stdout
    ours_json = json.loads(_pybpf("-j", "btf", "dump", "file", str(path), "format", "raw").stdout)
    theirs_json = json.loads(subprocess.run([BPFTOOL, "-j", "btf", "dump", "file", str(path)], capture_output=True, text=True, check=True).stdout)  # type: ignore[list-item]
    assert ours_json == theirs_json


@pytest.mark.skipif(BPFTOOL is None, reason="bpftool is not installed")
def test_dump_of_an_object_matches_bpftool(objects: dict[str, Path]) -> None:
    ours = _pybpf("btf", "dump", "file", str(objects["core"]))
    theirs = subprocess.run([BPFTOOL, "btf", "dump", "file", str(objects["core"])], capture_output=True, text=True, check=True)  # type: ignore[list-item]
    assert ours.returncode == 0 and ours.stdout == theirs.stdout


def test_hostile_files_are_one_line_errors(tmp_path: Path) -> None:
    huge = tmp_path / "huge.btf"
    header = (0xEB9F).to_bytes(2, sys.byteorder) + bytes([1, 0]) + (24).to_bytes(4, sys.byteorder)
    header += b"".join(v.to_bytes(4, sys.byteorder) for v in (0, 0xFFFFFF00, 0xFFFFFF00, 16))
    huge.write_bytes(header)
    for path in ("/dev/zero", str(huge), str(tmp_path / "missing")):
        start = time.monotonic()
        done = _pybpf("btf", "dump", "file", path)
        assert done.returncode != 0 and done.stdout == "" and done.stderr.count("\n") == 1, (path, done.stderr)
        assert "Traceback" not in done.stderr and time.monotonic() - start < 30


def test_format_c_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "every.btf"
    path.write_bytes(encode(every_kind()))
    done = _pybpf("btf", "dump", "file", str(path), "format", "c")
    assert done.returncode != 0 and "format c" in done.stderr and "not implemented" in done.stderr
