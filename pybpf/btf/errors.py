"""Errors of the BTF package: malformed BTF (a ``ValueError``); a kernel refusal is ``BTFLoadError``."""

from __future__ import annotations

from ..errors import BTFLoadError

__all__ = ["BTFError", "BTFLoadError"]


class BTFError(ValueError):
    """BTF data that is malformed, truncated or inconsistent; the message says what and where."""
