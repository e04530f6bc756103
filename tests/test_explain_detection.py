"""iif explain on a det-train detector (Faster R-CNN R10-FPN, one tiny epoch on the shared offline benchmark).

A one-epoch detector has not learnt where objects are, so these tests check the computation, each against a
route written here: the box's class scores are the softmax of the logits the box head gives the box pooled
again by hand (torchvision's RoI pieces called directly, background column dropped); Grad-CAM equals Grad-CAM
by hand (autograd on the last ResNet stage: ReLU of the gradient-mean-weighted channel sum), cropped to the
image and resized back. Where a trained classifier's maps peak is tested in tests/test_explain.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import captum  # noqa: F401  (the dev extra installs it)

from iif.cli import main
from iif.explain_detection import explain_detection, load_detector_run

TINY = ["data.max_train_images=24", "data.max_val_images=8", "model.min_size=64", "model.max_size=64",
        "model.fpn_channels=16", "model.representation_size=32", "model.box_detections_per_img=20",
        "schedule.batch_size=4", "schedule.warmup_iters=2", "schedule.milestones=[1]", "eval.batch_size=4",
        "runtime.threads=1", "schedule.epochs=1", "model.arch=fasterrcnn_r10_fpn", "data.masks=false"]


@pytest.fixture(scope="module")
def run(detection_benchmark, tmp_path_factory):
    bench = detection_benchmark[0]
    out = tmp_path_factory.mktemp("explain-det") / "run"
    assert main(["det-train", "det_bench_iif", f"data.root={bench}", *TINY, "--out", str(out), "--quiet"]) == 0
    image = sorted(p for p in bench.rglob("*.png") if "val" in p.parts[-2])[0]
    return out, image


def _hand(model, image, box):
    """Class scores and Grad-CAM of the proposal ``box`` by hand (torchvision pieces, autograd)."""
    img = torch.from_numpy(np.asarray(Image.open(image).convert("RGB"), np.float32) / 255.0).permute(2, 0, 1)
    images, _ = model.transform([img])
    (h0, w0), (h1, w1) = img.shape[-2:], images.image_sizes[0]
    b = torch.tensor(box)  # the proposal, already in the resized input's pixels
    store = {}
    hook = model.backbone.body.layer4.register_forward_hook(lambda m, i, o: store.setdefault("a", o))
    try:
        x = images.tensors.clone().requires_grad_(True)
        feats = model.backbone(x)
    finally:
        hook.remove()
    roi = model.roi_heads
    logits = roi.box_predictor(roi.box_head(roi.box_roi_pool(feats, [b[None]], images.image_sizes)))[0][0]
    scores = torch.softmax(logits.detach(), 0)[1:].numpy()
    return img, images, scores, logits, store["a"], (h0, w0), (h1, w1)


def test_scores_and_gradcam_of_the_best_box_equal_a_hand_computation(run):
    out, image = run
    model, names, label = load_detector_run(out)
    assert label.startswith("iif fasterrcnn_r10_fpn")
    m = explain_detection(model, names, image, target=None, label=label)
    with torch.no_grad():
        det = model([torch.from_numpy(np.asarray(Image.open(image).convert("RGB"), np.float32) / 255.0).permute(2, 0, 1)])[0]
    best = int(det["scores"].argmax())
    np.testing.assert_allclose(m.box, det["boxes"][best].tolist(), rtol=1e-5)
    assert m.predicted == int(det["labels"][best]) - 1
    # scored on the proposal the detection came from: torchvision's own score of the detection is among them
    assert m.scores[m.predicted] == pytest.approx(float(det["scores"][best]), rel=1e-4)
    _, images, scores, logits, act, (h0, w0), (h1, w1) = _hand(model, image, m.proposal)
    np.testing.assert_allclose(m.scores, scores, rtol=1e-4, atol=1e-6)
    assert len(m.scores) == len(names) and m.layer == "backbone.body.layer4"
    c = m.predicted + 1
    (g,) = torch.autograd.grad(logits[c], act)
    cam = torch.relu((g.mean((2, 3), keepdim=True) * act).sum(1))[0].detach()
    full = F.interpolate(cam[None, None], size=tuple(images.tensors.shape[-2:]), mode="bilinear", align_corners=False)
    want = F.interpolate(full[..., :h1, :w1], size=(h0, w0), mode="bilinear", align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(m.gradcam[m.predicted], want, rtol=1e-3, atol=1e-6)


def test_cli_explains_a_detector_run_and_an_asked_class(run, capsys):
    out, image = run
    model, names, _ = load_detector_run(out)
    with torch.no_grad():
        det = model([torch.from_numpy(np.asarray(Image.open(image).convert("RGB"), np.float32) / 255.0).permute(2, 0, 1)])[0]
    asked = int(det["labels"][-1]) - 1  # a class the detector found, though not necessarily its best box's
    dest = out.parent / "explained"
    assert main(["explain", str(out), str(image), "--class", names[asked], "--out", str(dest)]) == 0
    with Image.open(dest / "explain.png") as im:
        im.load()
    row = json.loads((dest / "explain.json").read_text())["checkpoints"][0]
    assert row["target"] == names[asked] and row["predicted"] == names[asked] and len(row["box"]) == 4
    capsys.readouterr()


def test_a_grey_image_and_a_class_without_boxes_are_one_line(run, capsys, tmp_path):
    out, image = run
    grey = tmp_path / "grey.png"
    Image.open(image).convert("L").save(grey)
    assert main(["explain", str(out), str(grey), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1 channel" in err and "3" in err
    model, names, _ = load_detector_run(out)
    with torch.no_grad():
        det = model([torch.from_numpy(np.asarray(Image.open(image).convert("RGB"), np.float32) / 255.0).permute(2, 0, 1)])[0]
    missing = sorted(set(range(len(names))) - {int(v) - 1 for v in det["labels"]})
    assert missing  # 20 classes, at most model.box_detections_per_img=20 boxes, several of one class
    assert main(["explain", str(out), str(image), "--class", names[missing[0]], "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "finds no box" in err and names[missing[0]] in err


def test_a_model_that_is_no_supported_detector_is_refused_in_one_line(run):
    from iif.errors import IIFError

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)).eval()  # no RoI heads, not SSD, not YOLOv3
    with pytest.raises(IIFError, match=r"RoI detectors .Faster / Mask R-CNN, Cascade Mask R-CNN, HTC., SSD and "
                                       r"YOLOv3 only; Sequential is none of them") as err:
        explain_detection(model, ["a", "b", "c"], run[1])
    assert "\n" not in str(err.value)
