"""Shared fixtures: kernel access checks, fd-leak checks, bpffs pin directories."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

try:
    import probes
except ImportError:  # a conftest copied alone (tests of the skip policy itself)
    probes = None

BPFFS = Path("/sys/fs/bpf")


def _kernel_reason() -> str | None:
    """Why this process cannot use bpf(2), or None when it can (a raw ARRAY create, not pybpf)."""
    import ctypes
    import platform
    import struct

    libc = ctypes.CDLL(None, use_errno=True)
    attr = ctypes.create_string_buffer(struct.pack("=5I", 2, 4, 4, 1, 0) + bytes(60))
    fd = libc.syscall({"x86_64": 321, "aarch64": 280}[platform.machine()], 0, attr, len(attr.raw))
    if fd >= 0:
        os.close(fd)
        return None
    return f"bpf(2) unavailable here (errno {ctypes.get_errno()}): needs CAP_BPF or root"


_REASON = _kernel_reason()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without kernel access, skip kernel tests, unless PYBPF_REQUIRE_KERNEL=1 makes that a failure."""
    if _REASON is None:
        return
    if os.environ.get("PYBPF_REQUIRE_KERNEL") == "1":
        raise pytest.UsageError(f"PYBPF_REQUIRE_KERNEL=1 but {_REASON}")
    for item in items:
        if "nokernel" not in item.keywords:
            item.add_marker(pytest.mark.skip(reason=_REASON))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Under PYBPF_REQUIRE_KERNEL=1 a skip fails the test, unless a probe of tests/probes.py (which
    does not go through pybpf) found that the kernel lacks or refuses the mechanism: a missing
    tool or a skipped path must not pass for a tested one."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("PYBPF_REQUIRE_KERNEL") == "1" and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if probes is None or reason.removeprefix("Skipped: ") not in probes.REASONS:
            report.outcome = "failed"
            report.longrepr = f"skipped under PYBPF_REQUIRE_KERNEL=1 (only a kernel probe may skip): {reason}"


def open_fds() -> set[int]:
    """The fds this process has open now."""
    return {int(name) for name in os.listdir("/proc/self/fd")}


@pytest.fixture
def no_fd_leak() -> Iterator[None]:
    """Fail the test if it leaves new fds open."""
    before = open_fds()
    yield
    leaked = open_fds() - before
    # the listdir fd itself may show up; anything still open and not a dir listing is a leak
    leaked = {fd for fd in leaked if os.path.exists(f"/proc/self/fd/{fd}")}
    assert not leaked, f"leaked fds: {sorted(leaked)} -> {[os.readlink(f'/proc/self/fd/{fd}') for fd in leaked]}"


def _ensure_bpffs() -> None:
    if not os.path.ismount(BPFFS):
        BPFFS.mkdir(parents=True, exist_ok=True)
        os.system(f"mount -t bpf bpf {BPFFS}")


@pytest.fixture
def pin_dir() -> Iterator[Path]:
    """A fresh directory in bpffs, removed with everything pinned in it."""
    _ensure_bpffs()
    path = BPFFS / f"pybpf-test-{uuid.uuid4().hex[:12]}"
    path.mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
