"""iif.resources helpers shared by every command."""


def test_peak_rss_is_the_one_reading_of_ru_maxrss():
    """iif.resources.peak_rss_mb is ru_maxrss in MiB (KiB on Linux), and bench, det-bench and train_detector
    use it rather than their own copies."""
    import ast
    import resource
    from pathlib import Path

    from iif.resources import peak_rss_mb

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    assert before <= peak_rss_mb() <= resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0 + 1e-9
    src = Path(__file__).resolve().parents[1] / "src" / "iif"
    users = [p.relative_to(src).as_posix() for p in src.rglob("*.py") if "ru_maxrss" in p.read_text(encoding="utf-8")]
    assert users == ["resources.py"], users
    for rel in ("bench/runner.py", "detection/bench.py", "detection/engine.py"):
        tree = ast.parse((src / rel).read_text(encoding="utf-8"))
        assert any(isinstance(n, ast.ImportFrom) and any(a.name == "peak_rss_mb" for a in n.names)
                   for n in ast.walk(tree)), rel
