"""Where kernel releases differ in what user space sees of maps: one row per change, so the memory
kernel behaves as the release it emulates (the running one unless ``memory_kernel(release=...)``).

Stable series take some changes late (Debian's 6.1 and 6.12 carry fixes from 6.14), so a row
names the upstream release and, per stable series, the first patch level known to have it. Those
levels are the ones measured here by the differential test (``scripts/kernel-matrix``); an
earlier one may have it too.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re

Version = tuple[int, int, int]


@dataclasses.dataclass(frozen=True)
class Change:
    """A change of behaviour: in ``since`` and later, and in the stable patch levels listed."""

    what: str
    since: tuple[int, int]
    stable: tuple[tuple[tuple[int, int], int], ...] = ()
    """((major, minor), first patch level with the change), per stable series."""

    def in_release(self, version: Version) -> bool:
        """Whether ``version`` (major, minor, patch) has the change."""
        series, patch = version[:2], version[2]
        if series >= self.since:
            return True
        return any(series == s and patch >= first for s, first in self.stable)


LPM_FLAGS = Change(
    "LPM_TRIE honours NOEXIST/EXIST, replaces in place when full, and get_next_key restarts from the "
    "leftmost prefix for a prefix it does not have (before: ENOSPC when full, flags ignored)",
    since=(6, 14), stable=(((6, 12), 118), ((6, 1), 192)))
BATCH_SKIPS_HOLES = Change(
    "a generic batch lookup skips keys without a value (an empty ARRAY_OF_MAPS slot) instead of "
    "failing with EINTR after three retries",
    since=(6, 14), stable=(((6, 12), 118), ((6, 1), 192)))
FREEZE_NEEDS_WRITE = Change(
    "BPF_MAP_FREEZE needs an fd that may write (EPERM for a read-only fd or a frozen map; before, "
    "a read-only fd could freeze and a second freeze was EBUSY)",
    since=(6, 12))

HASH_LOOKUP_AND_DELETE = Change(
    "BPF_MAP_LOOKUP_AND_DELETE_ELEM works on hash maps (before: ENOTSUPP; queues and stacks had it)",
    since=(5, 14))

UNIX_SOCKETS_IN_SOCKMAP = Change(
    "SOCKMAP and SOCKHASH take Unix sockets (before: EOPNOTSUPP)", since=(5, 15))
LATE_BATCH_TYPES = Change(
    "PERCPU_ARRAY, ARRAY_OF_MAPS, HASH_OF_MAPS and LPM_TRIE have batch operations (before: "
    "ENOTSUPP; 6.1 is the first release known here to have them, 5.10 the last without)", since=(6, 1))
PERCPU_VALUE_E2BIG = Change(
    "a per-CPU value over 32 KiB is refused at creation with E2BIG (before: ENOMEM when the "
    "per-CPU allocation fails; 6.1 first known, 5.10 last without)", since=(6, 1))

HASH_KEYS_OVER_512 = Change(
    "hash map keys may be longer than 512 bytes (MAX_BPF_STACK; before: E2BIG at creation; 6.1 "
    "first known, 5.10 last without)", since=(6, 1))

CHANGES = (LPM_FLAGS, BATCH_SKIPS_HOLES, FREEZE_NEEDS_WRITE, HASH_LOOKUP_AND_DELETE, UNIX_SOCKETS_IN_SOCKMAP,
           LATE_BATCH_TYPES, PERCPU_VALUE_E2BIG,
           HASH_KEYS_OVER_512)
"""Besides these, a map type exists from the release ``pybpf._sys.traits`` names (EINVAL before)."""


@functools.cache
def running() -> Version:
    """The running kernel's upstream version. Debian names it after the build number in
    /proc/version, Ubuntu in /proc/version_signature (their ``uname -r`` has an ABI number where
    the patch level would be)."""
    found = None
    try:
        with open("/proc/version_signature") as f:  # Ubuntu: "Ubuntu 5.15.0-91.101-generic 5.15.131"
            found = re.search(r"(\d+)\.(\d+)\.(\d+)\s*$", f.read())
    except OSError:
        pass
    if found is None:
        try:
            with open("/proc/version") as f:  # Debian: "... #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 (date)"
                found = re.search(r"#\d+\S* .*?Debian (\d+)\.(\d+)\.(\d+)", f.read())
        except OSError:
            pass
    found = found or re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", os.uname().release)
    if found is None:  # pragma: no cover - every Linux names its release so
        return (0, 0, 0)
    return int(found[1]), int(found[2]), int(found[3] or 0)


def version_of(release: tuple[int, ...] | None) -> Version:
    """A (major, minor) or (major, minor, patch) release as a full version (patch 0 when not given:
    a series' first release); None: the running kernel's."""
    if release is None:
        return running()
    major, minor, *rest = release
    return major, minor, rest[0] if rest else 0
