"""``iif bench`` end to end on the embedded digits-LT (1 epoch, a few head steps: seconds)."""

import json
import os

import numpy as np
import pytest
import torch

from iif.bench import runner as R
from iif.bench.posthoc import ROW_KEYS
from iif.bench.report import aggregate_seeds
from iif.cli import main
from iif.errors import IIFError
from iif.weights import VARIANTS

FAST = ["schedule.epochs=1"]
#: A shorter stage 2 than digits_lt_decoupled's 4 epochs: explicit, and shown in the decoupled rows' strategy.
FAST_STAGE2 = [*FAST, "decoupled.epochs=1"]
DECOUPLED = "decoupled [decoupled.epochs=1]"


@pytest.fixture(scope="module")
def splits():
    return _splits()


def _splits():
    from iif.train import build_splits

    return build_splits(R.bench_config("digits-lt"))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, splits):
    out = tmp_path_factory.mktemp("bench") / "out"
    res = R.run_bench(dataset="digits-lt", out=out, quick=True, overrides=FAST_STAGE2, splits=splits,
                      log=lambda *_: None)
    return out, res


def test_results_json_has_exact_keys_all_variants_both_heads(quick_run):
    out, res = quick_run
    rows = json.loads((out / "results.json").read_text())
    assert rows and all(list(r) == list(ROW_KEYS) for r in rows)  # exactly the 9 published keys
    for head in ("cosine", "linear"):
        for strategy in ("post-process", DECOUPLED):
            got = {r["variant"] for r in rows if r["head"] == head and r["method"] == "IIF" and r["strategy"] == strategy}
            assert got == set(VARIANTS), (head, strategy)
        methods = {r["method"] for r in rows if r["head"] == head}
        assert {"softmax", "IIF tuned", "logit adjustment", "tau-norm", "cRT", "LWS"} <= methods
    for r in rows:
        for k in ("top1", "ece"):
            assert 0.0 <= r[k] <= 100.0
    report = (out / "report.md").read_text()
    assert "## Timings" in report and "ECE before" in report
    for png in ("iif_weights.png", "per_class_linear.png", "weight_norms_cosine.png", "reliability_linear.png"):
        assert (out / png).stat().st_size > 1000
    assert not (out / "results_std.json").exists()
    # no temporary folders left beside the output
    assert not [p for p in os.listdir(out.parent) if p.startswith(".out.")]


def test_softmax_row_matches_metrics_on_the_cached_logits(quick_run):
    # the softmax top-1 is the backbone's own test accuracy: recompute it from details' per-class values
    out, res = quick_run
    d = next(d for d in res["details"] if d["method"] == "softmax" and d["head"] == "linear")
    row = next(r for r in res["rows"] if r["method"] == "softmax" and r["head"] == "linear")
    # digits-LT's test split is balanced (40 per class), so top-1 IS the mean per-class accuracy: the two
    # differ only by float rounding (a one-image error would be 0.25 points)
    assert row["top1"] == pytest.approx(np.mean(d["per_class"]), abs=1e-9)


class _Guard:
    """Stands in for the test labels: any use raises."""

    def __getattr__(self, name):
        raise AssertionError(f"test labels were touched ({name})")

    def __array__(self, *a, **k):
        raise AssertionError("test labels were converted to an array")

    def __len__(self):
        raise AssertionError("test labels were measured")


def test_posthoc_rows_and_tuning_never_read_test_labels(splits):
    from iif.train import extract_features, fit

    base = R.bench_base("digits-lt", overrides=FAST)
    res = fit(base.config(), splits=splits, device="cpu")
    (f_va, z_va, y_va), (f_te, z_te, _) = (extract_features(res.model, getattr(splits, s), "cpu", 512) for s in ("val", "test"))
    bb = R._Row(base, [], via_eval=True)
    counts = splits.freq.image_counts
    cands, _ = R._posthoc_rows(res.model, f_te, z_te, f_va, z_va, y_va.numpy(), counts, float(counts.sum()), "linear", bb)
    # the test labels are not an argument: every choice (tuned IIF, tau of tau-norm) is made on validation
    tuned = [c for c in cands if c.method == "IIF tuned"]
    assert len(tuned) == 1 and tuned[0].val_logits is not None
    assert all(c.info["reproduce"]["command"] is None or "iif eval" in c.info["reproduce"]["command"] for c in cands)
    # tau-norm is iif eval's taunorm:tau (one implementation): rows w_c / ||w_c||^tau, the bias dropped
    tn = next(c for c in cands if c.method == "tau-norm")
    tau = float(tn.variant.split("=")[1])
    W = res.model.classifier.weight.detach()
    expected = torch.nn.functional.linear(f_te, W / W.norm(dim=1, keepdim=True) ** tau)
    assert np.allclose(tn.test_logits, expected.double().numpy(), atol=1e-5)
    assert tn.info["reproduce"]["eval_adjust"] == f"taunorm:{tau:g}"


def test_full_bench_adds_end_to_end_rows_and_seeds_write_std(tmp_path, splits):
    out = tmp_path / "full"
    res = R.run_bench(out=out, seeds=2, heads=["linear"], overrides=FAST_STAGE2, splits=splits,
                      plots=False, log=lambda *_: None)
    rows = json.loads((out / "results.json").read_text())
    stds = json.loads((out / "results_std.json").read_text())
    assert [tuple(r)[:len(ROW_KEYS)] for r in stds] == [ROW_KEYS] * len(rows)
    assert [(r["method"], r["strategy"]) for r in stds] == [(r["method"], r["strategy"]) for r in rows]
    e2e = {r["method"] for r in rows if r["strategy"] == "end-to-end"}
    assert e2e == {"softmax", "IIF loss", "IIF_CSL", "Balanced Softmax", "LA loss", "LDAM-DRW"}
    # the mean really is the mean of the two seeds (recomputed from details.json)
    det = json.loads((out / "details.json").read_text())["rows"]
    crt = [d for d in det if d["method"] == "cRT"]
    assert [d["seed"] for d in crt] == [0, 1]
    row = next(r for r in rows if r["method"] == "cRT")
    assert row["top1"] == pytest.approx((crt[0]["top1"] + crt[1]["top1"]) / 2)
    std = next(r for r in stds if r["method"] == "cRT")
    assert std["top1"] == pytest.approx(abs(crt[0]["top1"] - crt[1]["top1"]) / np.sqrt(2))
    assert all(r["head"] == "linear" for r in rows)


def test_aggregate_seeds_mean_and_std_by_hand():
    a = {"method": "m", "strategy": "s", "variant": "v", "head": "h", "top1": 50.0, "many": None, "medium": 10.0, "few": 0.0, "ece": 5.0}
    b = dict(a, top1=70.0, medium=20.0, few=None, ece=7.0)
    mean, std = aggregate_seeds([[a], [b]])
    assert mean[0]["top1"] == 60.0 and std[0]["top1"] == pytest.approx(np.sqrt(200.0))
    assert mean[0]["many"] is None and mean[0]["few"] == 0.0 and std[0]["few"] == 0.0
    ta = dict(a, method="IIF tuned", variant="smooth")
    tb = dict(b, method="IIF tuned", variant="raw^0.5")
    mean, _ = aggregate_seeds([[ta], [tb]])
    assert len(mean) == 1 and mean[0]["variant"] == "smooth/raw^0.5"


# ------------------------------------------------------------------------------------------- bad input


def test_unknown_dataset_lists_known_ones(tmp_path, capsys):
    assert main(["bench", "--dataset", "cifar1000-lt", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "unknown dataset 'cifar1000-lt'" in err and "digits-lt" in err and "fashion-mnist-lt" in err
    assert err.count("\n") == 1


def test_dataset_not_found_offline_gives_instructions(tmp_path, capsys, monkeypatch):
    import iif.data.mnist as mnist

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr(mnist, "FASHION_DEBIAN_DIR", str(tmp_path / "no-debian-package"))
    code = main(["bench", "--dataset", "fashion-mnist-lt", "--quick", "--out", str(tmp_path / "o"), f"data.root={empty}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and str(empty) in err and "Fashion-MNIST not found" in err


def test_existing_results_refused_without_force_then_replaced(quick_run, tmp_path, capsys, splits):
    out, _ = quick_run
    before = (out / "results.json").read_text()
    assert main(["bench", "--out", str(out), "--quick", "schedule.epochs=1"]) == 2
    assert "--force" in capsys.readouterr().err
    assert (out / "results.json").read_text() == before
    with pytest.raises(IIFError, match="already holds"):
        R.run_bench(out=out, quick=True, overrides=FAST, splits=splits)
    # --force replaces only what iif wrote: a file added to the old output since is refused and kept
    (out / "stale.txt").write_text("old")
    with pytest.raises(IIFError, match=r"also holds files iif did not write there \(stale.txt\)"):
        R.run_bench(out=out, quick=True, heads=["linear"], overrides=FAST_STAGE2, splits=splits, force=True,
                    plots=False, log=lambda *_: None)
    assert (out / "stale.txt").read_text() == "old" and (out / "results.json").read_text() == before
    (out / "stale.txt").unlink()
    # --force: written beside, then renamed into place
    R.run_bench(out=out, quick=True, heads=["linear"], overrides=FAST_STAGE2, splits=splits, force=True,
                plots=False, log=lambda *_: None)
    rows = json.loads((out / "results.json").read_text())
    assert {r["head"] for r in rows} == {"linear"}
    assert not [p for p in os.listdir(out.parent) if p.startswith(".out.")]


@pytest.mark.parametrize("argv, match", [
    (["--heads", "cosine,mlp"], "--heads must list"),
    (["--seeds", "0"], "--seeds must be >= 1"),
    (["--dataset", "digits-lt", "--config", "x.yaml"], None),
])
def test_bad_bench_options(tmp_path, capsys, argv, match):
    if match is None:  # argparse refuses --dataset with --config
        with pytest.raises(SystemExit) as exc:
            main(["bench", "--out", str(tmp_path / "o")] + argv)
        assert exc.value.code == 2
        return
    assert main(["bench", "--out", str(tmp_path / "o"), "--quick"] + argv) == 2
    assert match in capsys.readouterr().err


def test_dataset_without_packaged_config_writes_the_defaults_its_commands_name(tmp_path, splits, monkeypatch):
    from iif.bench import base as B

    monkeypatch.setattr(B, "_packaged_base", lambda name, packaged: None)  # looked up by base.bench_base
    out = tmp_path / "o"
    tiny = ["model.arch=small_cnn", "model.backbone_kwargs={width: 4}", "data.augment=none", "schedule.epochs=1",
            "decoupled.epochs=1", "optim.batch_size=32"]
    res = R.run_bench(dataset="digits-lt", out=out, quick=True, heads=["linear"], overrides=tiny, splits=splits,
                      plots=False, log=lambda *_: None)
    from iif.train import load_config

    assert load_config(out / R.BASE_CONFIG) == load_config(None)  # the library's defaults, as a file
    command = res["details"][0]["reproduce"]["command"]
    assert command.startswith(f"iif train {out / R.BASE_CONFIG} data.name=digits-lt ")
