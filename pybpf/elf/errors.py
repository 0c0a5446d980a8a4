"""``ELFError``: an object file that cannot be read, naming the file and what was being read."""

from __future__ import annotations


class ELFError(ValueError):
    """A malformed, truncated or unsupported BPF object file; the message names the file and the part."""
