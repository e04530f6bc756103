"""The package layout rules of docs/ARCHITECTURE.md that a test can check by reading the source tree."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "iif"


def test_no_module_or_package_is_named_like_a_standard_library_module():
    # e.g. a train/logging.py shadows `logging` for anything run from inside that folder
    names = {p.stem for p in SRC.rglob("*.py") if p.stem != "__init__"}
    names |= {p.name for p in SRC.rglob("*") if p.is_dir() and (p / "__init__.py").exists()}
    clash = sorted(names & set(sys.stdlib_module_names))
    assert clash == [], f"modules named like standard-library ones: {clash}"


def test_readers_sit_below_frequency():
    """iif.readers imports nothing of iif but errors, so ClassFrequency (and data.lists) can build on it."""
    tree = ast.parse((SRC / "readers.py").read_text(encoding="utf-8"))
    internal = {node.module for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.level > 0}
    assert internal == {"errors"}
