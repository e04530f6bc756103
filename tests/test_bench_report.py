"""The bench report's summary (iif.bench.summary, iif.bench.report): recommendation on validation only,
folding of identical rows, the uncertainty line and the underfit warning, on logits built by hand."""

import json
import math

import numpy as np
import pytest
import torch

from iif.bench.posthoc import ROW_KEYS, Candidate, evaluate_candidates, posthoc_candidates
from iif.bench.report import (
    RESULT_KEYS,
    aggregate_seeds,
    dumps_results,
    dumps_summary,
    per_class_series,
    plotted_rows,
    printed_report,
    ranked_table,
)
from iif.bench.summary import chance_corrected, class_avg_difference, logit_relation, summarize

C = 3
COUNTS = [60, 30, 10]


def _onehot(pred, c=C, big=2.0):
    """Logits whose argmax is ``pred`` (a margin ``big`` over the other classes)."""
    z = np.zeros((len(pred), c))
    z[np.arange(len(pred)), pred] = big
    return z


def _score(cands, y_te, y_va, seed=0, reference=()):
    rows, details = evaluate_candidates(cands, y_te, COUNTS, val_labels=y_va, many=50, few=15, reference=reference)
    return rows, [{"seed": seed, **r, **d} for r, d in zip(rows, details)]


def _summarize(per_seed_rows, details, val_size=None, num_classes=C):
    means, stds = aggregate_seeds(per_seed_rows)
    meta = {"num_classes": num_classes, "seeds": len(per_seed_rows), "val_size": val_size, "test_size": None}
    return summarize(means, stds, details, meta)


# 12 validation and 12 test images, 4 per class.
Y = np.repeat(np.arange(C), 4)


def _with_errors(n_wrong_per_class):
    """Predictions right on all but ``n_wrong_per_class[c]`` images of class c (each wrong one -> next class)."""
    pred = Y.copy()
    for c, k in enumerate(n_wrong_per_class):
        idx = np.flatnonzero(Y == c)[:k]
        pred[idx] = (c + 1) % C
    return pred


def test_recommends_the_validation_best_row_even_when_another_row_wins_on_test():
    # class-average accuracy by hand (4 images per class):
    #   softmax: val wrong (2,2,2) -> 50.0 | test wrong (2,2,2) -> 50.0
    #   A:       val wrong (0,1,1) -> 83.3 | test wrong (1,1,1) -> 75.0   <- validation best
    #   B:       val wrong (1,1,1) -> 75.0 | test wrong (0,0,0) -> 100.0  <- test best
    soft = Candidate("softmax", "end-to-end", None, "linear", _onehot(_with_errors([2, 2, 2])), _onehot(_with_errors([2, 2, 2])))
    a = Candidate("cRT", "decoupled", None, "linear", _onehot(_with_errors([1, 1, 1])), _onehot(_with_errors([0, 1, 1])))
    b = Candidate("logit adjustment", "post-hoc", "tau=1", "linear", _onehot(_with_errors([0, 0, 0])), _onehot(_with_errors([1, 1, 1])))
    rows, details = _score([soft, a, b], Y, Y)
    ranked, stds, summary = _summarize([rows], details, val_size=12)
    rec = summary["recommended"]
    assert (rec["method"], rec["strategy"]) == ("cRT", "decoupled")
    assert rec["val_class_avg"] == pytest.approx(100 * (1 + 0.75 + 0.75) / 3)
    assert rec["test_class_avg"] == pytest.approx(75.0)
    assert rec["delta_val"] == pytest.approx(100 * (1 + 0.75 + 0.75) / 3 - 50.0)
    assert rec["delta_test"] == pytest.approx(25.0)
    assert [r["method"] for r in ranked] == ["cRT", "logit adjustment", "softmax"]
    assert [r["rank"] for r in ranked] == [1, 2, 3]
    la = ranked[1]
    assert la["test_class_avg"] == 100.0 and la["delta_test"] == pytest.approx(50.0)  # best on test, ranked 2nd
    assert summary["lines"][0].startswith("Recommended by validation: cRT / decoupled (linear head)")
    # the printed report leads with the recommendation, then the ranked table
    text = printed_report(ranked, None, summary)
    assert text.splitlines()[0] == summary["lines"][0]
    assert text.index("cRT") < text.index("logit adjustment") < text.index("softmax  ")


def test_class_avg_difference_and_standard_error_by_hand():
    y = np.array([0, 0, 0, 1, 1])
    a = np.array([0, 0, 1, 1, 0])  # right: 1 1 0 | 1 0
    b = np.array([0, 1, 1, 1, 1])  # right: 1 0 0 | 1 1
    diff, se = class_avg_difference(a, b, y)
    # d = (0, 1, 0 | 0, -1); class means 1/3 and -1/2 -> diff = 100 * (1/3 - 1/2) / 2
    assert diff == pytest.approx(100 * (1 / 3 - 1 / 2) / 2)
    var0 = np.var([0, 1, 0], ddof=1)  # 1/3
    var1 = np.var([0, -1], ddof=1)  # 1/2
    assert se == pytest.approx(100 / 2 * math.sqrt(var0 / 3 + var1 / 2))
    # one class: the usual paired standard error sd(d) / sqrt(n)
    d1, se1 = class_avg_difference(np.array([0, 0, 1, 0]), np.array([1, 0, 1, 1]), np.zeros(4, int))
    d = np.array([1, 0, 0, 1])  # a right: 1 1 0 1, b right: 0 1 0 0
    assert d1 == pytest.approx(100 * d.mean()) and se1 == pytest.approx(100 * d.std(ddof=1) / 2)


def test_uncertainty_line_when_the_validation_difference_is_within_noise():
    # A beats softmax by one validation image out of 12: well within two standard errors
    soft = Candidate("softmax", "end-to-end", None, "linear", _onehot(_with_errors([1, 1, 1])), _onehot(_with_errors([1, 1, 1])))
    a = Candidate("IIF", "post-process", "smooth", "linear", _onehot(_with_errors([0, 1, 1])), _onehot(_with_errors([0, 1, 1])))
    rows, details = _score([soft, a], Y, Y)
    _, _, summary = _summarize([rows], details, val_size=12)
    diff, se = class_avg_difference(_with_errors([0, 1, 1]), _with_errors([1, 1, 1]), Y)
    assert diff == pytest.approx(100 / 12) and 0 < diff < 2 * se
    u = summary["uncertainty"]
    assert u["within_noise"] and u["delta_val_se"] == pytest.approx(se)
    assert f"Validation has only 12 images: the difference {diff:+.1f} ± {se:.1f} is within noise" in u["text"]
    assert u["text"] in summary["lines"]


def test_a_large_validation_difference_is_not_called_noise():
    y = np.repeat(np.arange(C), 100)
    soft_pred = y.copy()
    soft_pred[::2] = (y[::2] + 1) % C  # 50% right
    soft = Candidate("softmax", "end-to-end", None, "linear", _onehot(y), _onehot(soft_pred))
    a = Candidate("cRT", "decoupled", None, "linear", _onehot(y), _onehot(y))  # 100% right
    rows, details = _score([soft, a], y, y)
    _, _, summary = _summarize([rows], details, val_size=300)
    assert not summary["uncertainty"]["within_noise"]
    assert not any("within noise" in line for line in summary["lines"])


@pytest.mark.parametrize("val_acc_wrong, warned", [((3, 3, 3), True), ((1, 1, 1), False)])
def test_underfit_warning_relative_to_chance(val_acc_wrong, warned):
    # 3 classes: chance 33.3%. wrong (3,3,3) -> 25% (below chance); wrong (1,1,1) -> 75%, skill (75-33.3)/66.7 = 0.625
    soft = Candidate("softmax", "end-to-end", None, "linear", _onehot(Y), _onehot(_with_errors(val_acc_wrong)))
    rows, details = _score([soft], Y, Y)
    _, _, summary = _summarize([rows], details, val_size=12)
    assert bool(summary["warnings"]) is warned
    if warned:
        assert "Underfit warning: the softmax backbone (linear head) reaches 25.0%" in summary["warnings"][0]
        assert "chance is 33.3%" in summary["warnings"][0]


def test_chance_corrected_threshold_by_hand():
    # 10 classes: chance 10%; 32.5% closes exactly a quarter of the way to 100%
    assert chance_corrected(32.5, 10) == pytest.approx(0.25)
    assert chance_corrected(10.0, 10) == 0.0 and chance_corrected(100.0, 100) == 1.0


def test_raw_base2_base10_post_process_fold_with_their_scale():
    rng = np.random.default_rng(0)
    z, zv = rng.normal(size=(30, C)), rng.normal(size=(30, C))
    y = rng.integers(0, C, 30)
    cands, _ = posthoc_candidates(z, COUNTS, head="cosine", val_logits=zv)
    rows, details = _score(cands, y, y)
    by = {(d["method"], d["variant"]): d for d in details}
    assert by[("IIF", "base2")]["same_as"] == {"method": "IIF", "strategy": "post-process", "variant": "raw", "head": "cosine"}
    assert by[("IIF", "base2")]["relation"] == f"positive multiple (x {1 / math.log(2):.4g})"
    assert by[("IIF", "base10")]["relation"] == f"positive multiple (x {1 / math.log(10):.4g})"
    ranked, _, summary = _summarize([rows], details, val_size=30)
    folded = {f["row"]: f for f in summary["folded"]}
    assert set(folded) >= {"IIF / post-process / base2 (cosine head)", "IIF / post-process / base10 (cosine head)"}
    assert "ln 2 and ln 10" in folded["IIF / post-process / base2 (cosine head)"]["why"]
    raw = next(r for r in ranked if r["variant"] == "raw")
    assert raw["rank"] is not None and raw["same_as"] is None
    # folded rows sit right after their row, without a rank, and the table shows them in one line
    i = ranked.index(raw)
    assert [r["variant"] for r in ranked[i + 1:i + 3]] == ["base2", "base10"]
    assert all(r["rank"] is None for r in ranked[i + 1:i + 3])
    line = next(ln for ln in ranked_table(ranked).splitlines() if " raw " in ln)
    assert line.endswith("= base2, base10")
    # smooth is not a rescaling of raw: not folded
    assert by[("IIF", "smooth")]["same_as"] is None


def test_tau_norm_at_zero_is_softmax_and_folds():
    from iif.adjusters import tau_normalize

    g = torch.Generator().manual_seed(0)
    w, f = torch.randn(C, 5, generator=g), torch.randn(40, 5, generator=g)
    assert torch.equal(tau_normalize(w, 0.0), w)  # w / ||w||^0 = w
    z = (f @ w.T).double().numpy()
    zt = (f @ tau_normalize(w, 0.0).T).double().numpy()
    y = np.arange(40) % C
    soft = Candidate("softmax", "end-to-end", None, "linear", z[:20], z[20:])
    tau = Candidate("tau-norm", "post-hoc", "tau=0", "linear", zt[:20], zt[20:])
    tau1 = Candidate("tau-norm", "post-hoc", "tau=1", "linear", (f @ tau_normalize(w, 1.0).T).double().numpy()[:20],
                     (f @ tau_normalize(w, 1.0).T).double().numpy()[20:])
    rows, details = _score([soft, tau, tau1], y[:20], y[20:])
    assert details[1]["same_as"]["method"] == "softmax" and details[1]["relation"] == "identical logits"
    _, _, summary = _summarize([rows], details, val_size=20)
    f0 = next(f for f in summary["folded"] if f["row"].startswith("tau-norm / post-hoc / tau=0"))
    assert f0["same_as"] == "softmax / end-to-end (linear head)" and "tau = 0" in f0["why"]


def test_balanced_softmax_equals_la_loss_at_tau_one_and_their_rows_fold():
    from iif.losses.margin import BalancedSoftmaxLoss, LogitAdjustedLoss

    g = torch.Generator().manual_seed(1)
    z1 = torch.randn(16, C, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = z1.detach().clone().requires_grad_(True)
    t = torch.randint(0, C, (16,), generator=g)
    bs, la = BalancedSoftmaxLoss(COUNTS), LogitAdjustedLoss(COUNTS, tau=1.0)
    l1, l2 = bs(z1, t), la(z2, t)
    l1.backward()
    l2.backward()
    # z + ln n and z + ln(n / K) differ by ln K for every class: same loss, same gradient
    assert l1.item() == pytest.approx(l2.item(), rel=1e-6)
    torch.testing.assert_close(z1.grad, z2.grad, rtol=1e-6, atol=1e-7)
    # the same training therefore gives the same logits: the rows fold, with the reason named
    rng = np.random.default_rng(2)
    zt, zv = rng.normal(size=(20, C)), rng.normal(size=(20, C))
    y = rng.integers(0, C, 20)
    soft = Candidate("softmax", "end-to-end", None, "linear", rng.normal(size=(20, C)), rng.normal(size=(20, C)))
    e2e = [Candidate("Balanced Softmax", "end-to-end", None, "linear", zt, zv),
           Candidate("LA loss", "end-to-end", "tau=1", "linear", zt.copy(), zv.copy())]
    r1, d1 = _score([soft], y, y)
    r2, d2 = _score(e2e, y, y, reference=[soft])  # scored separately, as the bench scores end-to-end rows
    assert "delta_val" in d2[0]  # compared with the softmax of the earlier call
    _, _, summary = _summarize([r1 + r2], d1 + d2, val_size=20)
    (f,) = [f for f in summary["folded"] if f["row"].startswith("LA loss")]
    assert f["same_as"] == "Balanced Softmax / end-to-end (linear head)" and "ln K" in f["why"]


def test_rows_that_differ_on_one_image_or_in_one_seed_are_not_folded():
    base = _onehot(_with_errors([1, 1, 1]))
    other = base.copy()
    other[0] = _onehot([2])[0]  # one validation image predicted differently
    y = Y
    soft = Candidate("softmax", "end-to-end", None, "linear", _onehot(y), _onehot(y))
    a = Candidate("cRT", "decoupled", None, "linear", base, base)
    b = Candidate("LWS", "decoupled", None, "linear", base, other)
    _, d = _score([soft, a, b], y, y)
    assert d[2]["same_as"] is None
    # identical in seed 0, different in seed 1: not folded
    r0, d0 = _score([soft, a, Candidate("LWS", "decoupled", None, "linear", base, base)], y, y, seed=0)
    r1, d1 = _score([soft, a, b], y, y, seed=1)
    assert d0[2]["same_as"] is not None
    _, _, summary = _summarize([r0, r1], d0 + d1, val_size=12)
    assert summary["folded"] == []


def test_logit_relation_kinds():
    z = np.array([[1.0, 2.0, -1.0], [0.5, -0.5, 3.0]])
    assert logit_relation(z, z) == "identical logits"
    assert logit_relation(3 * z, z) == "positive multiple (x 3)"
    assert logit_relation(z + np.array([[4.0], [-1.0]]), z) == "same softmax (logits differ by a constant per image)"
    assert logit_relation(z ** 3, z) == "same predictions"


def test_seeds_give_delta_mean_and_std():
    soft = Candidate("softmax", "end-to-end", None, "linear", _onehot(_with_errors([2, 2, 2])), _onehot(_with_errors([2, 2, 2])))
    a0 = Candidate("cRT", "decoupled", None, "linear", _onehot(_with_errors([0, 0, 0])), _onehot(_with_errors([0, 0, 0])))
    a1 = Candidate("cRT", "decoupled", None, "linear", _onehot(_with_errors([1, 1, 1])), _onehot(_with_errors([1, 1, 1])))
    r0, d0 = _score([soft, a0], Y, Y, seed=0)
    r1, d1 = _score([soft, a1], Y, Y, seed=1)
    ranked, stds, summary = _summarize([r0, r1], d0 + d1, val_size=12)
    # deltas +50 and +25: mean 37.5, sample std 25 / sqrt(2)
    rec = summary["recommended"]
    assert rec["delta_val"] == pytest.approx(37.5) and rec["delta_val_std"] == pytest.approx(25 / math.sqrt(2))
    crt_std = stds[[r["method"] for r in ranked].index("cRT")]
    assert crt_std["delta_test"] == pytest.approx(25 / math.sqrt(2))
    assert "+37.5 ± 17.7 vs softmax" in summary["lines"][0]


def test_no_validation_split_means_no_recommendation():
    soft = Candidate("softmax", "end-to-end", None, "linear", _onehot(Y))
    a = Candidate("cRT", "decoupled", None, "linear", _onehot(_with_errors([1, 0, 0])))
    rows, details = _score([soft, a], Y, None)
    ranked, _, summary = _summarize([rows], details)
    assert summary["recommended"] is None and summary["selected_on"] is None
    assert [r["method"] for r in ranked] == ["softmax", "cRT"] and all(r["rank"] is None for r in ranked)
    assert ranked[1]["delta_test"] == pytest.approx(-25 / 3)
    assert summary["lines"][0].startswith("No validation split: nothing is ranked or recommended")


def test_results_json_keeps_exactly_the_row_keys_and_summary_json_has_the_rest():
    soft = Candidate("softmax", "end-to-end", None, "linear", _onehot(Y), _onehot(_with_errors([1, 1, 1])))
    a = Candidate("cRT", "decoupled", None, "linear", _onehot(Y), _onehot(Y))
    rows, details = _score([soft, a], Y, Y)
    ranked, _, summary = _summarize([rows], details, val_size=12)
    assert [tuple(r) for r in json.loads(dumps_results(ranked))] == [ROW_KEYS] * 2
    doc = json.loads(dumps_summary(ranked, summary))
    assert set(doc) == {"summary", "rows"}
    assert [tuple(r) for r in doc["rows"]] == [RESULT_KEYS] * 2
    assert doc["rows"][0]["method"] == "cRT" and doc["rows"][0]["rank"] == 1
    assert doc["summary"]["recommended"]["label"] == "cRT / decoupled (linear head)"
    assert doc["summary"]["recommended"]["delta_val"] == pytest.approx(25.0)


def test_per_class_plot_shows_softmax_recommended_and_best_of_each_strategy():
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(C), 10)
    soft = Candidate("softmax", "end-to-end", None, "linear", _onehot(rng.integers(0, C, 30)), _onehot(rng.integers(0, C, 30)))
    cands = [soft]
    for m, st, wrong in (("logit adjustment", "post-hoc", 0), ("tau-norm", "post-hoc", 9), ("cRT", "decoupled", 2),
                         ("LWS", "decoupled", 6), ("IIF", "post-process", 4)):
        p = y.copy()
        p[:wrong] = (p[:wrong] + 1) % C
        cands.append(Candidate(m, st, None, "linear", _onehot(p), _onehot(p)))
    rows, details = _score(cands, y, y)
    ranked, _, summary = _summarize([rows], details, val_size=30)
    labels = [lab for lab, _ in plotted_rows(ranked, "linear")]
    assert labels == ["softmax", "logit adjustment / post-hoc (recommended)", "cRT / decoupled (best decoupled, rank 2)",
                      "IIF / post-process (best post-process, rank 3)"]
    series = per_class_series(ranked, details, "linear")
    assert list(series) == labels
    assert series["logit adjustment / post-hoc (recommended)"] == [100.0, 100.0, 100.0]


def test_an_algebraic_identity_that_rounding_broke_is_noted_not_folded():
    y = Y
    soft = Candidate("softmax", "end-to-end", None, "linear", _onehot(_with_errors([2, 2, 2])), _onehot(_with_errors([2, 2, 2])))
    bs = _onehot(_with_errors([1, 1, 1]))
    la = bs.copy()
    la[0] = _onehot([2])[0]  # one test image flipped (it was predicted 1), as float rounding in training can do
    rows, details = _score([soft, Candidate("Balanced Softmax", "end-to-end", None, "linear", bs, bs),
                            Candidate("LA loss", "end-to-end", "tau=1", "linear", la, bs)], y, y)
    _, _, summary = _summarize([rows], details, val_size=12)
    assert summary["folded"] == []
    (note,) = summary["notes"]
    assert "Balanced Softmax / end-to-end (linear head) and LA loss / end-to-end / tau=1 (linear head) are the same method" in note
    assert note in summary["lines"]


def test_report_md_leads_with_the_summary_and_plots_the_recommended_rows(tmp_path):
    y = np.repeat(np.arange(C), 10)
    soft_pred = y.copy()
    soft_pred[y == 2] = 0  # softmax misses the tail class
    la_pred = y.copy()
    la_pred[:1] = 1
    cands = [Candidate("softmax", "end-to-end", None, "linear", _onehot(soft_pred), _onehot(soft_pred)),
             Candidate("logit adjustment", "post-hoc", "tau=1", "linear", _onehot(la_pred), _onehot(la_pred))]
    rows, details = _score(cands, y, y)
    means, stds = aggregate_seeds([rows])
    meta = {"dataset": "hand", "num_classes": C, "train_counts": COUNTS, "imbalance_ratio": 6.0, "val_size": 30,
            "test_size": 30, "arch": "none", "epochs": 0, "heads": ["linear"], "seeds": 1, "many": 50, "few": 15,
            "quick": True, "device": "cpu", "k_total": float(sum(COUNTS))}
    from iif.bench.report import write_report

    write_report(tmp_path, means, stds, details, meta, plot_data={"linear": {}})
    text = (tmp_path / "report.md").read_text().splitlines()
    assert text[:3] == ["# iif bench: hand", "", "## Summary"]
    assert text[4].startswith("- Recommended by validation: logit adjustment / post-hoc / tau=1 (linear head): validation 96.7%")
    assert "(+30.0 vs softmax)" in text[4]
    assert "## Ranked results" in text
    for png in ("per_class_linear.png", "deltas.png"):
        assert (tmp_path / png).stat().st_size > 1000


def test_keys_the_runner_adds_to_rows_are_kept_and_the_recommended_command_is_shown():
    soft = Candidate("softmax", "end-to-end", None, "linear", _onehot(Y), _onehot(_with_errors([1, 1, 1])))
    a = Candidate("cRT", "decoupled", None, "linear", _onehot(Y), _onehot(Y))
    rows, details = _score([soft, a], Y, Y)
    means, stds = aggregate_seeds([rows])
    for r in means:
        r["reproduce"] = f"iif train x {r['method']}"
    ranked, _, summary = summarize(means, stds, details, {"num_classes": C, "seeds": 1, "val_size": 12})
    doc = json.loads(dumps_summary(ranked, summary))
    assert [r["reproduce"] for r in doc["rows"]] == ["iif train x cRT", "iif train x softmax"]
    assert list(doc["rows"][0])[:len(RESULT_KEYS)] == list(RESULT_KEYS)
    assert summary["recommended"]["reproduce"] == "iif train x cRT"
    assert "Reproduce the recommended row: `iif train x cRT`" in summary["lines"]


def test_softmax_is_recommended_when_nothing_beats_it_on_validation():
    soft = Candidate("softmax", "end-to-end", None, "linear", _onehot(_with_errors([1, 1, 1])), _onehot(Y))
    a = Candidate("cRT", "decoupled", None, "linear", _onehot(Y), _onehot(_with_errors([1, 0, 0])))  # better on test only
    rows, details = _score([soft, a], Y, Y)
    ranked, _, summary = _summarize([rows], details, val_size=12)
    assert [r["method"] for r in ranked] == ["softmax", "cRT"]
    assert summary["recommended"]["method"] == "softmax" and summary["uncertainty"] is None
    assert summary["lines"][0].startswith("Recommended by validation: softmax itself (softmax / end-to-end (linear head))")


def test_a_row_without_a_command_is_passed_over_for_the_best_deployable_row():
    soft = Candidate("softmax", "end-to-end", None, "linear", _onehot(Y), _onehot(_with_errors([2, 2, 2])))
    tuned = Candidate("IIF tuned", "post-process", "smooth^0.75", "linear", _onehot(Y), _onehot(Y))
    la = Candidate("logit adjustment", "post-hoc", "tau=1", "linear", _onehot(Y), _onehot(_with_errors([1, 0, 0])))
    rows, details = _score([soft, tuned, la], Y, Y)
    means, stds = aggregate_seeds([rows])
    cmds = {"softmax": "iif train s", "IIF tuned": "(not reproducible: w^0.75)", "logit adjustment": "iif eval la"}
    for r in means:
        r["reproduce"] = cmds[r["method"]]
    _, _, summary = summarize(means, stds, details, {"num_classes": C, "seeds": 1, "val_size": 12})
    # ranks on validation: tuned 100, LA 91.7, softmax 50; tuned has no command, so LA (rank 2) is recommended
    assert summary["recommended"]["method"] == "logit adjustment" and summary["recommended"]["rank"] == 2
    assert summary["passed_over"] == [{"label": "IIF tuned / post-process / smooth^0.75 (linear head)", "rank": 1,
                                       "why": "no command deploys it (not reproducible: w^0.75)"}]
    assert "Reproduce the recommended row: `iif eval la`" in summary["lines"]
    assert any(ln.startswith("Passed over (ranked higher on validation): rank 1 IIF tuned") for ln in summary["lines"])


def test_rows_close_to_the_recommendation_are_named():
    y = np.repeat(np.arange(C), 100)

    def pred(wrong):  # wrong[c] errors in class c
        p = y.copy()
        for c, k in enumerate(wrong):
            idx = np.flatnonzero(y == c)[:k]
            p[idx] = (c + 1) % C
        return _onehot(p)

    cands = [Candidate("softmax", "end-to-end", None, "linear", pred([50, 50, 50]), pred([50, 50, 50])),
             Candidate("cRT", "decoupled", None, "linear", pred([0, 0, 0]), pred([0, 0, 0])),          # val 100
             Candidate("LWS", "decoupled", None, "linear", pred([0, 0, 3]), pred([0, 0, 3])),          # val 99
             Candidate("logit adjustment", "post-hoc", "tau=1", "linear", pred([30, 30, 30]), pred([30, 30, 30]))]  # val 70
    rows, details = _score(cands, y, y)
    _, _, summary = _summarize([rows], details, val_size=300)
    se = summary["uncertainty"]["delta_val_se"]
    # cRT vs softmax: d = 1 on half of each class, 0 elsewhere -> per-class sample var 0.25 * 100/99
    assert se == pytest.approx(100 / 3 * math.sqrt(3 * 0.25 * 100 / 99 / 100))
    assert summary["uncertainty"]["close_ranks"] == [2]  # LWS is 1 point behind (< 2 SE); LA is 30 behind
    assert f"Rank 2 is within {2 * se:.1f} points of it on validation" in " ".join(summary["lines"])
