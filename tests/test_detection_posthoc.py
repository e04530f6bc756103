"""The RoI cache gives exactly the detections of a full forward pass (iif.detection.posthoc)."""

import pytest
import torch

torchvision = pytest.importorskip("torchvision")

from torchvision.models.detection import FasterRCNN, MaskRCNN  # noqa: E402
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone  # noqa: E402
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead  # noqa: E402
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor  # noqa: E402

from iif.detection.posthoc import cache_roi_inputs, detect_from_cache  # noqa: E402
from iif.errors import IIFError  # noqa: E402


def _model(cls, num_classes=6):
    """torchvision's own Faster/Mask R-CNN classes on a ResNet-18 FPN, with slim box and mask heads (one 16-channel
    mask conv instead of four 256-channel ones: the default mask head is most of a CPU forward pass, and
    the cache must be exact whatever the heads' widths)."""
    torch.manual_seed(0)
    backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5,
                                   norm_layer=torch.nn.BatchNorm2d)
    heads = dict(box_head=TwoMLPHead(backbone.out_channels * 7 * 7, 64), box_predictor=FastRCNNPredictor(64, num_classes))
    if cls is MaskRCNN:
        heads.update(mask_head=MaskRCNNHeads(backbone.out_channels, [16], 1),
                     mask_predictor=MaskRCNNPredictor(16, 16, num_classes))
    m = cls(backbone, num_classes=None, min_size=64, max_size=64, rpn_pre_nms_top_n_test=100,
            rpn_post_nms_top_n_test=50, box_score_thresh=0.0, box_detections_per_img=30, **heads)
    return m.eval()


def _batches():
    g = torch.Generator().manual_seed(1)
    imgs = [torch.rand(3, 64, 64, generator=g), torch.rand(3, 48, 64, generator=g), torch.rand(3, 64, 40, generator=g)]
    return [(imgs[:2], [{"image_id": 5}, {"image_id": 9}]), (imgs[2:], [{"image_id": 2}])], imgs


@pytest.mark.parametrize("cls", [MaskRCNN, FasterRCNN])
def test_cache_matches_full_forward(cls):
    model = _model(cls)
    batches, imgs = _batches()
    cache = cache_roi_inputs(model, batches)
    assert cache.image_ids == [5, 9, 2]
    got = detect_from_cache(model, cache)
    with torch.no_grad():
        want = model(imgs[:2]) + model(imgs[2:])
    assert len(got) == 3
    for g, w in zip(got, want):
        assert set(g) == set(w)
        assert g["boxes"].shape[0] > 0
        for k in w:
            torch.testing.assert_close(g[k], w[k], rtol=0, atol=0)


def test_cache_follows_a_changed_box_predictor():
    """Scaling the classifier's foreground logits after caching changes the cached detections exactly as it
    changes a full forward pass (the cache holds features, not scores)."""
    model = _model(FasterRCNN)
    batches, imgs = _batches()
    cache = cache_roi_inputs(model, batches)
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.weight[1:] *= 3.0
        want = model(imgs[:2]) + model(imgs[2:])
    got = detect_from_cache(model, cache)
    for g, w in zip(got, want):
        torch.testing.assert_close(g["scores"], w["scores"], rtol=0, atol=0)


def test_refuses_one_stage_models():
    with pytest.raises(IIFError, match="two-stage"):
        cache_roi_inputs(torch.nn.Linear(2, 2), [])


def test_masks_reused_across_margins_stay_exact():
    """Rows share mask-head work through the cache; every row still equals its own full forward pass."""
    from iif.detection import use_margin

    model = _model(MaskRCNN)
    batches, imgs = _batches()
    cache = cache_roi_inputs(model, batches)
    for method, kw in (("iif", {"variant": "raw"}), ("softmax", {}), ("logit_adjustment", {"when": "test"}),
                       ("iif", {"variant": "smooth", "by": "image"})):
        use_margin(model, method, [50, 20, 9, 4, 1] if method != "softmax" else None, **kw)
        got = detect_from_cache(model, cache)
        with torch.no_grad():
            want = model(imgs[:2]) + model(imgs[2:])
        for g, w in zip(got, want):
            for k in ("boxes", "labels", "scores"):
                torch.testing.assert_close(g[k], w[k], rtol=0, atol=0)
            # the mask head run on a different set of boxes rounds differently (float32 convolution order)
            torch.testing.assert_close(g["masks"], w["masks"], rtol=0, atol=1e-6)
    assert sum(len(m) for m in cache.batches[0]["masks"]) > 0


@pytest.mark.parametrize("cls", [MaskRCNN, FasterRCNN])
def test_iter_results_equals_detections_to_results_across_rows(cls):
    """The memoised json results (det-bench's rows) equal encoding each row's full detections afresh
    (detections_to_results on detect_from_cache), row after row, while the RLE memo fills up."""
    from iif.detection import use_margin
    from iif.detection.data import detections_to_results
    from iif.detection.posthoc import iter_results

    model = _model(cls)
    batches, _ = _batches()
    small = torch.rand(3, 32, 48, generator=torch.Generator().manual_seed(3))  # resized 4/3x: boxes scaled back
    batches = batches + [([small], [{"image_id": 4}])]
    cache = cache_roi_inputs(model, batches)
    fresh = cache_roi_inputs(model, batches)  # its own memo, so the reference never sees iter_results' strings
    cats = [3, 7, 11, 12, 40]
    masks = cls is MaskRCNN
    for method, kw in (("softmax", {}), ("iif", {"variant": "raw"}), ("logit_adjustment", {"when": "test"}),
                       ("softmax", {})):
        use_margin(model, method, [50, 20, 9, 4, 1] if method != "softmax" else None, **kw)
        got = [r for batch in iter_results(model, cache, cats, masks=masks) for r in batch]
        want = detections_to_results(detect_from_cache(model, fresh), cache.image_ids, cats, masks=masks)
        assert len(got) == len(want) > 0
        for g, w in zip(got, want):
            assert g["image_id"] == w["image_id"] and g["category_id"] == w["category_id"]
            assert g["bbox"] == w["bbox"] and g["score"] == w["score"]
            assert g.get("segmentation") == w.get("segmentation")
    if masks:
        assert sum(len(m) for m in cache.batches[0]["rles"]) > 0
    else:
        assert "rles" not in cache.batches[0]
