"""The machine's CPUs as sysfs lists them (``0-3,5``): possible ones size per-CPU values and perf
buffers, online ones take perf events."""

from __future__ import annotations

import functools

_CPU_DIR = "/sys/devices/system/cpu"


def cpu_list(path: str) -> list[int]:
    """The CPUs listed in a sysfs cpu list file, in order."""
    with open(path) as f:
        text = f.read().strip()
    cpus: list[int] = []
    for part in text.split(","):
        if not part:
            continue
        low, _, high = part.partition("-")
        cpus.extend(range(int(low), int(high or low) + 1))
    return cpus


@functools.cache
def possible_cpus() -> int:
    """Number of possible CPUs: the number of values in a per-CPU map element."""
    return len(cpu_list(f"{_CPU_DIR}/possible"))


def possible_cpu_list() -> list[int]:
    """The possible CPUs, in order."""
    return cpu_list(f"{_CPU_DIR}/possible")


def online_cpus() -> set[int]:
    """The CPUs online now."""
    return set(cpu_list(f"{_CPU_DIR}/online"))
