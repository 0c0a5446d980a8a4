"""Every ```python block in README.md and docs/*.md runs (each file's blocks in order, one namespace)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import pybpf

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_examples_run(page: Path, no_fd_leak: None) -> None:
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    blocks = BLOCK.findall(page.read_text())
    assert blocks or page.name == "README.md", f"{page.name} has no examples"
    for i, code in enumerate(blocks):
        exec(compile(code, f"{page.name}[block {i}]", "exec"), namespace)
    for value in list(namespace.values()):
        if isinstance(value, pybpf.Map):
            value.close()
