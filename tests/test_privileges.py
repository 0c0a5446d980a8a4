"""Without privileges: a clear PermissionDeniedError with a hint, and a suite that skips (or
fails under PYBPF_REQUIRE_KERNEL=1) rather than pretending to pass."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# uid 0 kept (files stay readable) but no capability survives exec: root without CAP_BPF
UNPRIVILEGED = ["setpriv", "--securebits=+noroot,+noroot_locked", "--inh-caps=-all", "--bounding-set=-all", "--"]

pytestmark = pytest.mark.skipif(shutil.which("setpriv") is None or os.geteuid() != 0, reason="needs root and setpriv to drop privileges")


def _run_unprivileged(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    full_env.pop("PYBPF_REQUIRE_KERNEL", None)
    full_env.update(env or {})
    return subprocess.run([*UNPRIVILEGED, sys.executable, *args], capture_output=True, text=True, env=full_env, cwd="/", timeout=120)


def test_eperm_names_the_operation_and_hints_cap_bpf() -> None:
    code = (
        "import pybpf\n"
        "try:\n"
        "    pybpf.Map.create(type=pybpf.MapType.HASH, key_size=4, value_size=4, max_entries=1, name='denied')\n"
        "except pybpf.PermissionDeniedError as e:\n"
        "    print(e.errno, e)\n"
    )
    out = _run_unprivileged("-c", code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("1 ") and "create HASH map 'denied'" in out.stdout and "CAP_BPF" in out.stdout


def test_suite_skips_with_a_reason_and_fails_when_kernel_is_required(tmp_path: Path) -> None:
    test_file = tmp_path / "test_probe.py"
    test_file.write_text("def test_needs_kernel():\n    pass\n")
    for name in ("conftest.py", "probes.py"):
        (tmp_path / name).write_text((ROOT / "tests" / name).read_text())
    os.chmod(tmp_path, 0o755)
    args = ["-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(test_file)]
    skipped = _run_unprivileged(*args)
    assert skipped.returncode == 0 and "needs CAP_BPF" in skipped.stdout, skipped.stdout + skipped.stderr
    required = _run_unprivileged(*args, env={"PYBPF_REQUIRE_KERNEL": "1"})
    assert required.returncode != 0 and "PYBPF_REQUIRE_KERNEL=1" in required.stdout + required.stderr
