"""The Python examples in the docs run (real settings in the docs, fewer steps in the test)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"

#: Per page, text replaced before running: real settings in the docs, a few steps in the test.
QUICK = {
    "api.md": {'strategy="dps", options={"steps": 100}': 'strategy="dps", options={"steps": 4}'}
}


@pytest.mark.parametrize("page", ["api.md"])
def test_docs_python_blocks_run(page):
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), flags=re.S)
    assert blocks, f"docs/{page} has no python example"
    source = "\n".join(blocks)
    for real, quick in QUICK.get(page, {}).items():
        assert real in source, f"docs/{page} no longer contains {real!r}; update QUICK"
        source = source.replace(real, quick)
    exec(compile(source, str(DOCS / page), "exec"), {"__name__": f"docs_{page}"})
