"""iif explain on SSD (torchvision's): per-anchor class scores, class-score heatmaps per map, Grad-CAM.

A tiny torchvision SSD (a three-convolution stride-8 trunk ``backbone.features`` as SSD300's VGG16, one extra
stride-16 map, 4 anchors per location, 64 x 64 input) is made confident at one hand-picked place: the
classification convolution of the stride-8 map gets a bias map adding +2 to the raw logit of class ``CONF``
at one (anchor, cell). Then the class-score heatmap of the stride-8 map must peak in that cell of the image,
the class scores must equal ``softmax(w * z)`` (``w`` the smooth IIF weights computed here from the counts, 1
for the background; ``z`` read from the convolution by a hook), the detection must be the model's own best
(label, score, box), and Grad-CAM must equal a hand computation by autograd on ``backbone.features`` (for an asked
class: the random trunk has no positive evidence for ``CONF``, whose Grad-CAM is zero). A
softmax/IIF pair goes to a PNG through ``plot_explanations``; an ``ssd300_vgg16`` det-train run pair through
the CLI's --compare.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import captum  # noqa: F401  (the dev extra installs it)
from _detection_helpers import PlusMap as _PlusMap
from _detection_helpers import assert_row_is_the_best_detection, explain_compared_runs, gradcam_by_hand
from _detection_helpers import image_tensor as _tensor
from _detection_helpers import smooth_iif
from _detection_helpers import write_noise_image

from iif.detection import use_margin
from iif.explain_detection import explain_detection

pytestmark = pytest.mark.filterwarnings("ignore:.*classes have no training images:UserWarning")

C = 4
K = C + 1                     # logits per anchor, background first
COUNTS = [100, 20, 5, 1]
NAMES = ["a", "b", "c", "d"]
CONF = 2                      # the class made confident (a rare one)
H, W = 40, 72                 # the image: not square, each cell of the 8 x 8 map is 5 x 9 pixels of it
A, ANCHOR, ROW, COL = 4, 3, 5, 2


class _Trunk(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        conv = [torch.nn.Conv2d(3 if i == 0 else 8, 8, 3, stride=2, padding=1) for i in range(3)]
        self.features = torch.nn.Sequential(*[m for c in conv for m in (c, torch.nn.ReLU())])   # stride 8
        self.extra = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, stride=2, padding=1), torch.nn.ReLU())

    def forward(self, x):
        f = self.features(x)
        return OrderedDict([("0", f), ("1", self.extra(f))])


def confident_model(method: str = "iif") -> torch.nn.Module:
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
    from torchvision.models.detection.ssd import SSD

    torch.manual_seed(0)
    model = SSD(_Trunk(), DefaultBoxGenerator([[2], [2]]), (64, 64), K, score_thresh=0.01)
    assert model.anchor_generator.num_anchors_per_location() == [A, A]
    head = model.head.classification_head
    with torch.no_grad():
        for conv in head.module_list:
            conv.weight.mul_(3.0)  # raw logits of order 0.2 (the +2 stands out after any IIF weight)
        bias_map = torch.zeros(1, A * K, 8, 8)
        bias_map[0, ANCHOR * K + CONF + 1, ROW, COL] = 2.0
        head.module_list[0] = _PlusMap(head.module_list[0], bias_map)
    if method == "iif":
        use_margin(model, "iif", COUNTS, variant="smooth")
    return model.eval()


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return write_noise_image(tmp_path_factory.mktemp("explain-ssd") / "img.png", H, W)


def _raw_and_detections(model, path):
    """The stride-8 map's raw class logits ``(A, K, 8, 8)`` (hooked) and the detections of one eval forward."""
    store = []
    conv = model.head.classification_head.module_list[0]
    handle = conv.register_forward_hook(lambda m, i, o: store.append(o.detach()))
    try:
        with torch.no_grad():
            det = model([_tensor(path)])[0]
    finally:
        handle.remove()
    return store[0][0].view(A, K, 8, 8), det


@pytest.mark.parametrize("method", ["iif", "softmax"])
def test_scores_are_softmax_of_w_z_at_the_anchor_and_the_detectors_own(image, method):
    model = confident_model(method)
    raw, det = _raw_and_detections(model, image)
    w = smooth_iif(COUNTS, background=True) if method == "iif" else torch.ones(K)
    z = raw[ANCHOR, :, ROW, COL]
    want = torch.softmax(w * z, 0)  # by hand
    m = explain_detection(model, NAMES, image, label=method)
    assert m.predicted == CONF and m.cell == {"map": "8x8", "row": ROW, "col": COL, "anchor": ANCHOR}
    np.testing.assert_allclose(m.scores, want[1:].numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(m.logits, (w * z)[1:].numpy(), rtol=1e-5, atol=1e-6)
    best = int(det["scores"].argmax())
    assert int(det["labels"][best]) - 1 == CONF
    assert m.scores[CONF] == pytest.approx(float(det["scores"][best]), rel=1e-5)
    np.testing.assert_allclose(m.box, det["boxes"][best].tolist(), rtol=1e-5, atol=1e-4)
    # the heatmap of the stride-8 map: max over the anchors of softmax(w z)_CONF, peaking in the hand-picked cell
    by_hand = torch.softmax(w[None, :, None, None] * raw, 1)[:, CONF + 1].amax(0)  # (8, 8)
    fine = m.level_maps["8x8"]
    assert set(m.level_maps) == {"8x8", "4x4"} and fine.shape == (H, W)
    r, c = np.unravel_index(int(np.argmax(fine)), fine.shape)
    assert ROW * H // 8 <= r < (ROW + 1) * H // 8 and COL * W // 8 <= c < (COL + 1) * W // 8
    assert fine.max() == pytest.approx(float(by_hand.max()), rel=1e-5)  # the cell's centre is a sample point
    want_map = F.interpolate(by_hand[None, None], size=(H, W), mode="bilinear", align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(fine, want_map, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(m.score_map, np.maximum(fine, m.level_maps["4x4"]))
    assert m.summary()["level_peak"]["8x8"] == [int(r), int(c)]


def _cam_by_hand(model, image, cell, cls):
    """Grad-CAM of ``softmax(w z)_cls`` at ``cell`` (stride-8 map) on ``backbone.features``, by autograd."""
    store = {}
    hooks = [model.backbone.features.register_forward_hook(lambda mod, i, o: store.setdefault("a", o)),
             model.head.classification_head.module_list[0].register_forward_hook(
                 lambda mod, i, o: store.setdefault("z", o))]
    try:
        x = F.interpolate(_tensor(image)[None], size=(64, 64), mode="bilinear", align_corners=False)
        mean, std = (torch.tensor(v)[:, None, None] for v in (model.transform.image_mean, model.transform.image_std))
        model.head(list(model.backbone((x - mean) / std).values()))
    finally:
        for h in hooks:
            h.remove()
    z = store["z"][0].view(A, K, 8, 8)[cell["anchor"], :, cell["row"], cell["col"]]
    score = torch.softmax(smooth_iif(COUNTS, background=True) * z, 0)[cls + 1]
    return gradcam_by_hand(score, store["a"], (H, W))


def test_gradcam_equals_autograd_by_hand_and_an_asked_class_is_its_best_box(image):
    model = confident_model()
    model.score_thresh, model.topk_candidates, model.detections_per_img = 0.0, 10 ** 6, 10 ** 6
    _, det = _raw_and_detections(model, image)
    m0 = explain_detection(model, NAMES, image)
    assert m0.layer == "backbone.features"
    # this random trunk has no positive evidence for CONF (its Grad-CAM is zero, by hand too) ...
    np.testing.assert_allclose(m0.gradcam[CONF], _cam_by_hand(model, image, m0.cell, CONF), rtol=1e-3, atol=1e-7)
    # ... an asked class has: explained at its own best box, with its Grad-CAM
    asked = 1
    m = explain_detection(model, NAMES, image, target=asked)
    mine = det["labels"] == asked + 1
    best = int(torch.nonzero(mine).flatten()[int(det["scores"][mine].argmax())])
    assert m.predicted == asked and set(m.gradcam) == {asked} and m.cell["map"] == "8x8"
    assert m.scores[asked] == pytest.approx(float(det["scores"][best]), rel=1e-5)
    np.testing.assert_allclose(m.box, det["boxes"][best].tolist(), rtol=1e-5, atol=1e-4)
    want = _cam_by_hand(model, image, m.cell, asked)
    assert (want > 0).any()
    np.testing.assert_allclose(m.gradcam[asked], want, rtol=1e-3, atol=1e-7)


def test_no_box_above_the_threshold_is_one_line_and_a_pair_draws(image, tmp_path):
    from iif.errors import IIFError
    from iif.explain import plot_explanations

    model = confident_model()
    model.score_thresh = 0.99999
    with pytest.raises(IIFError, match="finds no box") as err:
        explain_detection(model, NAMES, image)
    assert "\n" not in str(err.value)
    pair = [explain_detection(confident_model(m), NAMES, image, target=CONF, label=m) for m in ("softmax", "iif")]
    assert pair[1].scores[CONF] > pair[0].scores[CONF]  # w_CONF > 1 sharpens the rare class's score
    plot_explanations(pair, "img.png").savefig(tmp_path / "pair.png")
    with Image.open(tmp_path / "pair.png") as im:
        im.load()
        assert im.size[0] > 100 and im.size[1] > 100


def test_an_ssd_backbone_without_features_is_one_line(image):
    from iif.errors import IIFError

    model = confident_model()
    model.backbone.trunk = model.backbone.features  # the same map under another name: the layer is not found
    del model.backbone.features
    model.backbone.forward = lambda x: OrderedDict([("0", f := model.backbone.trunk(x)), ("1", model.backbone.extra(f))])
    with pytest.raises(IIFError, match="backbone.features .torchvision's SSD300 VGG16.; _Trunk has none") as err:
        explain_detection(model, NAMES, image)
    assert "\n" not in str(err.value)


@pytest.mark.slow  # two SSD300 det-train runs: 41.6 s on the shared 2-core machine (2026-12-06)
def test_cli_compares_a_softmax_and_an_iif_ssd300_run(detection_benchmark, tmp_path, capsys):
    pytest.importorskip("faster_coco_eval")
    bench = detection_benchmark[0]
    rows = explain_compared_runs(bench, tmp_path, lambda out, method: [
        "det-train", "det_bench_softmax", f"data.root={bench}", "model.arch=ssd300_vgg16", "model.anchor_sizes=null",
        "data.max_train_images=4", "data.max_val_images=4", "schedule.batch_size=4", "schedule.warmup_iters=1",
        "schedule.epochs=1", "schedule.milestones=[1]", f"margin.method={method}", "eval.batch_size=2",
        "runtime.threads=1", "--out", str(out), "--quiet"])
    for row, det in rows:
        assert_row_is_the_best_detection(row, det)
        assert row["layer"] == "backbone.features" and set(row["level_peak"]) == {
            "38x38", "19x19", "10x10", "5x5", "3x3", "1x1"}
    capsys.readouterr()
