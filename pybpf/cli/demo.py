"""pybpf demo: each socket map doing its job on this kernel."""

from __future__ import annotations

from .command import Context, Words, verb


@verb("demo")
def demo(ctx: Context, words: Words) -> int:
    """Show each socket map doing its job on the live kernel, in about a second (exit status 1 if
    a step fails)."""
    from ..apps import demo as steps

    words.end()
    results = steps.run()
    return 0 if all(r.ok for r in results) else 1
