"""A progress line for long work: on a terminal it redraws one stderr line; piped, it is silent."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Count steps of ``what`` (out of ``total`` if known) and redraw at most ten times a second."""

    def __init__(self, what: str, total: int | None = None, stream: TextIO | None = None) -> None:
        self.what, self.total, self.count = what, total, 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last = 0.0

    def step(self, n: int = 1) -> None:
        """Record ``n`` more steps."""
        self.count += n
        now = time.monotonic()
        if self.enabled and now - self._last >= 0.1:
            self._last = now
            self._draw()

    def _draw(self) -> None:
        of = f"/{self.total}" if self.total is not None else ""
        self.stream.write(f"\r{self.what}: {self.count}{of}")
        self.stream.flush()

    def done(self) -> None:
        """Clear the line (only if one was drawn)."""
        if self.enabled and self._last:
            self.stream.write("\r\033[K")
            self.stream.flush()
