"""iif explain on YOLOv3 (the paper's Fig. 6 detector): objectness heatmap, class scores, Grad-CAM.

A tiny ``yolov3_tiny_cpu`` is made confident at one hand-picked cell: every objectness output ignores the
features (its weights zeroed, bias -8) and the finest scale's output convolution gets a bias map that adds
+16 at one (anchor, cell), so that prediction's objectness is sigmoid(8) and every other is sigmoid(-8). Then
the objectness heatmap must peak in that cell of the image, the class scores must equal
``sigmoid(o) * softmax(w * z)`` with ``w`` the smooth IIF weights computed here from the counts (Table III)
and ``o``, ``z`` read from the head's output by a hook, and Grad-CAM must equal a hand computation by autograd
on Darknet's stride-8 map. A det-train run pair (softmax, IIF) checks the CLI with --compare.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytestmark = pytest.mark.filterwarnings("ignore:.*classes have no training images:UserWarning")

import captum  # noqa: F401,E402  (the dev extra installs it)
from _detection_helpers import PlusMap as _PlusMap  # noqa: E402
from _detection_helpers import assert_row_is_the_best_detection, explain_compared_runs, gradcam_by_hand  # noqa: E402
from _detection_helpers import image_tensor as _tensor  # noqa: E402
from _detection_helpers import smooth_iif, write_noise_image  # noqa: E402

from iif.detection import build_detector, use_margin  # noqa: E402
from iif.explain_detection import explain_detection  # noqa: E402

C = 4
COUNTS = [100, 20, 5, 1]
NAMES = ["a", "b", "c", "d"]
H, W = 40, 72           # the image: not square, each stride-8 cell is 5 x 9 pixels of it
ANCHOR, ROW, COL = 1, 5, 2  # the confident prediction at the finest scale (8 x 8 grid at a 64-px input)


def confident_model(method: str = "iif") -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_detector("yolov3_tiny_cpu", C, min_size=64, max_size=64)
    if method == "iif":
        use_margin(model, "iif", COUNTS, variant="smooth")
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for seq in model.head.outputs:
            conv = seq[-1]
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * 0.3)  # class logits of order 1
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=gen))
            conv.weight.view(3, 5 + C, -1)[:, 4] = 0.0  # objectness ignores the features ...
            conv.bias.view(3, 5 + C)[:, 4] = -8.0       # ... and is sigmoid(-8) everywhere
        bias_map = torch.zeros(1, 3 * (5 + C), 8, 8)
        bias_map[0, ANCHOR * (5 + C) + 4, ROW, COL] = 16.0  # but sigmoid(8) at one anchor of one cell
        model.head.outputs[2][-1] = _PlusMap(model.head.outputs[2][-1], bias_map)
    return model.eval()


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return write_noise_image(tmp_path_factory.mktemp("explain-yolo") / "img.png", H, W)


def _head_and_detections(model, path):
    """The head's per-scale outputs (hooked) and the detections of one ordinary eval forward."""
    store = []
    handle = model.head.register_forward_hook(lambda mod, inp, out: store.append([o.detach() for o in out]))
    try:
        with torch.no_grad():
            det = model([_tensor(path)])[0]
    finally:
        handle.remove()
    return store[0], det


def test_objectness_heatmap_peaks_at_the_confident_cell(image):
    m = explain_detection(confident_model(), NAMES, image, label="iif yolo")
    assert set(m.objectness) == {8, 16, 32} and all(v.shape == (H, W) for v in m.objectness.values())
    fine = m.objectness[8]
    r, c = np.unravel_index(int(np.argmax(fine)), fine.shape)
    assert ROW * H // 8 <= r < (ROW + 1) * H // 8 and COL * W // 8 <= c < (COL + 1) * W // 8
    assert fine.max() == pytest.approx(1 / (1 + math.exp(-8)), rel=1e-5)  # the cell's centre is a sample point
    for s in (16, 32):  # nothing confident at the coarser scales
        assert m.objectness[s].max() == pytest.approx(1 / (1 + math.exp(8)), rel=1e-4)
    np.testing.assert_array_equal(m.score_map, np.maximum(fine, np.maximum(m.objectness[16], m.objectness[32])))
    assert m.cell == {"stride": 8, "anchor": ANCHOR, "row": ROW, "col": COL}
    assert m.summary()["objectness_peak"]["8"] == [int(r), int(c)]


@pytest.mark.parametrize("method", ["iif", "softmax"])
def test_class_scores_are_objectness_times_softmax_of_w_z_at_the_cell(image, method):
    model = confident_model(method)
    preds, det = _head_and_detections(model, image)
    p = preds[0][0, ANCHOR, ROW, COL]
    w = smooth_iif(COUNTS) if method == "iif" else torch.ones(C)
    want = torch.sigmoid(p[4]) * torch.softmax(w * p[5:], 0)  # by hand
    m = explain_detection(model, NAMES, image)
    np.testing.assert_allclose(m.scores, want.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(m.logits, (w * p[5:]).numpy(), rtol=1e-5, atol=1e-6)
    assert m.predicted == int(want.argmax())
    # the model's own best detection is this one: its label, score and box
    best = int(det["scores"].argmax())
    assert int(det["labels"][best]) - 1 == m.predicted
    assert m.scores[m.predicted] == pytest.approx(float(det["scores"][best]), rel=1e-5)
    np.testing.assert_allclose(m.box, det["boxes"][best].tolist(), rtol=1e-5, atol=1e-4)


def test_gradcam_equals_autograd_by_hand_and_an_asked_class_is_its_best_box(image):
    model = confident_model()
    # keep every class's best box through NMS
    model.score_thresh, model.pre_nms_top_n, model.detections_per_img = 0.0, 10 ** 6, 10 ** 6
    _, det = _head_and_detections(model, image)
    m0 = explain_detection(model, NAMES, image)
    asked = int(np.argsort(-m0.scores)[1])  # the runner-up class at the confident cell
    m = explain_detection(model, NAMES, image, target=asked)
    assert m.predicted == asked and set(m.gradcam) == {asked}
    mine = det["labels"] == asked + 1
    best = int(torch.nonzero(mine).flatten()[int(det["scores"][mine].argmax())])
    assert m.scores[asked] == pytest.approx(float(det["scores"][best]), rel=1e-5)
    np.testing.assert_allclose(m.box, det["boxes"][best].tolist(), rtol=1e-5, atol=1e-4)
    # Grad-CAM of the best detection's score by hand: autograd on the stride-8 Darknet map
    w = smooth_iif(COUNTS)
    store = {}
    hook = model.backbone.stages[2].register_forward_hook(lambda mod, i, o: store.setdefault("a", o))
    try:
        x = F.interpolate(_tensor(image)[None], size=(64, 64), mode="bilinear", align_corners=False)
        cell = m0.cell
        level = {8: 0, 16: 1, 32: 2}[cell["stride"]]
        p = model.head(model.backbone(x))[level][0, cell["anchor"], cell["row"], cell["col"]]
    finally:
        hook.remove()
    score = torch.sigmoid(p[4]) * torch.softmax(w * p[5:], 0)[m0.predicted]
    want = gradcam_by_hand(score, store["a"], (H, W))
    assert (want > 0).any()
    np.testing.assert_allclose(m0.gradcam[m0.predicted], want, rtol=1e-3, atol=1e-7)


def test_no_box_above_the_threshold_is_one_line(image):
    from iif.errors import IIFError

    model = confident_model()
    model.score_thresh = 0.9999  # above sigmoid(8) = 0.99966
    with pytest.raises(IIFError, match="finds no box") as err:
        explain_detection(model, NAMES, image)
    assert "\n" not in str(err.value)


def _det_train_args(bench, out, method):
    return ["det-train", "det_bench_softmax", f"data.root={bench}", "model.arch=yolov3_tiny_cpu",
            "model.anchor_sizes=null", "model.min_size=64", "model.max_size=64", "data.max_train_images=8",
            "data.max_val_images=4", "schedule.batch_size=4", "schedule.warmup_iters=1", "schedule.epochs=1",
            "schedule.milestones=[1]", f"margin.method={method}", "eval.batch_size=4", "runtime.threads=1",
            "--out", str(out), "--quiet"]


def test_cli_compares_a_softmax_and_an_iif_yolov3_run(detection_benchmark, tmp_path, capsys):
    pytest.importorskip("faster_coco_eval")
    rows = explain_compared_runs(detection_benchmark[0], tmp_path,
                                 lambda out, method: _det_train_args(detection_benchmark[0], out, method))
    for row, det in rows:
        assert_row_is_the_best_detection(row, det)
        assert set(row["objectness_peak"]) == {"8", "16", "32"} and row["cell"]["stride"] in (8, 16, 32)
        assert len(row["box"]) == 4 and row["layer"].startswith("backbone.stages.2")
    capsys.readouterr()
