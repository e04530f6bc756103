"""Your own data, classification (issue 14, item 5): the one-tree split rule and its warning, ``val_counts`` in
``final_metrics.json``, class-average accuracy in ``iif posthoc``'s table, ``--adjust iif:<variant>^<gamma>`` in
``iif eval`` / ``iif predict``, and the bench summary's deployable / few-shot-collapse rule.

Every expected number is computed by hand (written out in the comments) or by a direct numpy / scipy route.
"""

import json

import numpy as np
import pytest
import torch
from scipy.stats import norm

from iif.bench.posthoc import Candidate, evaluate_candidates
from iif.bench.report import aggregate_seeds, dumps_summary, plotted_rows, ranked_table
from iif.bench.summary import COLLAPSE_POINTS, deployable, few_shot_collapse, summarize
from iif.cli import main
from iif.data import build_datasets
from iif.data.longtail import held_out_counts
from iif.errors import IIFError
from iif.train.strategies import build_adjuster, parse_adjuster

# A one-tree layout (no train/ val/ test/ folders): images per class.
TREE = [10, 10, 4, 3, 2, 1]
# By hand, val_fraction 0.1 and test_fraction 0.2: train keeps 1, then val 1 (n >= 2), then test 1 (n >= 3), then
# test int(0.2 n) and val int(0.1 n) where larger. n=10: test 2, val 1, train 7; n=4: 1, 1, 2; n=3: 1, 1, 1;
# n=2: test 0, val 1, train 1; n=1: train 1.
TRAIN, VAL, TEST = [7, 7, 2, 1, 1, 1], [1, 1, 1, 1, 1, 0], [2, 2, 1, 1, 0, 0]
NAMES = [f"c{k}" for k in range(len(TREE))]


def _png_tree(root, counts, size=8):
    from PIL import Image

    rng = np.random.default_rng(0)
    for k, n in enumerate(counts):
        d = root / f"c{k}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(d / f"{i}.png")


def _bincount(ds, c=len(TREE)):
    return np.bincount(np.asarray(ds.targets), minlength=c).tolist()


# ------------------------------------------------------------------------------------------------ split rule


@pytest.mark.parametrize("n, expect", [(1, (1, 0, 0)), (2, (1, 1, 0)), (3, (1, 1, 1)), (4, (2, 1, 1)),
                                       (10, (7, 1, 2)), (0, (0, 0, 0))])
def test_held_out_counts_by_hand(n, expect):
    # (train, val, test) for val_fraction 0.1, test_fraction 0.2: wants int(0.1 n), int(0.2 n)
    assert held_out_counts(n, int(0.1 * n), int(0.2 * n)) == expect


def test_held_out_counts_priorities_and_absent_splits():
    # val_per_class=5 on 4 images: train 1, val 1, test 1 reserved; test wants 0 -> 1; val takes 5 capped at 4-1-1 = 2
    assert held_out_counts(4, 5, 0) == (1, 2, 1)
    # no validation asked for: test still gets its one image at n >= 2 (train 1 first)
    assert held_out_counts(2, 0, 0, val=False) == (1, 0, 1)
    assert held_out_counts(3, 0, 0, val=False, test=False) == (3, 0, 0)
    # large classes follow their fractions exactly (the split of a big tree is unchanged)
    assert held_out_counts(100, 10, 20) == (70, 10, 20)
    with pytest.raises(IIFError, match="counts >= 0"):
        held_out_counts(-1, 0, 0)


def test_one_tree_split_counts_and_the_warning_naming_the_classes(tmp_path):
    _png_tree(tmp_path, TREE)
    s = build_datasets("folder", root=str(tmp_path))
    assert s.freq.image_counts.tolist() == TRAIN
    assert _bincount(s.val) == VAL and _bincount(s.test) == TEST
    files = [set(p for p, _ in d.samples) for d in (s.train, s.val, s.test)]
    assert not (files[0] & files[1] or files[0] & files[2] or files[1] & files[2])
    warnings = [n for n in s.train.notes if n.startswith("warning:")]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    w = warnings[0]
    # c5 (1 image) has no validation image; c4 (2 images) and c5 have no test image; nobody else is named
    assert "1 of 6 classes have no validation images: c5 (1 image)" in w
    assert "2 of 6 classes have no test images: c4 (2 images), c5 (1 image)" in w
    assert not any(f"c{k} (" in w for k in range(4))
    # classes of 3 or more images everywhere: no warning at all
    other = tmp_path / "ok"
    _png_tree(other, [5, 3, 3])
    assert not [n for n in build_datasets("folder", root=str(other)).train.notes if n.startswith("warning:")]
    # val_per_class=0 asks for no validation split: only the test gap is a gap
    s0 = build_datasets("folder", root=str(tmp_path), val_per_class=0)
    w0 = [n for n in s0.train.notes if n.startswith("warning:")]
    assert s0.val is None and len(w0) == 1 and "validation" not in w0[0].split(".")[0]
    assert "no test images: c5 (1 image)" in w0[0]  # c4's 2 images: train 1, test 1 when no validation is carved


def test_train_tree_without_val_or_test_follows_the_same_minimums(tmp_path):
    # train/ only: test is held out first (train 1, room for val 1, then test 1 at n >= 3), val is carved after.
    # n=3: test 1, then val carved from 2 -> 1, train 1; n=2: test 0 (train 1 + val 1 come first), val 1, train 1
    _png_tree(tmp_path / "train", [3, 2])
    s = build_datasets("folder", root=str(tmp_path))
    assert s.freq.image_counts.tolist() == [1, 1]
    assert _bincount(s.val, 2) == [1, 1] and _bincount(s.test, 2) == [1, 0]
    w = [n for n in s.train.notes if n.startswith("warning:")]
    assert len(w) == 1 and "1 of 2 classes have no test images: c1 (2 images)" in w[0] and "validation images" not in w[0]


# --------------------------------------------------------------------------------- a run on the tree (CLI)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """``iif train folder_posthoc`` (1 epoch, tiny CNN) on the tree above; its stderr."""
    import contextlib
    import io

    root = tmp_path_factory.mktemp("own")
    _png_tree(root / "tree", TREE)
    err = io.StringIO()
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with contextlib.redirect_stderr(err):
            rc = main(["train", "folder_posthoc", f"data.root={root / 'tree'}", "schedule.epochs=1",
                       "model.backbone_kwargs.width=4", "runtime.tensorboard=false", "--out", str(root / "run"),
                       "--quiet", "--device", "cpu"])
    finally:
        torch.set_num_threads(old)
    assert rc == 0, err.getvalue()
    return root, err.getvalue()


def test_training_warns_once_and_final_metrics_records_val_counts(run):
    root, err = run
    lines = [ln for ln in err.splitlines() if "no validation images" in ln]
    assert len(lines) == 1 and lines[0].startswith("iif: warning: folder ")
    saved = json.loads((root / "run" / "final_metrics.json").read_text())
    assert saved["val_counts"] == VAL and all(isinstance(v, int) for v in saved["val_counts"])
    assert "raw" in saved and "iif:smooth" in saved  # the metrics themselves are still there


def _normit_by_hand(counts, gamma):
    """-Phi^-1(n / K) with K = the number of training images (scipy, not iif), to the power gamma."""
    n = np.asarray(counts, dtype=np.float64)
    return (-norm.ppf(n / n.sum())) ** gamma


def test_adjust_iif_power_is_w_to_the_gamma_times_z_by_hand():
    counts = [300, 200, 150, 100, 50, 20, 5, 2]
    z = torch.randn(7, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got = build_adjuster("iif:normit^0.25", counts)(None, z)
    expect = torch.as_tensor(_normit_by_hand(counts, 0.25))[None, :] * z
    torch.testing.assert_close(got, expect, rtol=1e-12, atol=1e-12)
    # the exponent changes the weights (0.25 is not 1): the plain spec differs
    assert not torch.allclose(build_adjuster("iif:normit", counts)(None, z), got)
    assert parse_adjuster("iif:smooth^0.5") == ("iif", "smooth^0.5")
    for bad in ("iif:normit^0", "iif:normit^-1", "iif:normit^x", "iif:^2", "iif:normit^inf"):
        with pytest.raises(IIFError, match=r"iif:<variant>\^<gamma>"):
            parse_adjuster(bad)


def test_eval_and_predict_accept_iif_power_with_the_hand_computed_logits(run, tmp_path, capsys):
    from iif.predict import Predictor, load_image

    root, _ = run
    ckpt = root / "run" / "best.pt"
    out = tmp_path / "eval.json"
    assert main(["eval", str(ckpt), "--adjust", "iif:normit^0.25", "--json", str(out),
                 "--save-logits", str(tmp_path / "logits")]) == 0
    metrics = json.loads(out.read_text())
    z = np.load(tmp_path / "logits" / "logits_test.npy").astype(np.float64)
    y = np.load(tmp_path / "logits" / "labels_test.npy")
    pred = (_normit_by_hand(TRAIN, 0.25)[None, :] * z).argmax(axis=1)
    assert metrics["iif:normit^0.25"]["top1"] == pytest.approx(100.0 * np.mean(pred == y), abs=1e-9)
    # predict: the adjusted logits are the raw ones times w ** 0.25, class by class
    paths = sorted(str(p) for p in (root / "tree").rglob("*.png"))[:4]
    raw, adj = Predictor(ckpt), Predictor(ckpt, adjust="iif:normit^0.25")
    x = torch.stack([raw.transform(load_image(p, raw.channels)) for p in paths])
    z_raw = raw.logits(x).double()
    by_hand = z_raw * torch.as_tensor(_normit_by_hand(TRAIN, 0.25))[None, :]
    torch.testing.assert_close(adj.logits(x).double(), by_hand, rtol=1e-5, atol=1e-5)
    capsys.readouterr()
    assert main(["predict", str(ckpt), *paths, "--adjust", "iif:normit^0.25", "--format", "json", "--topk", "1"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["top"][0]["index"] for r in rows] == by_hand.argmax(1).tolist()
    probs = torch.softmax(by_hand, 1).max(1).values
    assert [r["top"][0]["score"] for r in rows] == pytest.approx(probs.tolist(), abs=1e-5)
    assert main(["predict", str(ckpt), paths[0], "--adjust", "iif:normit^0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("iif predict: error:") and "gamma > 0" in err[0]


# ------------------------------------------------------------------------------------------ posthoc table


def _class_avg(pred, y):
    return 100.0 * np.mean([np.mean(pred[y == c] == c) for c in np.unique(y)])


def test_posthoc_table_shows_class_average_beside_top1(tmp_path, capsys):
    rng = np.random.default_rng(3)
    counts = [80, 40, 10, 3]
    # an imbalanced test split (the head dominates top-1) and logits that favour the head
    y = np.repeat(np.arange(4), [40, 20, 5, 3])
    z = rng.normal(size=(y.size, 4)) + np.array([1.5, 0.8, 0.0, -0.5]) + 1.2 * np.eye(4)[y]
    np.save(tmp_path / "z.npy", z.astype(np.float32))
    np.save(tmp_path / "y.npy", y)
    (tmp_path / "counts.json").write_text(json.dumps(counts))
    assert main(["posthoc", "--logits", str(tmp_path / "z.npy"), "--labels", str(tmp_path / "y.npy"),
                 "--counts", str(tmp_path / "counts.json")]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    assert header[:7] == ["method", "strategy", "variant", "head", "top-1", "class-avg", "Δ"]
    assert "Δ uses class-average, not top-1" in out  # the note under the table says which one Δ uses
    zz = z.astype(np.float32).astype(np.float64)
    soft_avg = _class_avg(zz.argmax(1), y)
    rows = {ln.split()[0] + " " + ln.split()[2]: ln.split() for ln in out.splitlines()[2:] if ln and ln[0] != " "
            and ln.split()[0] in ("softmax", "IIF")}
    soft = rows["softmax -"]
    assert soft[4] == f"{100 * np.mean(zz.argmax(1) == y):.1f}" and soft[5] == f"{soft_avg:.1f}" and soft[6] == "ref"
    n = np.asarray(counts, dtype=np.float64)
    w = np.log((n.sum() + 1) / (n + 1)) + 1  # smooth, Eq. 14 by hand
    pred = (zz * w).argmax(1)
    sm = rows["IIF smooth"]
    assert sm[5] == f"{_class_avg(pred, y):.1f}" and sm[6] == f"{_class_avg(pred, y) - soft_avg:+.1f}"
    assert soft[4] != soft[5]  # the two metrics differ on this imbalanced split, which is why both are shown


# --------------------------------------------------------------------------- bench summary: what it recommends


def test_few_shot_collapse_rule_by_hand():
    assert COLLAPSE_POINTS == 10.0
    assert few_shot_collapse(39.9, 50.0) and not few_shot_collapse(40.0, 50.0)  # more than 10 points below
    assert few_shot_collapse(0.0, 5.0) and not few_shot_collapse(0.0, 0.0)  # 0 where softmax is above 0
    assert not few_shot_collapse(None, 50.0) and not few_shot_collapse(10.0, None)  # no verdict without a value
    assert deployable({"reproduce": "iif train x"}) and deployable({}) and not deployable({"reproduce": "(not: y)"})


C = 3
COUNTS = [60, 30, 10]  # many > 50: class 0; few < 15: class 2 (the few-shot group is class 2 alone)
Y = np.repeat(np.arange(C), 4)


def _onehot(pred):
    z = np.zeros((len(pred), C))
    z[np.arange(len(pred)), pred] = 2.0
    return z


def _pred(wrong):
    """Right on all images but ``wrong[c]`` of class c (each wrong one predicted as the next class)."""
    p = Y.copy()
    for c, k in enumerate(wrong):
        p[np.flatnonzero(Y == c)[:k]] = (c + 1) % C
    return _onehot(p)


def test_bench_recommendation_passes_over_collapsed_and_undeployable_rows():
    # validation errors per class (4 images each) -> class-average and few-shot (class 2) accuracy by hand:
    #   softmax  [2,2,1] -> (50+50+75)/3 = 58.3, few 75
    #   cRT      [0,0,3] -> (100+100+25)/3 = 75.0, few 25: 50 points below softmax's 75 -> collapse, passed over
    #   tuned    [0,0,0] -> 100, few 100, but no command deploys it -> passed over
    #   LA       [2,1,1] -> (50+75+75)/3 = 66.7, few 75 -> recommended (rank 3)
    # test: softmax [1,1,1] (few 75), LA [0,0,4] (few 0 -> flagged on test, reported only), the others [0,0,0]
    cands = [Candidate("softmax", "end-to-end", None, "linear", _pred([1, 1, 1]), _pred([2, 2, 1])),
             Candidate("cRT", "decoupled", None, "linear", _pred([0, 0, 0]), _pred([0, 0, 3])),
             Candidate("IIF tuned", "post-process", "smooth^0.5", "linear", _pred([0, 0, 0]), _pred([0, 0, 0])),
             Candidate("logit adjustment", "post-hoc", "tau=1", "linear", _pred([0, 0, 4]), _pred([2, 1, 1]))]
    rows, details = evaluate_candidates(cands, Y, COUNTS, val_labels=Y, many=50, few=15)
    assert [d["val_few"] for d in details] == [75.0, 25.0, 100.0, 75.0]
    assert [r["top1"] for r in rows][3] == pytest.approx(100 * 8 / 12)
    details = [{"seed": 0, **r, **d} for r, d in zip(rows, details)]
    means, stds = aggregate_seeds([rows])
    cmds = {"softmax": "iif train s", "cRT": "iif train c", "IIF tuned": "(not reproducible: w^0.5)",
            "logit adjustment": "iif eval la"}
    for r in means:
        r["reproduce"] = cmds[r["method"]]
    ranked, _, summary = summarize(means, stds, details, {"num_classes": C, "seeds": 1, "val_size": 12})
    assert [(r["method"], r["rank"]) for r in ranked] == [("IIF tuned", 1), ("cRT", 2), ("logit adjustment", 3),
                                                          ("softmax", 4)]
    rec = summary["recommended"]
    assert rec["method"] == "logit adjustment" and rec["rank"] == 3 and rec["reproduce"] == "iif eval la"
    over = summary["passed_over"]
    assert [p["rank"] for p in over] == [1, 2]
    assert over[0]["why"] == "no command deploys it (not reproducible: w^0.5)"
    assert over[1]["why"] == "its few-shot validation accuracy collapses (25.0% against softmax's 75.0%)"
    assert any(ln.startswith("Passed over (ranked higher on validation): rank 1 IIF tuned") for ln in summary["lines"])
    # LA's few-shot TEST accuracy is 0 where softmax's is 75: flagged and said, not used to choose
    assert {r["method"]: r["few_collapse"] for r in ranked} == {
        "IIF tuned": False, "cRT": False, "logit adjustment": True, "softmax": False}
    assert summary["collapse"]["flagged_on_test"] == ["logit adjustment / post-hoc / tau=1 (linear head)"]
    assert any(ln.startswith("Few-shot warning: the recommended row's few-shot test accuracy (0.0%) collapses "
                             "against softmax's (75.0%)") for ln in summary["lines"])
    # the table shows the test class-average beside top-1 and marks the flagged few cell
    table = ranked_table(ranked)
    head = table.splitlines()[0]
    assert head.index("top-1") < head.index("test avg") < head.index("Δ test")
    la_line = next(ln for ln in table.splitlines() if "logit adjustment" in ln)
    # LA on test: [0,0,4] errors -> top-1 8/12 = 66.7, class-average (100+100+0)/3 = 66.7, few 0.0 flagged
    assert "0.0 !" in la_line
    # the per-class plot marks the recommendation, not the passed-over rank 1
    assert [lab for lab, _ in plotted_rows(ranked, "linear", rec["label"])] == [
        "softmax", "logit adjustment / post-hoc / tau=1 (recommended)",
        "IIF tuned / post-process / smooth^0.5 (best post-process, rank 1)", "cRT / decoupled (best decoupled, rank 2)"]
    summary_json = json.loads(dumps_summary(ranked, summary))
    assert [r["few_collapse"] for r in summary_json["rows"]] == [False, False, True, False]


# ------------------------------------------------------------ the tuned row's recorded command deploys it


@pytest.mark.slow
def test_tuned_post_process_row_records_a_command_that_gives_its_metrics(tmp_path, monkeypatch):
    """A bench whose tuned row must pick an exponent (gamma 0.5 is the only one offered): the row's ``reproduce``
    is ``iif train ... && iif eval RUN/last.pt --adjust iif:<variant>^0.5``, and running it gives the row's numbers."""
    import functools
    import shlex

    from iif.bench import rows as bench_rows, runner as R
    from iif.train import build_splits

    tiny = ["schedule.epochs=1", "model.backbone_kwargs.width=4", "decoupled.epochs=1"]
    # looked up by rows._posthoc_rows
    monkeypatch.setattr(bench_rows, "tuned_posthoc_candidate",
                        functools.partial(bench_rows.tuned_posthoc_candidate, gammas=(0.5,)))
    old = torch.get_num_threads()
    try:
        res = R.run_bench(dataset="digits-lt", out=tmp_path / "bench", heads=["linear"], overrides=tiny, quick=True,
                          splits=build_splits(R.bench_config("digits-lt", overrides=tiny)), plots=False, threads=1,
                          log=lambda *_: None)
    finally:
        torch.set_num_threads(old)
    row = next(r for r in res["rows"] if (r["method"], r["strategy"]) == ("IIF tuned", "post-process"))
    assert row["variant"].endswith("^0.5")
    spec = f"iif:{row['variant']}"
    assert row["reproduce"].startswith("iif train digits_lt_decoupled ") and row["reproduce"].endswith(
        f"/last.pt --adjust {spec}")
    saved = json.loads((tmp_path / "bench" / "summary.json").read_text())["rows"]
    assert any(r.get("reproduce") == row["reproduce"] for r in saved)
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    try:
        for part in row["reproduce"].split(" && "):
            argv = shlex.split(part)
            assert main(argv[1:] + (["--quiet"] if argv[1] == "train" else [])) == 0, part
    finally:
        torch.set_num_threads(old)
    run_dir = tmp_path / shlex.split(row["reproduce"].split(" && ")[1])[2]
    metrics = json.loads((run_dir.parent / "eval_test.json").read_text())[spec]
    assert metrics["top1"] == pytest.approx(row["top1"], abs=1e-9)
    for k in ("many", "medium", "few"):
        assert metrics[k] == pytest.approx(row[k], abs=1e-9), k
    assert metrics["ece"] == pytest.approx(row["ece"], abs=1e-3)
