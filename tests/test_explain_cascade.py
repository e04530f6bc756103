"""iif explain on the cascades (Cascade Mask R-CNN, HTC): the mean of the three stages' softmaxes.

A tiny ``cascade_maskrcnn_r10_fpn`` / ``htc_r10_fpn`` is made confident at one hand-picked place: its RPN is
replaced by a fixed list of proposals, and each stage's box head gets, for RoIs on the place (IoU > 0.8 with
it), a vector that raises that stage's raw logit of class ``CONF`` by 1.5 (by about 6 after the
IIF weight, so the softmax is not saturated and Grad-CAM not zero). Then the explained detection must be
that RoI's, its class scores must equal ``mean_t softmax(w * z_t)`` (``z_t`` each stage's raw logits read
by hooks during the model's own forward, ``w`` the smooth IIF weights computed here from the counts, 1 for
the background) without the background, the predicted bar must be the model's own detection score, the
box-score heatmap must peak on the place, and Grad-CAM must equal a hand computation by autograd on the last
ResNet stage. A det-train run pair (softmax, IIF) checks the CLI with --compare.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import captum  # noqa: F401  (the dev extra installs it)
from _detection_helpers import assert_row_is_the_best_detection, explain_compared_runs, gradcam_by_hand
from _detection_helpers import image_tensor as _tensor
from _detection_helpers import smooth_iif
from _detection_helpers import write_noise_image

from iif.detection import build_detector, use_margin
from iif.explain_detection import explain_detection

pytestmark = pytest.mark.filterwarnings("ignore:.*classes have no training images:UserWarning")

C = 4
COUNTS = [100, 20, 5, 1]
NAMES = ["a", "b", "c", "d"]
CONF = 2                                # the class made confident (a rare one)
SIDE = 64                               # the image: 64 x 64, so the transform keeps its size
PLACE = [8.0, 30.0, 28.0, 58.0]         # x0, y0, x1, y1 of the confident RoI (lower left of the image)
PROPOSALS = torch.tensor([[36.0, 2.0, 62.0, 26.0], [2.0, 2.0, 30.0, 22.0], PLACE, [34.0, 34.0, 60.0, 62.0],
                          [20.0, 10.0, 50.0, 40.0]])
K = 2                                   # PLACE's row among the proposals


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    from torchvision.ops import box_iou

    return box_iou(a, b[None]).flatten()


class _FixedRPN(torch.nn.Module):
    def forward(self, images, features, targets=None):
        return [PROPOSALS.clone() for _ in images.image_sizes], {}


class _RecordingPool(torch.nn.Module):
    """The box RoI pool, remembering the boxes of its last call (what the box heads below read)."""

    def __init__(self, pool: torch.nn.Module) -> None:
        super().__init__()
        self.pool, self.calls = pool, []

    def forward(self, features, boxes, image_sizes):
        self.calls.append(torch.cat(boxes).detach())
        return self.pool(features, boxes, image_sizes)


class _PlaceBias(torch.nn.Module):
    """A stage's box head plus ``v`` on the RoIs (of the pool's last call) that lie on PLACE."""

    def __init__(self, head: torch.nn.Module, pool: _RecordingPool, v: torch.Tensor) -> None:
        super().__init__()
        self.head, self.pool = head, pool
        self.register_buffer("v", v)

    def forward(self, x):
        on = (_iou(self.pool.calls[-1], torch.tensor(PLACE)) > 0.8).float()[:, None]
        return self.head(x) + on * self.v


def _linear(predictor):
    return getattr(predictor, "predictor", predictor).cls_score


def confident_model(arch: str = "cascade_maskrcnn_r10_fpn", method: str = "iif") -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_detector(arch, C, masks=arch.startswith("htc"), min_size=SIDE, max_size=SIDE, fpn_channels=16,
                           representation_size=32, log=lambda *a, **k: None)
    if method == "iif":
        use_margin(model, "iif", COUNTS, variant="smooth")
    roi = model.roi_heads
    model.rpn = _FixedRPN()
    roi.box_roi_pool = pool = _RecordingPool(roi.box_roi_pool)
    with torch.no_grad():
        for t in range(3):
            head, predictor = roi.stage(t)
            lin = _linear(predictor)
            lin.weight.mul_(30.0)  # raw logits of order 1, so the softmaxes are not all equal
            row = lin.weight[CONF + 1]
            name = "box_head" if t == 0 else f"box_head_{t + 1}"
            setattr(roi, name, _PlaceBias(head, pool, 1.5 * row / row.dot(row)))
    roi.score_thresh = 0.0
    return model.eval()


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return write_noise_image(tmp_path_factory.mktemp("explain-cascade") / "img.png", SIDE, SIDE)


def _forward_with_hooks(model, path):
    """The detections of one ordinary eval forward, each stage's raw logits (hooked on its linear layer) and
    the boxes each stage pooled (the recording pool)."""
    roi = model.roi_heads
    raw, handles = [], [_linear(roi.stage(t)[1]).register_forward_hook(lambda m, i, o: raw.append(o.detach()))
                        for t in range(3)]
    roi.box_roi_pool.calls.clear()
    try:
        with torch.no_grad():
            det = model([_tensor(path)])[0]
    finally:
        for h in handles:
            h.remove()
    return det, raw, list(roi.box_roi_pool.calls[:3])


@pytest.mark.parametrize("arch, method", [("cascade_maskrcnn_r10_fpn", "iif"), ("cascade_maskrcnn_r10_fpn", "softmax"),
                                          ("htc_r10_fpn", "iif")])
def test_scores_are_the_mean_of_the_stages_softmaxes_of_w_z_and_the_detectors_own(image, arch, method):
    model = confident_model(arch, method)
    det, raw, pooled = _forward_with_hooks(model, image)
    w = smooth_iif(COUNTS, background=True) if method == "iif" else torch.ones(C + 1)
    want = sum(torch.softmax(w * z[K], 0) for z in raw) / 3  # by hand, the confident RoI's row
    m = explain_detection(model, NAMES, image, label=f"{method} {arch}")
    assert m.predicted == CONF and int(want[1:].argmax()) == CONF
    np.testing.assert_allclose(m.scores, want[1:].numpy(), rtol=1e-5, atol=1e-7)
    assert m.proposal == PLACE
    best = int(det["scores"].argmax())
    assert int(det["labels"][best]) - 1 == CONF
    assert m.scores[CONF] == pytest.approx(float(det["scores"][best]), rel=1e-5)
    np.testing.assert_allclose(m.box, det["boxes"][best].tolist(), rtol=1e-5)
    np.testing.assert_allclose(m.box, pooled[2][K].tolist(), atol=0.5)  # a small regression away from PLACE
    # the box-score heatmap: the confident RoI's score of CONF over its box, the other RoIs' lower ones elsewhere
    assert m.score_map.shape == (SIDE, SIDE)
    assert float(m.score_map.max()) == pytest.approx(float(want[CONF + 1]), rel=1e-5)
    r, c = np.unravel_index(int(np.argmax(m.score_map)), m.score_map.shape)
    assert PLACE[1] <= r < PLACE[3] and PLACE[0] <= c < PLACE[2]
    assert m.summary()["score_map_peak"] == [int(r), int(c)]


def test_gradcam_equals_autograd_by_hand_and_an_asked_class_is_its_best_box(image):
    model = confident_model()
    det, raw, pooled = _forward_with_hooks(model, image)
    m0 = explain_detection(model, NAMES, image)
    # Grad-CAM of the mean softmax score of CONF on layer4, by hand, on the boxes each stage pooled
    roi = model.roi_heads
    img = _tensor(image)
    images, _ = model.transform([img])
    store = {}
    hook = model.backbone.body.layer4.register_forward_hook(lambda mod, i, o: store.setdefault("a", o))
    try:
        feats = model.backbone(images.tensors)
    finally:
        hook.remove()
    w = smooth_iif(COUNTS, background=True)
    probs = []
    for t in range(3):
        head, predictor = roi.stage(t)
        x = head(roi.box_roi_pool(feats, [pooled[t][K][None]], images.image_sizes))
        probs.append(torch.softmax(predictor(x)[0][0], 0))
        assert torch.allclose(_linear(predictor)(x.flatten(1))[0] * w, predictor(x)[0][0])  # the margin: w * z
    score = sum(probs)[CONF + 1] / 3
    want = gradcam_by_hand(score, store["a"], (SIDE, SIDE))
    assert (want > 0).any() and m0.layer == "backbone.body.layer4"
    np.testing.assert_allclose(m0.gradcam[CONF], want, rtol=1e-3, atol=1e-7)
    # an asked class: explained at its own best box, with its Grad-CAM
    asked = 0
    m = explain_detection(model, NAMES, image, target=asked)
    mine = det["labels"] == asked + 1
    best = int(torch.nonzero(mine).flatten()[int(det["scores"][mine].argmax())])
    assert m.predicted == asked and set(m.gradcam) == {asked}
    assert m.scores[asked] == pytest.approx(float(det["scores"][best]), rel=1e-5)
    np.testing.assert_allclose(m.box, det["boxes"][best].tolist(), rtol=1e-5)


TINY = ["data.max_train_images=8", "data.max_val_images=4", "model.min_size=64", "model.max_size=64",
        "model.fpn_channels=16", "model.representation_size=32", "model.box_detections_per_img=20",
        "schedule.batch_size=4", "schedule.warmup_iters=1", "schedule.milestones=[1]", "eval.batch_size=4",
        "runtime.threads=1", "schedule.epochs=1", "model.arch=cascade_maskrcnn_r10_fpn", "data.masks=false"]


def test_cli_compares_a_softmax_and_an_iif_cascade_run(detection_benchmark, tmp_path, capsys):
    pytest.importorskip("faster_coco_eval")
    bench = detection_benchmark[0]
    rows = explain_compared_runs(bench, tmp_path, lambda out, method: [
        "det-train", "det_bench_softmax", f"data.root={bench}", *TINY, f"margin.method={method}", "--out", str(out),
        "--quiet"])
    for row, det in rows:
        assert_row_is_the_best_detection(row, det)
        assert row["layer"] == "backbone.body.layer4" and row["score_map_peak"] is not None
    capsys.readouterr()
