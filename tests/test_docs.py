"""The Python examples in README.md and docs/*.md run as written.

Each ```python block is executed in a fresh namespace inside a temporary working directory, so an example
that stops working (a renamed function, a changed signature) fails the suite. Blocks fenced as
```python no-run are shown to readers but not executed (they need data a user downloads).
"""

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```", re.S | re.M)


def _blocks():
    for doc in DOCS:
        for i, code in enumerate(BLOCK.findall(doc.read_text())):
            yield pytest.param(code, id=f"{doc.name}-{i}")


def test_docs_have_examples():
    assert any(True for _ in _blocks()), "README.md should carry at least one runnable example"


@pytest.mark.parametrize("code", list(_blocks()))
def test_doc_example_runs(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "<doc example>", "exec"), {"__name__": "__doc_example__"})
