"""Post-hoc table (iif.bench.posthoc) and the ``iif posthoc`` command, checked by hand on 4 samples."""

import json
import math

import numpy as np
import pytest

from iif.bench import posthoc as ph
from iif.bench.posthoc import (
    ROW_KEYS,
    fit_temperature,
    posthoc_table,
    select_posthoc_iif,
    tuned_posthoc_candidate,
)
from iif.cli import main
from iif.errors import IIFError
from iif.frequency import ClassFrequency

COUNTS = [90, 9, 1]  # K = 100
# smooth weights by hand: ln(101/91)+1 = 1.104, ln(101/10)+1 = 3.313, ln(101/2)+1 = 4.922
SMOOTH = [math.log(101 / 91) + 1, math.log(101 / 10) + 1, math.log(101 / 2) + 1]
LOGITS = np.array(
    [
        [2.0, 0.5, 0.1],  # y=0  softmax -> 0 ok   | smooth [2.21, 1.66, 0.49] -> 0 ok
        [2.0, 1.0, 0.2],  # y=1  softmax -> 0 wrong| smooth [2.21, 3.31, 0.98] -> 1 ok
        [1.0, 0.2, 0.3],  # y=2  softmax -> 0 wrong| smooth [1.10, 0.66, 1.48] -> 2 ok
        [1.0, 0.5, 0.0],  # y=0  softmax -> 0 ok   | smooth [1.10, 1.66, 0.00] -> 1 wrong
    ]
)
LABELS = np.array([0, 1, 2, 0])
# logit adjustment z - ln p, ln p = [-0.105, -2.408, -4.605]: every sample -> class 2, only sample 3 right


def _row(rows, method, variant=None):
    return next(r for r in rows if r["method"] == method and (variant is None or r["variant"] == variant))


def test_posthoc_table_by_hand():
    rows, details = posthoc_table(LOGITS, LABELS, COUNTS, many=50, few=5, head="linear")
    assert all(tuple(r) == ROW_KEYS for r in rows)
    soft = _row(rows, "softmax")
    assert (soft["top1"], soft["many"], soft["medium"], soft["few"]) == (50.0, 100.0, 0.0, 0.0)
    iif = _row(rows, "IIF", "smooth")
    assert (iif["top1"], iif["many"], iif["medium"], iif["few"]) == (75.0, 50.0, 100.0, 100.0)
    la = _row(rows, "logit adjustment")
    assert (la["top1"], la["many"], la["medium"], la["few"]) == (25.0, 0.0, 0.0, 100.0)
    assert all(r["head"] == "linear" for r in rows)
    # raw/base2/base10 are positive multiples of each other: same predictions (paper section V-B2)
    assert _row(rows, "IIF", "raw")["top1"] == _row(rows, "IIF", "base2")["top1"] == _row(rows, "IIF", "base10")["top1"]
    # relative ln((K-n)/n) is negative for the class holding 90% of K: skipped, never used
    assert not any(r["variant"] == "relative" for r in rows)


def test_iif_adjusted_is_weight_times_logit():
    np.testing.assert_allclose(ph.iif_adjusted(LOGITS, COUNTS, "smooth"), LOGITS * np.array(SMOOTH), rtol=1e-6)
    np.testing.assert_allclose(ph.iif_adjusted(LOGITS, COUNTS, "smooth", gamma=2.0), LOGITS * np.array(SMOOTH) ** 2, rtol=1e-6)


def _val_test(seed=0, n_val=60, n_test=90):
    rng = np.random.default_rng(seed)
    prior = np.log(np.array(COUNTS) / 100.0)

    def draw(n):
        y = np.repeat(np.arange(3), n // 3)
        z = rng.normal(size=(y.size, 3)) * 0.7 + 2.0 + 0.3 * prior  # positive logits biased to the head
        z[np.arange(y.size), y] += 1.0
        return z, y

    return draw(n_val), draw(n_test)


def test_tuned_choice_ignores_test_labels():
    (zv, yv), (zt, yt) = _val_test()
    honest = select_posthoc_iif(zv, yv, COUNTS)
    # Labels built so that another (variant, gamma) is perfect on test: a cheating selection would pick it.
    other = ("raw", 2.0) if (honest.variant, honest.gamma) != ("raw", 2.0) else ("smooth", 0.25)
    rigged = ph.iif_adjusted(zt, COUNTS, *other).argmax(1)
    cheat = select_posthoc_iif(zt, rigged, COUNTS)
    assert cheat.score == 100.0 and ph.iif_adjusted(zt, COUNTS, honest.variant, honest.gamma).argmax(1).tolist() != rigged.tolist()
    for test_labels in (yt, rigged):
        cand = tuned_posthoc_candidate(zt, zv, yv, COUNTS)
        rows, _ = posthoc_table(zt, test_labels, COUNTS, zv, yv)
        assert cand.variant == honest.label == _row(rows, "IIF tuned")["variant"]


def test_selection_never_receives_test_data(monkeypatch):
    (zv, yv), (zt, yt) = _val_test(seed=1)
    seen = []
    real = ph.select_posthoc_iif

    def spy(*args, **kwargs):
        seen.append(args + tuple(kwargs.values()))
        return real(*args, **kwargs)

    monkeypatch.setattr(ph, "select_posthoc_iif", spy)
    posthoc_table(zt, yt, COUNTS, zv, yv)
    assert len(seen) == 1
    val_logits, val_labels = seen[0][:2]
    np.testing.assert_array_equal(val_logits, zv)
    np.testing.assert_array_equal(val_labels, yv)
    # nothing with the 90 test samples reached the selection
    assert not any(np.shape(a)[:1] == (90,) for a in seen[0])


def test_fit_temperature_recovers_scale_and_lowers_nll():
    # labels sampled from softmax(z): the calibrated temperature of 3*z is 3
    rng = np.random.default_rng(0)
    z = rng.normal(size=(4000, 5)) * 2
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = np.array([rng.choice(5, p=row) for row in p])
    # the fitted T is the sample's NLL minimiser (2.94202..., not exactly 3): found independently by scipy's
    # bounded scalar search on T itself, with the NLL from log_softmax; L-BFGS on log T agrees to ~1e-7
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    def nll(temp):
        return -log_softmax(3 * z / temp, axis=1)[np.arange(y.size), y].mean()

    best = minimize_scalar(nll, bounds=(0.1, 30.0), method="bounded", options={"xatol": 1e-12}).x
    assert best == pytest.approx(3.0, rel=0.03)
    assert fit_temperature(3 * z, y) == pytest.approx(best, rel=1e-6)
    rows, details = posthoc_table(3 * z[:2000], y[:2000], [400, 300, 200, 60, 10], 3 * z[2000:], y[2000:])
    soft = details[0]
    assert soft["nll_ts"] < soft["nll"] and soft["ece_ts"] < rows[0]["ece"]


# ---------------------------------------------------------------------------------------------- CLI


def _write(tmp_path, logits=LOGITS, labels=LABELS, counts=COUNTS, name="c.json"):
    np.save(tmp_path / "l.npy", logits)
    np.save(tmp_path / "y.npy", labels)
    (tmp_path / name).write_text(json.dumps(counts))
    return ["posthoc", "--logits", str(tmp_path / "l.npy"), "--labels", str(tmp_path / "y.npy"), "--counts", str(tmp_path / name)]


def test_cli_json_matches_hand_values(tmp_path, capsys):
    assert main(_write(tmp_path) + ["--format", "json", "--many", "50", "--few", "5"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [tuple(r) for r in rows] == [ROW_KEYS] * len(rows)
    assert _row(rows, "softmax")["top1"] == 50.0
    assert _row(rows, "IIF", "smooth")["top1"] == 75.0


def test_cli_reads_classfrequency_json_and_val(tmp_path, capsys):
    argv = _write(tmp_path)
    ClassFrequency.from_labels(np.repeat([0, 1, 2], COUNTS)).save(tmp_path / "freq.json")
    argv[-1] = str(tmp_path / "freq.json")
    np.save(tmp_path / "vl.npy", LOGITS)
    np.save(tmp_path / "vy.npy", LABELS)
    assert main(argv + ["--val-logits", str(tmp_path / "vl.npy"), "--val-labels", str(tmp_path / "vy.npy")]) == 0
    out = capsys.readouterr().out
    assert "IIF tuned" in out and "temperature scaling" in out
    assert "75.0" in out


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"labels": LABELS[:3]}, "4 rows but labels have 3"),
        ({"labels": np.array([0, 1, 3, 0])}, "labels must be in"),
        ({"counts": [90, 9]}, "training counts have 2"),
        ({"logits": np.where(np.eye(4, 3) > 0, np.nan, LOGITS)}, "NaN"),
        ({"counts": [90, -9, 1]}, "entry 1 is -9"),  # read by ClassFrequency.from_source, as iif weights does
    ],
)
def test_cli_bad_input_exit_2_one_line(tmp_path, capsys, kwargs, match):
    assert main(_write(tmp_path, **kwargs)) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1


def test_cli_missing_file_and_unpaired_val(tmp_path, capsys):
    argv = _write(tmp_path)
    assert main(argv[:2] + [str(tmp_path / "nope.npy")] + argv[3:]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(argv + ["--val-logits", str(tmp_path / "l.npy")]) == 2
    assert "both --val-logits and --val-labels" in capsys.readouterr().err
    with pytest.raises(IIFError, match="both validation"):
        posthoc_table(LOGITS, LABELS, COUNTS, val_logits=LOGITS)


def test_shot_groups_default_to_the_library_rule():
    from iif.metrics import shot_thresholds

    # no class above 100 training images: many > 50, few < 15 (iif.metrics.shot_thresholds)
    assert shot_thresholds(COUNTS) == (50, 15)
    rows, _ = posthoc_table(LOGITS, LABELS, COUNTS)
    explicit, _ = posthoc_table(LOGITS, LABELS, COUNTS, many=50, few=15)
    assert rows == explicit
    soft = _row(rows, "softmax")
    # classes 90 (many), 9 and 1 (few): softmax is right on both class-0 images only
    assert (soft["many"], soft["medium"], soft["few"]) == (100.0, None, 0.0)


def test_posthoc_rows_can_be_summarised_like_the_bench():
    from iif.bench.report import printed_report
    from iif.bench.summary import summarize

    # validation = the hand-checked samples: softmax 50% top-1, smooth IIF 75%, LA 25% (see LOGITS)
    rows, details = posthoc_table(LOGITS, LABELS, COUNTS, val_logits=LOGITS, val_labels=LABELS)
    ranked, _, summary = summarize(rows, None, details, {"num_classes": 3, "val_size": 4})
    rec = summary["recommended"]
    # class-average: softmax right on class 0 (2/2) only -> 33.3; smooth right on 1/2, 1/1, 1/1 -> 83.3
    smooth = next(r for r in ranked if (r["method"], r["variant"]) == ("IIF", "smooth"))
    assert smooth["val_class_avg"] == pytest.approx(100 * (0.5 + 1 + 1) / 3)
    assert smooth["delta_val"] == pytest.approx(100 * (0.5 + 1 + 1) / 3 - 100 / 3)
    assert rec["val_class_avg"] == max(r["val_class_avg"] for r in ranked) == ranked[0]["val_class_avg"]
    assert rec["label"] == f"{ranked[0]['method']} / post-process / {ranked[0]['variant']}"
    assert printed_report(ranked, None, summary).startswith("Recommended by validation:")
