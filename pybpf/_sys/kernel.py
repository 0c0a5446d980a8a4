"""The running kernel's release (what features are compared against; ``traits`` has the releases
that brought each type)."""

from __future__ import annotations

import functools
import os
import re


@functools.cache
def kernel_version() -> tuple[int, int]:
    """``(major, minor)`` of the running kernel."""
    match = re.match(r"(\d+)\.(\d+)", os.uname().release)
    if match is None:  # pragma: no cover - every Linux release string starts so
        raise RuntimeError(f"cannot read the kernel version from {os.uname().release!r}")
    return int(match[1]), int(match[2])


def kernel_has(since: tuple[int, int]) -> bool:
    """Whether the running kernel is at least release ``since``."""
    return kernel_version() >= since


def release_text(release: tuple[int, int]) -> str:
    """``(6, 10)`` as ``"6.10"``."""
    return f"{release[0]}.{release[1]}"
