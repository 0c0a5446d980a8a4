"""Knobs for slow or small environments (emulated kernels in CI): sizes and time bounds."""

from __future__ import annotations

import os

SIZE = float(os.environ.get("PYBPF_TEST_SCALE", "1"))
"""Multiplies the data-heavy tests' sizes and durations (default 1)."""

TIME = float(os.environ.get("PYBPF_TIME_SCALE", "1"))
"""Multiplies time bounds that wait for other processes (under QEMU TCG Python is ~25x slower)."""
