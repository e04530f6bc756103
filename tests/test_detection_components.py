"""Table XV's components as build options (iif.detection.components, iif.detection.mask_heads): the normalised
mask predictor against an independent computation, the NMS IoU and mask thresholds as build / config keys."""

import numpy as np
import pytest
import torch

pytest.importorskip("torchvision")

from iif.errors import IIFError  # noqa: E402

_KW = dict(min_size=64, max_size=64, fpn_channels=16, representation_size=32, returned_layers=(2, 3, 4),
           anchor_sizes=((16,), (32,), (64,), (128,)), box_batch_size_per_image=32)


def test_normalised_conv_logits_match_an_independent_computation():
    from iif.detection.mask_heads import NormalisedConv2d

    torch.manual_seed(0)
    conv = NormalisedConv2d(5, 3, temperature=20.0)
    with torch.no_grad():
        conv.bias.copy_(torch.tensor([0.5, -1.0, 2.0]))
    x = torch.randn(2, 5, 4, 6, dtype=torch.float64)
    conv = conv.double()
    got = conv(x).detach().numpy()
    xn, w, b = x.numpy(), conv.weight.detach().numpy()[:, :, 0, 0], conv.bias.detach().numpy()
    want = np.zeros((2, 3, 4, 6))
    for n in range(2):
        for i in range(4):
            for j in range(6):
                f = xn[n, :, i, j]
                for k in range(3):
                    cos = f @ w[k] / ((np.linalg.norm(f) + 1e-6) * (np.linalg.norm(w[k]) + 1e-6))
                    want[n, k, i, j] = 20.0 * cos + b[k]
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    # Scaling a pixel's features or a class's weights leaves the logits unchanged (up to eps).
    with torch.no_grad():
        conv.weight[1] *= 7.0
    np.testing.assert_allclose(conv(3.0 * x).detach().numpy(), want, rtol=1e-5, atol=1e-5)


def test_build_detector_normalised_mask_predictor_trains():
    from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor

    from iif.detection.mask_heads import NormalisedConv2d, NormalisedMaskPredictor
    from iif.detection.models import build_detector

    torch.manual_seed(0)
    assert isinstance(build_detector("maskrcnn_r10_fpn", 3, mask_layers=(8,), **_KW).roi_heads.mask_predictor,
                      MaskRCNNPredictor)
    model = build_detector("maskrcnn_r10_fpn", 3, mask_layers=(8,), mask_predictor="normalised", **_KW)
    pred = model.roi_heads.mask_predictor
    assert isinstance(pred, NormalisedMaskPredictor) and isinstance(pred.mask_fcn_logits, NormalisedConv2d)
    assert pred.mask_fcn_logits.out_channels == 4 and pred.mask_fcn_logits.temperature == 20.0
    mask = torch.zeros(1, 64, 64, dtype=torch.uint8)
    mask[0, 5:30, 5:30] = 1
    targets = [{"boxes": torch.tensor([[5.0, 5, 30, 30]]), "labels": torch.tensor([2]), "masks": mask}]
    model.train()
    losses = model([torch.rand(3, 64, 64)], targets)
    losses["loss_mask"].backward()
    assert pred.mask_fcn_logits.weight.grad.abs().sum() > 0
    logits = pred(torch.randn(4, 8, 7, 7))
    assert logits.shape == (4, 4, 14, 14) and float(logits.detach().abs().max()) <= 20.0 + 1e-4  # bias starts at 0


def _two_boxes():
    # Two proposals of class 1 overlapping at IoU 0.4 (20x20 boxes shifted so the overlap is 400*4/7 px).
    shift = 20.0 * (1 - 0.4 * 2 / 1.4)  # IoU = (20 - s) * 20 / (800 - (20 - s) * 20) = 0.4
    return [torch.tensor([[0.0, 0, 20, 20], [shift, 0, 20 + shift, 20]])]


def test_box_nms_thresh_sets_the_final_nms_iou():
    from torchvision.ops import box_iou

    from iif.detection.models import build_detector

    proposals = _two_boxes()
    assert abs(float(box_iou(proposals[0][:1], proposals[0][1:])) - 0.4) < 1e-6
    logits = torch.tensor([[0.0, 3.0, -2.0, -2.0], [0.0, 2.5, -2.0, -2.0]])
    kept = {}
    for thresh in (None, 0.5, 0.3):
        model = build_detector("fasterrcnn_r10_fpn", 3, box_nms_thresh=thresh, **_KW)
        assert model.roi_heads.nms_thresh == (0.5 if thresh is None else thresh)
        boxes, scores, labels = model.roi_heads.postprocess_detections(logits, torch.zeros(2, 16), proposals,
                                                                       [(64, 64)])
        kept[thresh] = int((labels[0] == 1).sum())
    assert kept == {None: 2, 0.5: 2, 0.3: 1}  # IoU 0.4 survives NMS at 0.5, not at 0.3
    ssd = build_detector("ssd300_vgg16", 3, box_nms_thresh=0.3)
    assert ssd.nms_thresh == 0.3


def test_mask_thresh_binarises_the_evaluated_masks():
    pytest.importorskip("pycocotools")
    from iif.detection.components import mask_threshold
    from iif.detection.data_results import detections_to_results
    from iif.detection.models import build_detector

    probs = torch.zeros(1, 1, 8, 8)
    probs[0, 0, :2, :] = 0.9  # 16 px
    probs[0, 0, 2:5, :] = 0.45  # 24 px between 0.4 and 0.5
    out = [{"boxes": torch.tensor([[0.0, 0, 8, 8]]), "labels": torch.tensor([1]), "scores": torch.tensor([0.8]),
            "masks": probs}]
    from pycocotools import mask as mask_utils

    def area(t):
        rle = detections_to_results(out, [1], [7], masks=True, **t)[0]["segmentation"]
        return int(mask_utils.area({"size": rle["size"], "counts": rle["counts"].encode()}))

    assert area({}) == 16 and area({"mask_thresh": 0.5}) == 16 and area({"mask_thresh": 0.4}) == 40
    model = build_detector("maskrcnn_r10_fpn", 3, mask_layers=(8,), mask_thresh=0.4, **_KW)
    assert mask_threshold(model) == 0.4
    assert mask_threshold(build_detector("maskrcnn_r10_fpn", 3, mask_layers=(8,), **_KW)) == 0.5


def test_config_keys_reach_the_detector_and_default_runs_keep_their_keys():
    from iif.detection.config import load_detection_config, model_kwargs

    cfg = load_detection_config(None, ["model.box_nms_thresh=0.3", "model.mask_thresh=0.4",
                                       "model.mask_predictor=normalised"])
    kw = model_kwargs(cfg)
    assert (kw["box_nms_thresh"], kw["mask_thresh"], kw["mask_predictor"]) == (0.3, 0.4, "normalised")
    plain = model_kwargs(load_detection_config(None))
    assert not {"box_nms_thresh", "mask_thresh", "mask_predictor"} & set(plain)


@pytest.mark.parametrize("override, match", [
    ("model.mask_predictor=cosine", "model.mask_predictor' is 'cosine'; use one of standard, normalised"),
    ("model.box_nms_thresh=0", r"model.box_nms_thresh' must be an IoU in \(0, 1\]"),
    ("model.box_nms_thresh=1.5", r"model.box_nms_thresh' must be an IoU in \(0, 1\]"),
    ("model.mask_thresh=1", r"model.mask_thresh' must be a probability in \(0, 1\)"),
])
def test_bad_component_keys_are_one_line(override, match):
    from iif.detection.config import load_detection_config

    with pytest.raises(IIFError, match=match):
        load_detection_config(None, [override])


def test_components_the_arch_cannot_take_are_refused():
    from iif.detection.config import load_detection_config
    from iif.detection.models import build_detector

    with pytest.raises(IIFError, match="has no mask head"):
        build_detector("fasterrcnn_r10_fpn", 3, mask_predictor="normalised", **_KW)
    with pytest.raises(IIFError, match="predicts no masks"):
        build_detector("fasterrcnn_r10_fpn", 3, mask_thresh=0.4, **_KW)
    with pytest.raises(IIFError, match="class_agnostic_mask"):
        build_detector("maskrcnn_r10_fpn", 3, mask_predictor="normalised", class_agnostic_mask=True, **_KW)
    with pytest.raises(IIFError, match="config key 'model.mask_thresh'.*predicts no masks"):
        load_detection_config(None, ["model.arch=fasterrcnn_r50_fpn", "model.mask_thresh=0.4"])


def test_predict_binarises_masks_at_the_models_mask_thresh():
    """iif.detection.predict (det-train's and det-eval's evaluation) encodes masks at model.mask_thresh."""
    pytest.importorskip("pycocotools")
    import types

    from pycocotools import mask as mask_utils

    from iif.detection.components import apply_thresholds
    from iif.detection.engine import predict

    probs = torch.zeros(1, 1, 8, 8)
    probs[0, 0, :3, :] = 0.45  # 24 px between 0.4 and 0.5

    class Fixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.roi_heads = types.SimpleNamespace(has_mask=lambda: True, mask_roi_pool=None)

        def forward(self, images):
            return [{"boxes": torch.tensor([[0.0, 0, 8, 8]]), "labels": torch.tensor([1]),
                     "scores": torch.tensor([0.9]), "masks": probs} for _ in images]

    class Data(list):
        category_ids = [7]

    data = Data([(torch.rand(3, 8, 8), {"image_id": 3})])
    areas = []
    for thresh in (None, 0.4):
        model = apply_thresholds(Fixed(), mask_thresh=thresh)
        seg = predict(model, data, batch_size=1)[0]["segmentation"]
        areas.append(int(mask_utils.area({"size": seg["size"], "counts": seg["counts"].encode()})))
    assert areas == [0, 24]
