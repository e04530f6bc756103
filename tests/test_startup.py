"""Start-up cost of the ``iif`` command (issue 16, Performance): ``--version`` and ``--help`` build the whole
parser without importing torch or torchvision, which take about 2 s to import on a 2-core machine.

The checks look at ``sys.modules`` in a fresh interpreter rather than at a timing, so they cannot flake on a
loaded machine. The public API stays whole: every name in ``iif.__all__`` resolves through the lazy
``iif.__getattr__`` to the object its defining module holds.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

HEAVY = ("torch", "torchvision")


def _modules_after(code: str) -> dict:
    """Run ``code`` in a fresh interpreter, then report which of :data:`HEAVY` it imported and what it printed."""
    probe = (f"import sys, io, contextlib\nbuf = io.StringIO()\nwith contextlib.redirect_stdout(buf):\n"
             + "".join(f"    {line}\n" for line in code.splitlines())
             + f"print(__import__('json').dumps({{'heavy': [m for m in {HEAVY!r} if m in sys.modules], "
               "'out': buf.getvalue()}))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_iif_and_building_the_parser_import_no_torch():
    got = _modules_after("import iif, iif.cli\nparser = iif.cli.build_parser()\nprint(parser.prog)")
    assert got["out"] == "iif\n"
    assert got["heavy"] == []


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["stats", "--help"], ["weights", "--help"],
                                  ["det-data", "--help"]])
def test_version_and_help_import_no_torch(argv):
    code = ("import iif.cli\ntry:\n    iif.cli.main(%r)\nexcept SystemExit as exc:\n    assert exc.code == 0, exc.code"
            % (argv,))
    got = _modules_after(code)
    assert got["heavy"] == []
    if argv == ["--version"]:
        from iif.cli import package_version

        assert got["out"] == f"iif {package_version()}\n"
    else:
        assert got["out"].startswith("usage: iif")


def test_every_public_name_resolves_to_its_defining_module():
    import importlib

    import iif

    for name in iif.__all__:
        value = getattr(iif, name)
        if name in ("IIFError", "__version__"):
            continue
        module = importlib.import_module(f"iif.{iif._LAZY[name]}")
        assert value is getattr(module, name), name
    namespace: dict = {}
    exec("from iif import *", namespace)
    assert set(iif.__all__) - {"__version__"} <= set(namespace)
    assert set(iif.__all__) <= set(dir(iif))
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        iif.not_a_name  # noqa: B018


def test_names_restated_for_the_parser_match_their_source():
    """The CLI restates a few constants so that --help needs no torch; they must equal the originals."""
    from iif.cli import det_data, weights as cli_weights
    from iif.detection import synthetic
    from iif.weights import VARIANTS

    assert cli_weights.VARIANT_NAMES == tuple(VARIANTS)
    assert det_data.DEFAULT_GENERATOR == synthetic.DEFAULT_GENERATOR
    assert det_data.GENERATORS == tuple(synthetic.GENERATORS)


def test_stats_counts_without_torch(tmp_path):
    """``iif stats`` only counts: it reads the source and prints the report with numpy alone."""
    source = tmp_path / "counts.json"
    source.write_text("[500, 50, 5]")
    got = _modules_after(f"import iif.cli\nassert iif.cli.main(['stats', {str(source)!r}, '--format', 'json']) == 0")
    assert got["heavy"] == []
    report = json.loads(got["out"])
    assert (report["num_classes"], report["num_images"], report["imbalance_factor"]) == (3, 555, 500 / 5)


@pytest.mark.parametrize("variant", ["smooth", "normit"])
def test_weights_computes_without_torch(tmp_path, variant):
    """``iif weights`` evaluates Table III with numpy (normit: scipy's ndtri) and prints what iif_weights gives."""
    source = tmp_path / "labels.txt"
    source.write_text("0\n0\n0\n1\n1\n2\n3\n")  # counts [3, 2, 1, 1], K = 7
    got = _modules_after(f"import iif.cli\nassert iif.cli.main(['weights', {str(source)!r}, '--variant', {variant!r}, "
                         "'--format', 'json']) == 0")
    assert got["heavy"] == []
    weights = json.loads(got["out"])["weights"]
    from iif.weights import iif_weights

    assert weights == iif_weights([3, 2, 1, 1], variant).tolist()  # the float32 values, bit for bit
    if variant == "smooth":  # by hand: ln((K + 1) / (n + 1)) + 1, rounded to float32
        import numpy as np

        assert weights == [float(np.float32(math.log(8 / (n + 1)) + 1)) for n in (3, 2, 1, 1)]


def test_submodules_import_iif_used_to_load_stay_attributes():
    """``import iif`` once imported these sub-modules eagerly; ``iif.losses.build_loss`` and the like still work."""
    code = ("import iif, types\nfor name in iif._SUBMODULES:\n    assert isinstance(getattr(iif, name), types.ModuleType)\n"
            "print(iif.losses.build_loss.__module__, iif.readers.read_json.__name__)")
    got = _modules_after(code)
    assert got["out"] == "iif.losses.registry read_json\n"
    assert "torch" in got["heavy"]  # the eager import again, on use: adjusters, losses, weights need torch
