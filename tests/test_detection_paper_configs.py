"""The packaged det-train configs of the paper's detection tables (XIII, XV, XVI, XVII, XVIII; issue 17 point 3).

Every config below loads and validates, holds the setting its row names (arch, method, sampler, components,
schedule: typed here by hand from the paper, not read from the files), states the paper's number for its row in
its first comment line (the line ``iif det-train --list`` shows), and starts: one det-train epoch of one
64-px step on the session's tiny benchmark, with the model shrunk by overrides (the arch itself is kept).
"""

from __future__ import annotations

import json
import math

import pytest
import torch

pytestmark = pytest.mark.filterwarnings("ignore:.*classes have no training images:UserWarning")

pytest.importorskip("torchvision")
pytest.importorskip("faster_coco_eval")

from iif.cli import main  # noqa: E402
from iif.detection.config import config_description, detection_configs, load_detection_config  # noqa: E402

ONE_X, TWO_X = (12, [8, 11]), (24, [16, 22])

# name: (arch, method, variant or None, when or None, sampler, cosine_scale, mask_predictor, (epochs, milestones),
#        the fragment of the first comment line that states the paper's number; typed from the paper's tables)
ROWS = {
    # Table XIII (1x, random sampling)
    "det_lvis_cascade_r101_1x_softmax": ("cascade_maskrcnn_r101_fpn", "softmax", None, None, "random", None,
                                         "standard", ONE_X, "(paper: AP 18.8, APr 0.6, APc 15.7, APf 30.3)"),
    "det_lvis_cascade_r101_1x_iif": ("cascade_maskrcnn_r101_fpn", "iif", "raw", "train_and_test", "random", None,
                                     "standard", ONE_X, "(paper: AP 24.2, APr 9.5, APc 23.8, APf 31.0)"),
    "det_lvis_cascade_r50_1x_softmax": ("cascade_maskrcnn_r50_fpn", "softmax", None, None, "random", None,
                                        "standard", ONE_X, "no paper number"),
    "det_lvis_cascade_r50_1x_iif": ("cascade_maskrcnn_r50_fpn", "iif", "raw", "train_and_test", "random", None,
                                    "standard", ONE_X, "no paper number"),
    "det_lvis_htc_r101_1x_softmax": ("htc_r101_fpn", "softmax", None, None, "random", None, "standard", ONE_X,
                                     "(paper: AP 19.1, APr 0.6, APc 15.8, APf 31.0)"),
    "det_lvis_htc_r101_1x_iif": ("htc_r101_fpn", "iif", "raw", "train_and_test", "random", None, "standard", ONE_X,
                                 "(paper: AP 24.7, APr 9.3, APc 24.4, APf 31.9)"),
    "det_lvis_x101_1x_softmax": ("maskrcnn_x101_64x4d_fpn", "softmax", None, None, "random", None, "standard", ONE_X,
                                 "(paper: AP 18.6, AP50 29.1, AP75 19.6, APr 0.6, APc 14.5, APf 31.1)"),
    "det_lvis_x101_1x_iif": ("maskrcnn_x101_64x4d_fpn", "iif", "raw", "train_and_test", "random", None, "standard",
                             ONE_X, "(paper: AP 23.5, AP50 37.4, AP75 24.9, APr 9.2, APc 21.9, APf 31.5)"),
    "det_lvis_htc_r50_1x_softmax": ("htc_r50_fpn", "softmax", None, None, "random", None, "standard", ONE_X,
                                    "no paper number"),
    "det_lvis_htc_r50_1x_iif": ("htc_r50_fpn", "iif", "raw", "train_and_test", "random", None, "standard", ONE_X,
                                "no paper number"),
    # Table XV (2x, Mask R-CNN R50): the chain's rows without FASA
    "det_lvis_r50_2x_cos_softmax": ("maskrcnn_r50_fpn", "softmax", None, None, "random", 20.0, "standard", TWO_X,
                                    "(paper: AP 20.1)"),
    "det_lvis_r50_2x_cos_nmask_softmax": ("maskrcnn_r50_fpn", "softmax", None, None, "random", 20.0, "normalised",
                                          TWO_X, "(paper: AP 20.8)"),
    "det_lvis_r50_2x_cos_nmask_fasa_softmax": ("maskrcnn_r50_fpn", "softmax", None, None, "random", 20.0,
                                               "normalised", TWO_X, "(paper: AP 23.3)"),
    "det_lvis_r50_2x_rfs_cos_nmask_fasa_softmax": ("maskrcnn_r50_fpn", "softmax", None, None, "rfs", 20.0,
                                                   "normalised", TWO_X, "(paper: AP 25.0)"),
    "det_lvis_r50_2x_cos_nmask_fasa_iof_base10": ("maskrcnn_r50_fpn", "iif", "base10", "train_and_test", "random",
                                                  8.0, "normalised", TWO_X, "(paper: AP 24.1)"),
    "det_lvis_r50_2x_rfs_cos_nmask_fasa_iof_base10": ("maskrcnn_r50_fpn", "iif", "base10", "train_and_test", "rfs",
                                                      8.0, "normalised", TWO_X,
                                                      "(paper: AP 26.3, APr 18.6, APc 25.2, APf 30.8, APb 25.8)"),
    # Table XVI (2x, Mask R-CNN R50): the peers iif implements
    "det_lvis_r50_2x_rfs_softmax": ("maskrcnn_r50_fpn", "softmax", None, None, "rfs", None, "standard", TWO_X,
                                    "(paper: AP 23.7, APr 13.3, APc 23.0, APf 29.0, APb 24.7)"),
    "det_lvis_r50_2x_rfs_norcal": ("maskrcnn_r50_fpn", "norcal", None, "test", "rfs", None, "standard", TWO_X,
                                   "(paper: AP 25.2, APr 19.3, APc 24.2, APf 29.0, APb 26.1)"),
    "det_lvis_r50_2x_eqlv2": ("maskrcnn_r50_fpn", "eqlv2", None, "train", "random", None, "standard", TWO_X,
                              "(paper: AP 25.5, APr 17.7, APc 24.3, APf 30.2, APb 26.1)"),
    "det_lvis_r50_2x_seesaw": ("maskrcnn_r50_fpn", "seesaw", None, "train", "random", 20.0, "normalised", TWO_X,
                               "no number in the paper's table"),
    "det_lvis_r50_2x_balanced_softmax": ("maskrcnn_r50_fpn", "balanced_softmax", None, "train", "random", None,
                                         "standard", TWO_X, "no number in the paper's Table XVI"),
    "det_lvis_r50_2x_la_loss": ("maskrcnn_r50_fpn", "logit_adjustment", None, "train", "random", None, "standard",
                                TWO_X, "no number in the paper's Table XVI"),
    # Tables XVII / XVIII (COCO; Appendix C: smooth IIF)
    "det_coco_faster_rcnn_r50_2x_softmax": ("fasterrcnn_r50_fpn", "softmax", None, None, "random", None, "standard",
                                            TWO_X, "(paper: bbox AP 37.0, AP50 58.2, AP75 39.9, tail-5/10/20 "
                                                   "23.1/29.3/35.9)"),
    "det_coco_faster_rcnn_r50_2x_iif": ("fasterrcnn_r50_fpn", "iif", "smooth", "train_and_test", "random", None,
                                        "standard", TWO_X, "(paper: bbox AP 37.5, AP50 59.3, AP75 40.5, tail-5/10/20 "
                                                           "25.0/30.3/36.2)"),
    "det_coco_mask_rcnn_r50_1x_softmax": ("maskrcnn_r50_fpn", "softmax", None, None, "random", None, "standard",
                                          ONE_X, "(paper: bbox AP 38.1, AP50 58.9, AP75 41.4, tail-5/10/20 "
                                                 "31.4/41.4/40.9"),
    "det_coco_mask_rcnn_r50_1x_iif": ("maskrcnn_r50_fpn", "iif", "smooth", "train_and_test", "random", None,
                                      "standard", ONE_X, "(paper: bbox AP 38.9, AP50 59.6, AP75 42.7, tail-5/10/20 "
                                                         "34.8/43.7/42.3)"),
    "det_coco_yolov3_softmax": ("yolov3_darknet53", "softmax", None, None, "random", None, "standard", (70, [35, 55]),
                                "(paper: bbox AP 33.9, AP50 58.6, AP75 35.2, tail-5/10/20 19.3/24.8/31.3)"),
    "det_coco_yolov3_iif": ("yolov3_darknet53", "iif", "smooth", "train_and_test", "random", None, "standard",
                            (70, [35, 55]), "(paper: bbox AP 34.6, AP50 59.7, AP75 35.7, tail-5/10/20 "
                                            "21.8/26.8/32.7)"),
    "det_coco_ssd300_softmax": ("ssd300_vgg16", "softmax", None, None, "random", None, "standard", (120, [80, 110]),
                                "(paper: bbox AP 25.0, AP50 41.5, AP75 25.9, tail-5/10/20 14.7/17.2/22.3)"),
    "det_coco_ssd300_iif": ("ssd300_vgg16", "iif", "smooth", "train_and_test", "random", None, "standard",
                            (120, [80, 110]), "(paper: bbox AP 25.7, AP50 43.6, AP75 26.4, tail-5/10/20 "
                                              "18.5/20.0/24.3)"),
}

# The model shrunk, the arch kept: one 64-px step of four images, then stop (runtime.stop_after_epoch).
TINY = ["data.max_train_images=4", "data.max_val_images=2", "model.min_size=64", "model.max_size=64",
        "model.fpn_channels=16", "model.representation_size=32", "model.mask_layers=[8]",
        "model.box_detections_per_img=10", "model.rpn_pre_nms_top_n_train=100", "model.rpn_post_nms_top_n_train=50",
        "model.box_batch_size_per_image=32", "schedule.batch_size=4", "schedule.warmup_iters=1", "schedule.epochs=2",
        "schedule.milestones=[1]", "runtime.stop_after_epoch=1", "runtime.threads=1", "runtime.workers=0",
        "runtime.device=cpu"]


def test_every_row_config_is_packaged_and_listed():
    names = set(detection_configs())
    assert set(ROWS) <= names


@pytest.mark.parametrize("name", sorted(ROWS))
def test_row_config_holds_its_row_and_states_the_paper_number(name):
    arch, method, variant, when, sampler, cos, mask_pred, (epochs, milestones), stated = ROWS[name]
    cfg = load_detection_config(name)
    assert (cfg.model.arch, cfg.margin.method, cfg.data.sampler) == (arch, method, sampler)
    assert (cfg.model.cosine_scale, cfg.model.mask_predictor) == (cos, mask_pred)
    assert (cfg.schedule.epochs, list(cfg.schedule.milestones)) == (epochs, milestones)
    if variant is not None:  # IOF (by object) for Table XV's base10 rows, IIF (by image) elsewhere
        assert (cfg.margin.variant, cfg.margin.by) == (variant, "object" if variant == "base10" else "image")
    assert cfg.model.fasa is ("fasa" in name)
    # Table XV's last row alone adds the stricter NMS and mask threshold.
    last = name == "det_lvis_r50_2x_rfs_cos_nmask_fasa_iof_base10"
    assert (cfg.model.box_nms_thresh, cfg.model.mask_thresh) == ((0.3, 0.4) if last else (None, None))
    assert cfg.margin.when == when
    if sampler == "rfs":  # the authors' mmdetection ClassBalancedDataset
        assert (cfg.data.rfs_threshold, cfg.data.rfs_rounding) == (0.001, "ceil")
    line = config_description(name)
    assert stated in line, line
    assert ("1x" in line or "2x" in line or f"{epochs} epochs" in line), line  # the schedule is named


def test_coco_mask_rcnn_rows_are_evaluated_on_boxes_and_lvis_rows_on_masks():
    """Tables XVII/XVIII report bbox AP (and bbox tail-k); Table XIII-XVI mask AP."""
    for name in ("det_coco_mask_rcnn_r50_1x_softmax", "det_coco_mask_rcnn_r50_1x_iif"):
        cfg = load_detection_config(name)
        assert cfg.data.masks is True and cfg.eval.masks is False
    for name in ("det_lvis_htc_r101_1x_iif", "det_lvis_cascade_r101_1x_iif", "det_lvis_r50_2x_seesaw"):
        assert load_detection_config(name).eval.masks is True


# What each family's model must hold (a config that silently built another arch would miss it).
MARKERS = {"cascade_maskrcnn": "roi_heads.box_predictor_3.", "htc": "roi_heads.mask_flow_3.",
           "maskrcnn": "roi_heads.mask_predictor.", "fasterrcnn": "roi_heads.box_predictor.",
           "yolov3": "backbone.", "ssd": "head.classification_head."}


def _images(cfg, family):
    """Training images of the one step: SSD (300 x 300 whatever min_size) one; a margin from the counts (raw
    IIF, ln n_c, NorCal's n_c^gamma, ...) needs every category seen (the benchmark's first 16 images cover its 20;
    those are infinite for an unseen class); softmax and smooth IIF (finite at n_c = 0) four."""
    if family == "ssd":
        return 1
    return 4 if cfg.margin.method == "softmax" or (cfg.margin.method, cfg.margin.variant) == ("iif", "smooth") else 16


@pytest.fixture
def run_dir(tmp_path):
    """The det-train run folder, removed after the test: an R101 cascade's last.pt (weights and SGD momentum) is
    ~0.5 GB, and pytest keeps three sessions' temp folders."""
    import shutil

    yield tmp_path / "run"
    shutil.rmtree(tmp_path / "run", ignore_errors=True)


@pytest.mark.parametrize("name", sorted(ROWS))
def test_row_config_starts(name, detection_benchmark, run_dir, monkeypatch):
    from iif.detection import runs
    from iif.detection.archs import ARCHS

    built = []
    original = runs.build_from_config
    monkeypatch.setattr(runs, "build_from_config", lambda *a, **k: built.append(original(*a, **k)) or built[-1])
    arch, method, _, when, _, cos, mask_pred, _, _ = ROWS[name]
    cfg = load_detection_config(name)
    family = ARCHS[arch][0]
    n = _images(cfg, family)
    extra = ["model.anchor_sizes=null"] if family == "yolov3" else []
    out = run_dir
    rc = main(["det-train", name, f"data.root={detection_benchmark[0]}", *TINY, *extra, f"data.max_train_images={n}",
               f"schedule.batch_size={n}", "--out", str(out), "--quiet"])
    assert rc == 0
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 1 and history[0]["images"] == n
    assert all(math.isfinite(v) for k, v in history[0].items() if k.startswith("loss"))
    (model,) = built
    state = torch.load(out / "last.pt", weights_only=True)["model"]
    assert any(k.startswith(MARKERS[family]) for k in state)
    assert state.keys() == model.state_dict().keys()
    margins = [m for m in model.modules() if hasattr(m, "method") and hasattr(m, "when") and hasattr(m, "adjuster")]
    if method == "softmax":
        assert all(m.adjuster is None for m in margins)
    else:
        assert margins and all((m.method, m.when) == (method, when) for m in margins)
        # one per box stage: the margin reaches every classifier of a cascade
        assert len(margins) == (3 if family in ("cascade_maskrcnn", "htc") else 1)
    assert (getattr(getattr(model, "roi_heads", None), "fasa", None) is not None) is cfg.model.fasa
    if family in ("maskrcnn", "fasterrcnn"):  # torchvision's 0.5 and 0.5 unless the row sets them
        from iif.detection.components import mask_threshold

        expect = (0.3, 0.4) if cfg.model.box_nms_thresh is not None else (0.5, 0.5)
        assert (model.roi_heads.nms_thresh, mask_threshold(model)) == expect
    cosine = [m for m in model.modules() if type(m).__name__ == "CosineBoxClassifier"]
    assert [float(m.scale) for m in cosine] == ([cos] * len(cosine) if cos else []) and bool(cosine) == bool(cos)
    assert (type(model.roi_heads.mask_predictor).__name__ == "NormalisedMaskPredictor") == (mask_pred == "normalised") \
        if hasattr(getattr(model, "roi_heads", None), "mask_predictor") else mask_pred == "standard"


# ------------------------------------------------------------------ the support matrix of docs/detection.md
def _matrix_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "det_support_matrix.py"
    spec = importlib.util.spec_from_file_location("det_support_matrix", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("arch, header, expect", [
    ("fasterrcnn_r10_fpn", "IIF end-to-end", "yes"),
    ("fasterrcnn_r10_fpn", "decoupled (classifier only) + IIF", "yes"),
    ("fasterrcnn_r10_fpn", "normalised mask", "refused: config key 'model.mask_predictor'"),
    ("yolov3_tiny_cpu", "Seesaw (loss)", "refused: method='seesaw'"),
    ("yolov3_tiny_cpu", "NorCal (post-hoc)", "yes"),
])
def test_support_matrix_cells(arch, header, expect, tmp_path):
    """benchmarks/det_support_matrix.py (the table in docs/detection.md): a cell runs a step or is refused."""
    import shutil

    m = _matrix_script()
    cell = dict(m.CELLS)[header]
    try:
        assert m.run_cell(arch, cell, tmp_path / "ckpt").startswith(expect)
    finally:
        shutil.rmtree(tmp_path / "ckpt", ignore_errors=True)
