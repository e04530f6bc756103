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
    """iif.readers imports nothing of iif but errors, so ClassFrequency (and data.lists) can build on it.

    The package's modules may import each other (``from .common import ...``); anything above the package
    (``from ..x import``) must be ``errors``."""
    package = SRC / "readers"
    siblings = {p.stem for p in package.glob("*.py")}
    above, inside = set(), set()
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                assert not any(a.name == "iif" or a.name.startswith("iif.") for a in node.names), path.name
            if isinstance(node, ast.ImportFrom):
                assert node.level > 0 or not (node.module or "").startswith("iif"), path.name
                if node.level == 1:
                    inside.add(node.module)
                elif node.level > 1:
                    above.add(node.module)
    assert above == {"errors"}
    assert inside <= siblings and "common" in inside
