"""The Python examples in the docs run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.parametrize("page", ["api.md"])
def test_docs_python_blocks_run(page):
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), flags=re.S)
    assert blocks, f"docs/{page} has no python example"
    exec(compile("\n".join(blocks), str(DOCS / page), "exec"), {"__name__": f"docs_{page}"})
