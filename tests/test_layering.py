"""The layering rules of docs/ARCHITECTURE.md ("Layering rules"), checked by reading the source with ``ast``
(no module of ``iif`` is imported, so the check is fast and needs no torch).

Rules, over every ``src/iif/**/*.py`` (a package is its ``__init__.py``; ``from . import x`` names the module
``x`` when one exists, else the package):

1. No import circle among ``iif`` modules, counted twice:
   a. over module-level imports only (those that run when a module is imported: at top level, in ``if`` /
      ``try`` blocks and class bodies, ``if TYPE_CHECKING:`` included), a circle that can break at import time;
   b. over all imports, function-level ones included, the rule of ``shared/tools/house_check.py``: a
      function-level import that closes a circle hides a layering mistake (issue 16 removed two such circles:
      ``iif <-> iif.outputs`` through the root's ``__version__``, and ``train.engine <-> train.decoupled <->
      train.evaluation``).
   A circle is a strongly connected set of modules holding at least two modules that are not a package's
   ``__init__`` (a package importing its own sub-modules, which import a sibling through the package, is
   not one). No circle is accepted: the last exception (generator v1 ``detection.synthetic`` and v2
   ``detection.scenes_v2`` of the offline benchmark importing each other) ended when issue 16 moved what both
   share into ``detection.scenes_common`` and ``detection.scenes_draw``, which import neither.
2. ``iif.detection.*`` imports nothing of ``iif.bench*``: what both reports need is :mod:`iif.reporting`.
3. No module imports a name starting with ``_`` (dunder names such as ``__version__`` aside) from a module of
   another ``iif`` package, where a module's package is the first two parts of its dotted name (``iif.train``
   for ``iif.train.config``; each top-level module such as ``iif.adjusters`` is a package of its own).

Each rule is shown to fail on a small package built in ``tmp_path`` (the checker takes a folder).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "iif"

def _modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for the package folder ``root`` (its name is the top-level package)."""
    mods = {}
    for path in sorted(root.rglob("*.py")):
        parts = (root.name, *path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _imports(tree: ast.Module):
    """``(node, module_level)`` for every import statement; module-level means not inside a function body."""
    found = []

    def walk(node, in_function):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append((child, not in_function))
            walk(child, inner)

    walk(tree, False)
    return found


def _targets(mods: dict[str, Path], name: str, node) -> list[tuple[str, str | None]]:
    """``(imported iif module, imported name or None)`` of one import statement of module ``name``."""
    if isinstance(node, ast.Import):
        pairs = [(a.name, None) for a in node.names]
    else:
        if node.level:
            package = name if mods[name].name == "__init__.py" else name.rsplit(".", 1)[0]
            for _ in range(node.level - 1):
                package = package.rsplit(".", 1)[0]
            base = f"{package}.{node.module}" if node.module else package
        else:
            base = node.module or ""
        pairs = [(f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base, a.name) for a in node.names]
    out = []
    for target, imported in pairs:
        while target not in mods and "." in target:  # iif.x.Name -> iif.x
            target = target.rsplit(".", 1)[0]
        if target in mods and target != name:
            out.append((target, imported))
    return out


def _circles(mods: dict[str, Path], edges: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected sets (Tarjan, iterative) with at least two modules that are not an ``__init__``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found = []
    for start in sorted(mods):
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = set()
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.add(w)
                    if w == v:
                        break
                if sum(mods[c].name != "__init__.py" for c in comp) > 1:
                    found.append(frozenset(comp))
    return found


def layering_problems(root: Path) -> list[str]:
    """Every break of the rules of this file's docstring in the package folder ``root``, one line each."""
    root = Path(root)
    top = root.name
    mods = _modules(root)
    problems: list[str] = []
    all_edges: dict[str, set[str]] = {}
    module_edges: dict[str, set[str]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, module_level in _imports(tree):
            for target, imported in _targets(mods, name, node):
                all_edges.setdefault(name, set()).add(target)
                if module_level:
                    module_edges.setdefault(name, set()).add(target)
                if name.startswith(f"{top}.detection") and target.startswith(f"{top}.bench"):
                    problems.append(f"detection imports bench: {name} imports {target} (line {node.lineno})")
                if (imported and imported.startswith("_") and not imported.startswith("__")
                        and target.split(".")[:2] != name.split(".")[:2]):
                    problems.append(f"private name across packages: {name} imports {target}.{imported} "
                                    f"(line {node.lineno})")
    for comp in _circles(mods, module_edges):
        problems.append("import circle (module-level imports): " + " <-> ".join(sorted(comp)))
    for comp in _circles(mods, all_edges):
        problems.append("import circle (all imports): " + " <-> ".join(sorted(comp)))
    return sorted(set(problems))


# ------------------------------------------------------------------------------------------- the real tree


def test_the_package_keeps_the_layering_rules():
    problems = layering_problems(SRC)
    assert problems == [], "\n".join(problems)


def test_the_benchmark_generators_share_modules_that_import_neither():
    # v1 (synthetic) chooses the version and imports v2 (scenes_v2); both build on scenes_common/scenes_draw,
    # which import no generator, and v2 imports nothing of v1 (issue 16 removed that circle)
    mods = _modules(SRC)
    edges = {}
    for name in ("synthetic", "scenes_v2", "scenes_common", "scenes_draw"):
        full = f"iif.detection.{name}"
        tree = ast.parse(mods[full].read_text(encoding="utf-8"))
        edges[name] = {t.rsplit(".", 1)[-1] for node, _ in _imports(tree) for t, _ in _targets(mods, full, node)
                       if t.startswith("iif.detection.")}
    assert edges["synthetic"] >= {"scenes_v2", "scenes_common", "scenes_draw"}
    assert edges["scenes_v2"] >= {"scenes_common", "scenes_draw"} and "synthetic" not in edges["scenes_v2"]
    assert edges["scenes_common"] == set() and edges["scenes_draw"] == {"scenes_common"}


# ----------------------------------------------------------------------- each rule fails where it should


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    """A package ``iif`` under ``tmp_path`` holding ``files`` (relative path -> source); every folder gets an
    ``__init__.py`` (empty unless given)."""
    root = tmp_path / "iif"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for folder in [root, *[p for p in root.rglob("*") if p.is_dir()]]:
        if not (folder / "__init__.py").exists():
            (folder / "__init__.py").write_text("", encoding="utf-8")
    return root


def test_a_clean_tiny_package_passes(tmp_path):
    root = _package(tmp_path, {
        "errors.py": "class IIFError(ValueError):\n    pass\n",
        "weights.py": "from .errors import IIFError\n",
        "train/engine.py": "from ..weights import IIFError\nfrom .build import make\n"
                           "def f():\n    from ..errors import IIFError\n",
        "train/build.py": "from ._helpers import _private\ndef make():\n    pass\n",  # same package: allowed
        "train/_helpers.py": "_private = 1\n",
        "detection/report.py": "from ..reporting import cell\nfrom .. import __version__\n",
        "reporting.py": "def cell():\n    pass\n",
    })
    assert layering_problems(root) == []


def test_a_module_level_circle_is_found(tmp_path):
    root = _package(tmp_path, {"a.py": "from . import b\n", "b.py": "from .a import x\n"})
    assert layering_problems(root) == ["import circle (all imports): iif.a <-> iif.b",
                                       "import circle (module-level imports): iif.a <-> iif.b"]


def test_a_circle_closed_inside_a_function_is_found_over_all_imports_only(tmp_path):
    # the shape issue 16 removed: engine imports decoupled at module level, decoupled reaches back in a function
    root = _package(tmp_path, {
        "train/engine.py": "from .decoupled import prepare\ndef run_stage():\n    pass\n",
        "train/decoupled.py": "def prepare():\n    pass\ndef retrain():\n    from . import engine\n",
    })
    assert layering_problems(root) == ["import circle (all imports): iif.train.decoupled <-> iif.train.engine"]


def test_the_root_version_circle_is_found(tmp_path):
    # the other shape: the package root imports a module that reads the root's __version__ in a function
    root = _package(tmp_path, {
        "__init__.py": "from .frequency import ClassFrequency\n__version__ = '0'\n",
        "frequency.py": "from .outputs import write\nclass ClassFrequency:\n    pass\n",
        "outputs.py": "def write():\n    from . import __version__\n",
    })
    assert layering_problems(root) == ["import circle (all imports): iif <-> iif.frequency <-> iif.outputs"]


def test_a_package_importing_its_own_modules_is_not_a_circle(tmp_path):
    # registry reads a constant of its package, whose __init__ imports registry: one module and an __init__
    root = _package(tmp_path, {"data/__init__.py": "DEFAULT_ROOT = 'data'\nfrom .registry import build\n",
                               "data/registry.py": "from . import DEFAULT_ROOT, cifar\ndef build():\n    pass\n",
                               "data/cifar.py": "from ..errors import IIFError\n",
                               "errors.py": "IIFError = ValueError\n"})
    assert layering_problems(root) == []


def test_detection_importing_bench_is_found_at_any_level(tmp_path):
    root = _package(tmp_path, {
        "bench/report.py": "def cell():\n    pass\n",
        "detection/report.py": "from ..bench.report import cell\n",
        "detection/runs.py": "def f():\n    import iif.bench\n",
    })
    assert layering_problems(root) == ["detection imports bench: iif.detection.report imports iif.bench.report (line 1)",
                                       "detection imports bench: iif.detection.runs imports iif.bench (line 2)"]


def test_a_private_name_from_another_package_is_found(tmp_path):
    root = _package(tmp_path, {
        "adjusters.py": "def _log_prior():\n    pass\n",
        "losses/margin.py": "from ..adjusters import _log_prior\n",
        "train/config.py": "def _check():\n    pass\n",
        "detection/config.py": "def validate():\n    from iif.train.config import _check\n",
    })
    assert layering_problems(root) == [
        "private name across packages: iif.detection.config imports iif.train.config._check (line 2)",
        "private name across packages: iif.losses.margin imports iif.adjusters._log_prior (line 1)"]


def test_the_former_generator_circle_is_reported(tmp_path):
    # the shape issue 16 removed last, no longer allowed: v2 imports v1's helpers at module level, v1 reaches
    # v2 inside a function; and the same through a third module
    files = {"detection/synthetic.py": "def make():\n    from . import scenes_v2\n",
             "detection/scenes_v2.py": "from . import synthetic as v1\n"}
    assert layering_problems(_package(tmp_path / "two", files)) == [
        "import circle (all imports): iif.detection.scenes_v2 <-> iif.detection.synthetic"]
    files["detection/scenes_v2.py"] = "from .data import load\n"
    files["detection/data.py"] = "def load():\n    from .synthetic import make\n"
    assert layering_problems(_package(tmp_path / "three", files)) == [
        "import circle (all imports): iif.detection.data <-> iif.detection.scenes_v2 <-> iif.detection.synthetic"]
