"""pytest plugin of pybpf (loaded through the ``pytest11`` entry point, or ``-p pybpf.testing.plugin``):
the ``memory_kernel`` fixture, under which the test's pybpf maps live in memory, with the kernel's
semantics and errors and no privileges needed.

``@pytest.mark.memory_kernel(programs={...}, bpffs=(...), release=(6, 1))`` passes options to
``pybpf.testing.memory_kernel``. Only this module imports pytest; ``import pybpf.testing`` does not.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .memory import MemoryKernel
from .memory import memory_kernel as _memory_kernel


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "memory_kernel(programs=None, bpffs=('/sys/fs/bpf',), release=None): options of the memory_kernel fixture")


@pytest.fixture
def memory_kernel(request: pytest.FixtureRequest) -> Iterator[MemoryKernel]:
    """A fresh in-memory kernel for this test: maps created, pinned, opened and listed by pybpf in
    the test live in it (its virtual bpffs is ``memory_kernel.fs``)."""
    marker = request.node.get_closest_marker("memory_kernel")
    options = dict(marker.kwargs) if marker is not None else {}
    with _memory_kernel(**options) as kernel:
        yield kernel
