"""Shared fixtures: kernel access checks, fd-leak checks, bpffs pin directories."""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pybpf._sys.attrs import MapCreateAttr
from pybpf._sys.constants import Cmd
from pybpf._sys.syscall import bpf_errno, close_fd

BPFFS = Path("/sys/fs/bpf")


def _kernel_reason() -> str | None:
    """Why this process cannot use bpf(2), or None when it can."""
    fd = bpf_errno(Cmd.MAP_CREATE, MapCreateAttr(map_type=2, key_size=4, value_size=4, max_entries=1))
    if fd >= 0:
        close_fd(fd)
        return None
    return f"bpf(2) unavailable here (errno {-fd}): needs CAP_BPF or root"


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


_VERSION_GATE = re.compile(r"\bneeds? Linux \d+\.\d+")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Under PYBPF_REQUIRE_KERNEL=1 a skip fails the test, unless the running kernel predates
    the feature (the reason says "needs Linux X.Y"): a missing tool must not hide a path."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("PYBPF_REQUIRE_KERNEL") == "1" and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if not _VERSION_GATE.search(reason):
            report.outcome = "failed"
            report.longrepr = f"skipped under PYBPF_REQUIRE_KERNEL=1 (only kernel-version gates may skip): {reason}"


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
