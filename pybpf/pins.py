"""Pin directories in bpffs, made and used safely: bpffs is world-writable (1777), so a directory
another user made first, or a symlink planted in place of a pin, must never be trusted.

The rules (applied to every pin pybpf opens or makes): no NUL in a path; no symlink anywhere on
it; every directory owned by this user or root and not writable by others unless sticky; pins
reused by name (``Map.from_pin(..., owner_only=True)``, object loading) owned by this user or
root; directories pybpf makes are 0700 unless the caller asks for another mode, whatever the umask.
"""

from __future__ import annotations

import os
from pathlib import Path

from ._sys import bpffs

UnsafePathError = bpffs.UnsafePathError


def make_pin_dir(path: str | os.PathLike[str], mode: int = 0o700) -> Path:
    """Create ``path`` (and missing parents) in bpffs with exactly ``mode``, or check the existing
    directory against the rules above; ``UnsafePathError`` (a ``PermissionError``) if it fails them.
    Give a wider ``mode`` (e.g. 0o755) only for a directory meant to be shared with other users."""
    if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o7777:
        raise ValueError(f"mode must be a permission mode such as 0o700, not {mode!r}")
    return Path(bpffs.make_dir(path, mode))


def check_pin_dir(path: str | os.PathLike[str]) -> Path:
    """``path`` if it is a directory pybpf may use for pins (see the rules above), else
    ``UnsafePathError``; ``FileNotFoundError`` if it does not exist."""
    text = bpffs.check_text(path, "pin directory")
    bpffs.check_dirs(text + "/")
    return Path(text)
