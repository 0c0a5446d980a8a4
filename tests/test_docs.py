"""Every ```python block in README.md and docs/*.md runs (each file's blocks in order, one namespace).

A block after ``<!-- requires: PROBE NAME -->`` (a function of tests/probes.py and its argument,
e.g. ``map_type BLOOM_FILTER``) runs only where the kernel has that mechanism; the page then runs
all its other blocks and skips, naming what the kernel lacks."""

from __future__ import annotations

import re
from pathlib import Path

import probes
import pytest

import pybpf

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^(?:<!-- requires: (\w+) (\w+) -->\n)?```python\n(.*?)^```", re.S | re.M)


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_examples_run(page: Path, no_fd_leak: None) -> None:
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    blocks = BLOCK.findall(page.read_text())
    assert blocks or page.name == "README.md", f"{page.name} has no examples"
    lacking = []
    for i, (probe, name, code) in enumerate(blocks):
        reason = getattr(probes, probe)(name) if probe else None
        if reason:
            lacking.append(reason)
            continue
        exec(compile(code, f"{page.name}[block {i}]", "exec"), namespace)
    for value in list(namespace.values()):
        if isinstance(value, pybpf.Map):
            value.close()
    if lacking:
        probes.skip(f"{page.name}: every other example ran; " + "; ".join(lacking))
