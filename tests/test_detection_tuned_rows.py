"""det-bench's tuned rows (``strategy: "posthoc_tuned"``, issue 15): tau for logit adjustment, gamma for NorCal and
IIF's variant/count are chosen by AP on the val split of a generator-2 benchmark and reported once on test.

Checked against an independent route: every grid value is scored here on val through the public functions
(use_margin, cache_roi_inputs, detect_from_cache, detections_to_results, evaluate_detections); the chosen value
must be their argmax, the test row must equal the chosen value scored on test directly, and the selection must
never evaluate anything on the test split (an evaluation on test images raises while choosing)."""

import dataclasses
import json
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("torchvision")
pytest.importorskip("faster_coco_eval")
pytest.importorskip("tidecv")

from iif.detection import bench as B  # noqa: E402
from iif.detection import synthetic  # noqa: E402
from iif.detection.data import collate, detections_to_results  # noqa: E402
from iif.detection.margins import use_margin  # noqa: E402
from iif.detection.posthoc import cache_roi_inputs, detect_from_cache  # noqa: E402
from iif.detection.report import ROW_KEYS  # noqa: E402
from iif.detection.runs import evaluate_detections  # noqa: E402
from iif.errors import IIFError  # noqa: E402

TINY = ["arch=maskrcnn_r10_fpn", "model.min_size=64", "model.max_size=64", "model.fpn_channels=32",
        "model.representation_size=64", "model.mask_layers=[16]", "model.box_detections_per_img=40",
        "model.rpn_pre_nms_top_n_test=100", "model.rpn_post_nms_top_n_test=40", "train.epochs=6",
        "train.batch_size=4", "train.warmup_iters=1", "train.milestones=[]", "max_train_images=171", "threads=1",
        "max_val_images=12"]


@pytest.fixture(scope="module")
def trained(detection_sources, tmp_path_factory):
    """A tiny generator-2 benchmark, its loaded data (test reported, val for tuning) and a softmax detector
    trained from scratch on it, with the test split's RoI cache."""
    out = tmp_path_factory.mktemp("bench-tuned") / "bench"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        synthetic.make_benchmark(out, seed=3, generator=2, sources=detection_sources, image_size=64, num_train=171,
                                 num_val=40, num_test=60)
    s = B.quick_settings("cpu-quick", TINY)
    s.train["lr"] = 0.04
    torch.set_num_threads(1)
    d = B._load_data(out, s, lambda m: None)
    model, _ = B._train(s, d, None, 0, "cpu", lambda m: None)
    cache = B._make_cache(model, d, "cpu", s)
    return out, s, d, model, cache


def _ap(model, dataset, ann, counts, spec, s):
    """AP of ``spec``'s margin on ``dataset`` through the public functions only (not det-bench's code)."""
    use_margin(model, spec.method, B._freq(spec_train[0]), **spec.margin_kwargs())
    if id(dataset) not in spec_cache:
        loader = torch.utils.data.DataLoader(dataset, batch_size=4, shuffle=False, collate_fn=collate)
        spec_cache[id(dataset)] = cache_roi_inputs(model, loader, "cpu")
    cache = spec_cache[id(dataset)]
    outs = [{k: v.cpu() for k, v in o.items()} for o in detect_from_cache(model, cache)]
    res = detections_to_results(outs, cache.image_ids, list(dataset.category_ids), masks=True)
    return evaluate_detections(ann, res, masks=True, score_threshold=s.score_threshold, train_counts=counts)


spec_train: list = []
spec_cache: dict = {}


def _ids(path):
    return {im["id"] for im in json.loads(path.read_text())["images"]}


def test_tuned_rows_choose_on_val_by_argmax_and_report_the_choice_on_test(trained, monkeypatch):
    root, s, d, model, cache = trained
    counts = B._freq(d.train).image_counts
    spec_train[:] = [d.train]
    spec_cache.clear()
    val_ids, test_ids = _ids(root / "annotations" / "val.json"), _ids(root / "annotations" / "test.json")
    tune_ds, tune_json = d.tune
    assert d.eval_split == "test" and len(tune_ds) == 12
    assert {im["id"] for im in tune_json["images"]} <= val_ids

    # independent: every grid value on val
    expected = {}
    for method, grid in B.TUNE_GRIDS.items():
        aps = []
        for spec in grid:
            try:
                aps.append((spec, _ap(model, tune_ds, tune_json, counts, spec, s)["AP"]))
            except IIFError:
                continue
        vals = np.array([a for _, a in aps], dtype=float)
        expected[method] = (aps[int(np.nanargmax(vals))][0], float(np.nanmax(vals)), vals)
    use_margin(model, "softmax")
    assert len(expected["logit_adjustment"][2]) == 6 and len(expected["norcal"][2]) == 7
    # the grid is not flat everywhere (otherwise argmax would be vacuous)
    assert any(np.ptp(v) > 0 for _, _, v in expected.values())

    # selection sees only val: any evaluation on a test image raises
    evaluate, score = B._evaluate, B._tune_score

    def val_only(fn):
        def check(gt, results, *a, **k):
            ids = {im["id"] for im in gt["images"]} | {r["image_id"] for r in results}
            if ids & test_ids:
                raise AssertionError("a test-split evaluation during selection")
            return fn(gt, results, *a, **k)
        return check

    monkeypatch.setattr(B, "_evaluate", val_only(evaluate))
    monkeypatch.setattr(B, "_tune_score", val_only(score))
    tune_cache = B._make_cache(model, d, "cpu", s, dataset=tune_ds)
    chosen = B._choose_tuned(model, d, tune_cache, "cpu", s, lambda m: None)
    monkeypatch.setattr(B, "_evaluate", evaluate)
    monkeypatch.setattr(B, "_tune_score", score)
    assert set(chosen) == set(B.TUNE_GRIDS)
    for method, (spec, ap, _) in expected.items():
        assert chosen[method]["spec"] == spec
        assert chosen[method]["val_AP"] == pytest.approx(ap, abs=1e-9)

    # the bench's rows: the choices above, scored on test exactly as a direct scoring of the chosen value
    rows, details, dets = B._tuned_rows(model, d, cache, "cpu", s, 0, lambda m: None)
    assert [r["method"] for r in rows] == list(B.TUNE_GRIDS)
    for row, det, method in zip(rows, details, B.TUNE_GRIDS):
        spec = expected[method][0]
        assert tuple(row) == ROW_KEYS and row["strategy"] == "posthoc_tuned"
        assert row["variant"] == spec.table_variant() and row["by"] == spec.by
        assert det["tuned_on"] == "val" and det["tune_metric"] == "mask AP"
        assert det["val_AP"] == pytest.approx(expected[method][1], abs=1e-9)
        direct = _ap(model, d.val, d.val_json, counts, spec, s)
        assert {im["id"] for im in d.val_json["images"]} <= test_ids
        for k in ("AP", "APr", "APb", "dAP_FP", "false_positives"):
            assert row[k] == pytest.approx(direct[k], abs=1e-9) if direct[k] is not None else row[k] is None
    use_margin(model, "softmax")
    # the label the table shows carries the chosen value
    la = rows[0]
    assert la["variant"] == f"tau={expected['logit_adjustment'][0].tau:g}"
    assert rows[1]["variant"] == f"gamma={expected['norcal'][0].gamma:g}"


def test_no_tuned_rows_without_a_separate_val_split(trained):
    _, s, d, model, cache = trained
    assert B._tuned_rows(model, dataclasses.replace(d, tune=None), cache, "cpu", s, 0, lambda m: None) == ([], [], {})
