"""``iif det-bench``'s paired-bootstrap intervals (summary.json, report.md) and runs that survive a kill
(iif.detection.uncertainty.row_intervals, iif.resume)."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("torchvision")
pytest.importorskip("faster_coco_eval")
if importlib.util.find_spec("tidecv") is None:
    pytest.skip("tidecv is not installed", allow_module_level=True)

import torch  # noqa: E402

from iif.cli import main  # noqa: E402
from iif.detection import bench as B  # noqa: E402
from iif.detection import uncertainty as U  # noqa: E402
from iif.detection.report import ROW_KEYS, row_label  # noqa: E402
from iif.resume import RESUME_DIR, ResumeStore  # noqa: E402

TINY = ["arch=maskrcnn_r10_fpn", "model.min_size=64", "model.max_size=64", "model.fpn_channels=32",
        "model.representation_size=64", "model.mask_layers=[16]", "model.box_detections_per_img=40",
        "model.rpn_pre_nms_top_n_test=100", "model.rpn_post_nms_top_n_test=40", "train.epochs=1",
        "train.batch_size=4", "train.warmup_iters=1", "train.milestones=[]", "max_train_images=20",
        "threads=1"]


@pytest.fixture(scope="module")
def tiny_data(detection_benchmark):
    return detection_benchmark[0]


@pytest.mark.slow
def test_intervals_equal_a_direct_computation(tiny_data, tmp_path, monkeypatch):
    """Each row's interval against softmax and against the best additive row is the percentile interval of
    the differences computed here through det-train's whole evaluation (evaluate_detections) on
    resample_images' set, with the same picks (bootstrap_picks(n, 4, seed 0)); diff is the table's difference.
    results.json keeps its 13 keys per row; report.md shows the intervals."""
    from iif.detection.runs import evaluate_detections

    seen = {}
    real = U.row_intervals

    def spy(val_json, rows, detections, **kw):
        seen.update(val_json=val_json, detections=detections)
        return real(val_json, rows, detections, **kw)

    monkeypatch.setattr(U, "row_intervals", spy)
    out = tmp_path / "o"
    rows = B.run_det_bench(tiny_data, quick=True, out=out, overrides=TINY + ["max_val_images=12", "bootstrap=4"],
                           plots=False)
    assert [list(r) for r in json.loads((out / "results.json").read_text())] == [list(ROW_KEYS)] * len(rows)
    summary = json.loads((out / "summary.json").read_text())["intervals"]
    assert summary["samples"] == 4 and summary["num_images"] == 12 and summary["seeds"] == 1
    table = {row_label(r): r for r in rows}
    refs = summary["references"]
    assert refs["softmax"] == "softmax (posthoc)"
    additive = [r for r in rows if r["method"] in U.ADDITIVE_METHODS]
    best = max(additive, key=lambda r: (r["APr"] if r["APr"] is not None else -1, r["AP"]))
    assert table[refs["best_additive"]] == best
    val_json, dets = seen["val_json"], seen["detections"][0]
    picks = U.bootstrap_picks(12, 4, 0)
    direct = {name: [] for name in dets}
    for p in picks:
        for name in dets:
            gt, dd = U.resample_images(val_json, dets[name], p)
            ev = evaluate_detections(gt, dd, masks=True, score_threshold=0.3, train_counts=None)
            direct[name].append({m: np.nan if ev[m] is None else ev[m] for m in U.INTERVAL_METRICS})
    by_label = {r["row"]: r for r in summary["rows"]}
    assert set(by_label) == set(table) == set(dets)
    checked = 0
    for ref_key, ref in refs.items():
        for name, r in by_label.items():
            if name == ref:
                assert f"vs_{ref_key}" not in r
                continue
            for m in U.INTERVAL_METRICS:
                got = r[f"vs_{ref_key}"][m]
                d = np.array([a[m] - b[m] for a, b in zip(direct[name], direct[ref])])
                d = d[np.isfinite(d)]
                assert got["samples"] == d.size
                if table[name][m] is not None and table[ref][m] is not None:
                    assert got["diff"] == pytest.approx(table[name][m] - table[ref][m])
                if d.size:
                    lo, hi = np.percentile(d, [2.5, 97.5])
                    assert (got["low"], got["high"]) == (pytest.approx(lo), pytest.approx(hi))
                    assert got["within_noise"] == bool(lo <= 0 <= hi)
                    checked += 1
    assert checked >= 20  # most cells were compared, not skipped as nan
    report = (out / "report.md").read_text()
    assert "## Differences with 95% intervals" in report and "4 resamples" in report


def _noisy_detections(gt, seed, hit=0.8, wrong=0.2, extra=1.0):
    """Box detections made from ``gt``: each object found with probability ``hit`` (box jittered, category
    wrong with probability ``wrong``), plus about ``extra`` background boxes per image; random scores."""
    rng = np.random.default_rng(seed)
    cats = [c["id"] for c in gt["categories"]]
    sizes = {im["id"]: (im["width"], im["height"]) for im in gt["images"]}
    dets = []
    for a in gt["annotations"]:
        if rng.random() < hit:
            x, y, w, h = a["bbox"]
            c = a["category_id"] if rng.random() >= wrong else int(rng.choice(cats))
            dets.append({"image_id": a["image_id"], "category_id": c, "score": float(rng.uniform(0.2, 1.0)),
                         "bbox": [x + rng.normal(0, 1), y + rng.normal(0, 1), w, h]})
    for im in gt["images"]:
        for _ in range(rng.poisson(extra)):
            W, H = sizes[im["id"]]
            dets.append({"image_id": im["id"], "category_id": int(rng.choice(cats)), "score": float(rng.uniform(0, 0.9)),
                         "bbox": [float(rng.uniform(0, W - 20)), float(rng.uniform(0, H - 20)), 16.0, 16.0]})
    return dets


def test_row_intervals_against_the_normal_evaluation_of_resampled_sets(tiny_data):
    """row_intervals on detectors of known quality (made from the ground truth): its interval for each
    (row, reference, metric) is the percentile interval of the differences that evaluate_detections
    (det-train's whole evaluation) gives on resample_images' sets drawn with the same seed; the better
    detector's AP gain over the worse is not within noise."""
    from iif.detection.runs import evaluate_detections

    gt = json.loads((tiny_data / "annotations" / "val.json").read_text())
    dets = {"softmax (posthoc)": _noisy_detections(gt, 0, hit=0.5, wrong=0.4, extra=2.0),
            "logit_adjustment (posthoc)": _noisy_detections(gt, 1, hit=0.7, wrong=0.3),
            "iif raw IIF (posthoc)": _noisy_detections(gt, 2, hit=0.95, wrong=0.05, extra=0.3)}
    methods = {"softmax (posthoc)": "softmax", "logit_adjustment (posthoc)": "logit_adjustment",
               "iif raw IIF (posthoc)": "iif"}
    full = {k: evaluate_detections(gt, d, masks=False, score_threshold=0.3, train_counts=None) for k, d in dets.items()}
    rows = [{"method": methods[k], **{m: full[k][m] for m in U.INTERVAL_METRICS}} for k in dets]
    labels = {id(r): k for r, k in zip(rows, dets)}
    res = U.row_intervals(gt, rows, [dets], masks=False, samples=5, seed=7, label=lambda r: labels[id(r)])
    assert res["references"] == {"softmax": "softmax (posthoc)", "best_additive": "logit_adjustment (posthoc)"}
    picks = U.bootstrap_picks(len(gt["images"]), 5, 7)
    direct = {k: [] for k in dets}
    for p in picks:
        for k in dets:
            g, d = U.resample_images(gt, dets[k], p)
            ev = evaluate_detections(g, d, masks=False, score_threshold=0.3, train_counts=None)
            direct[k].append({m: np.nan if ev[m] is None else ev[m] for m in U.INTERVAL_METRICS})
    by = {r["row"]: r for r in res["rows"]}
    n = 0
    for ref_key, ref in res["references"].items():
        for k in dets:
            if k == ref:
                continue
            for m in U.INTERVAL_METRICS:
                got = by[k][f"vs_{ref_key}"][m]
                d = np.array([a[m] - b[m] for a, b in zip(direct[k], direct[ref])])
                d = d[np.isfinite(d)]
                assert got["diff"] == pytest.approx(full[k][m] - full[ref][m])
                assert got["samples"] == d.size > 0
                assert (got["low"], got["high"]) == (pytest.approx(np.percentile(d, 2.5)), pytest.approx(np.percentile(d, 97.5)))
                n += 1
    assert n == 12
    gain = by["iif raw IIF (posthoc)"]["vs_softmax"]["AP"]
    assert gain["low"] > 5 and not gain["within_noise"]
    assert res["evaluations"] == 3 * 5  # every (row, resample) evaluated once, the full set taken from the table


def test_bootstrap_setting_is_checked_in_one_line(tiny_data, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["det-bench", "--data", str(tiny_data), "--out", str(out), "bootstrap=-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bootstrap" in err[0] and ">= 0" in err[0]
    assert not out.exists()


def test_resume_store_reuses_only_matching_weights(tmp_path):
    """A kept model loads back exactly; another settings key, seed or row, a different shape or a damaged
    file is not reused (and says so)."""
    logs = []
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    store = ResumeStore(tmp_path, "key-a", logs.append)
    store.save_model(net, 0, "softmax", {"train_s": 1.5, "history": [{"loss": 0.25}]})
    fresh = torch.nn.Linear(3, 2)
    assert store.load_model(fresh, 0, "softmax") == {"train_s": 1.5, "history": [{"loss": 0.25}]}
    assert torch.equal(fresh.weight, net.weight) and torch.equal(fresh.bias, net.bias)
    assert ResumeStore(tmp_path, "key-b", logs.append).load_model(torch.nn.Linear(3, 2), 0, "softmax") is None
    assert "other settings" in logs[-1]
    assert store.load_model(torch.nn.Linear(3, 2), 1, "softmax") is None  # seed 1 was never kept
    assert store.load_model(torch.nn.Linear(4, 2), 0, "softmax") is None
    assert "do not fit" in logs[-1]
    path = tmp_path / RESUME_DIR / "seed0" / "softmax.pt"
    path.write_bytes(b"not a torch file")
    assert store.load_model(torch.nn.Linear(3, 2), 0, "softmax") is None
    assert "recomputing" in logs[-1]


def _argv(out):
    return ["det-bench", "--quick", "--seeds", "2", "--no-plots", "--out", str(out), *TINY, "max_val_images=5",
            "bootstrap=2"]


@pytest.mark.slow
def test_sigkill_after_the_first_model_then_rerun_continues(tiny_data, tmp_path):
    """A det-bench run SIGKILLed once seed 0's detector is kept: the rerun of the same command adopts the
    staging folder, loads that detector instead of training it, trains seed 1, and writes the results an
    uninterrupted run writes; nothing of the resume work is left in the output or beside it."""
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "iif.cli", *_argv(out), "--data", str(tiny_data)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kept = None
    deadline = time.time() + 300
    while time.time() < deadline and child.poll() is None and kept is None:
        found = list(tmp_path.glob(f".o.iif-stage-*/{RESUME_DIR}/seed0/softmax.pt"))
        kept = found[0] if found else None
        time.sleep(0.02)
    assert kept is not None, "the first run never kept its seed-0 detector"
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL and not out.exists()
    assert not list(tmp_path.glob(f".o.iif-stage-*/{RESUME_DIR}/seed1/softmax.pt"))  # killed before seed 1 was kept
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    log = rerun.stdout
    assert "continuing the interrupted run" in log
    assert "seed 0: reusing the kept softmax detector (not retrained)" in log
    assert "seed 0: training" not in log and "seed 1: training softmax detector" in log
    reference = tmp_path / "ref"
    assert main([*_argv(reference), "--data", str(tiny_data)]) == 0
    for name in ("results.json", "results_std.json", "summary.json"):
        a, b = json.loads((out / name).read_text()), json.loads((reference / name).read_text())
        if name == "summary.json":
            for x in (a, b):
                x["intervals"].pop("cost_s")
        assert a == b, name
    assert not (out / RESUME_DIR).exists() and not list(tmp_path.glob(".o.iif-stage-*"))


@pytest.mark.slow
def test_bench_sigkill_after_the_first_block_then_rerun_continues(tmp_path):
    """`iif bench` (quick, one head, two seeds) SIGKILLed in a forked child once seed 0's block (backbone,
    post-hoc and decoupled rows) is kept: the rerun reuses that block instead of training the backbone again,
    trains seed 1, and writes the results an uninterrupted run writes."""
    from iif.bench import runner as R
    from iif.train import build_splits, load_config

    splits = build_splits(load_config("digits_lt_e2e"))
    kw = dict(seeds=2, quick=True, heads=["linear"], splits=splits, plots=False,
              overrides=["schedule.epochs=1", "model.backbone_kwargs.width=4", "decoupled.epochs=1"])
    out = tmp_path / "bench"
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 97
        try:
            fd = os.open(os.devnull, os.O_WRONLY)
            os.dup2(fd, 1), os.dup2(fd, 2)
            R.run_bench(out=out, log=lambda *_: None, **kw)
            code = 0
        finally:
            os._exit(code)
    kept = None
    deadline = time.time() + 300
    while time.time() < deadline and kept is None:
        found = list(tmp_path.glob(f".bench.iif-stage-*/{RESUME_DIR}/seed0/linear.json"))
        kept = found[0] if found else None
        if kept is None and os.waitpid(pid, os.WNOHANG) != (0, 0):
            pytest.fail("the first bench run ended before it kept seed 0's block")
        time.sleep(0.01)
    assert kept is not None
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and not out.exists()
    logs = []
    R.run_bench(out=out, log=logs.append, **kw)
    text = "\n".join(map(str, logs))
    assert "[seed 0, linear] reusing the kept backbone" in text and "[seed 0, linear] backbone:" not in text
    assert "[seed 1, linear] backbone:" in text
    reference = tmp_path / "ref"
    R.run_bench(out=reference, log=lambda *_: None, **kw)
    for name in ("results.json", "results_std.json", "summary.json"):
        assert json.loads((out / name).read_text()) == json.loads((reference / name).read_text()), name
    assert not (out / RESUME_DIR).exists() and not list(tmp_path.glob(".bench.iif-stage-*"))


@pytest.mark.slow
def test_a_crash_at_evaluation_keeps_the_trained_detector_for_the_rerun(tiny_data, tmp_path, monkeypatch):
    """The issue's failure: the evaluation raised ("can't start new thread") after training. The exception
    reaches the caller, the staging folder with the kept detector stays, nothing appears under --out, and
    the rerun of the same call loads the detector instead of training it."""
    calls = {"n": 0}
    real = B._evaluate

    def failing(*a, **k):
        calls["n"] += 1
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(B, "_evaluate", failing)
    out = tmp_path / "o"
    args = dict(quick=True, out=out, overrides=TINY + ["max_val_images=5"], plots=False)
    logs = []
    with pytest.raises(RuntimeError, match="new thread"):
        B.run_det_bench(tiny_data, log=logs.append, **args)
    assert calls["n"] == 1 and not out.exists()
    assert any("rerun the same command" in line for line in logs)
    assert len(list(tmp_path.glob(f".o.iif-stage-*/{RESUME_DIR}/seed0/softmax.pt"))) == 1
    monkeypatch.setattr(B, "_evaluate", real)
    logs.clear()
    rows = B.run_det_bench(tiny_data, log=logs.append, **args)
    assert any("seed 0: reusing the kept softmax detector" in line for line in logs)
    assert not any("seed 0: training" in line for line in logs)
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(rows))
    assert not list(tmp_path.glob(".o.iif-stage-*"))
