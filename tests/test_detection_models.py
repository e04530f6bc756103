"""build_detector options (iif.detection.models)."""

import pytest
import torch

pytest.importorskip("torchvision")


def test_class_agnostic_mask_shares_one_channel_and_trains_it():
    """class_agnostic_mask: every label reads the same mask logits (one channel, expanded), the loss trains
    that channel, and the per-class predictor stays torchvision's by default."""
    from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor
    from torchvision.models.detection.roi_heads import maskrcnn_inference

    from iif.detection.models import ClassAgnosticMaskPredictor, build_detector

    kw = dict(min_size=64, max_size=64, fpn_channels=16, representation_size=32, mask_layers=(8,),
              returned_layers=(2, 3, 4), anchor_sizes=((16,), (32,), (64,), (128,)))
    plain = build_detector("maskrcnn_r10_fpn", 5, **kw)
    assert isinstance(plain.roi_heads.mask_predictor, MaskRCNNPredictor)
    model = build_detector("maskrcnn_r10_fpn", 5, class_agnostic_mask=True, **kw)
    pred = model.roi_heads.mask_predictor
    assert isinstance(pred, ClassAgnosticMaskPredictor) and pred.mask_fcn_logits.out_channels == 1
    x = torch.randn(3, 8, 14, 14)
    logits = pred(x)
    assert logits.shape == (3, 6, 28, 28)
    for c in range(1, 6):
        torch.testing.assert_close(logits[:, c], logits[:, 1], rtol=0, atol=0)
    probs = maskrcnn_inference(logits, [torch.tensor([1, 4, 5])])[0]
    torch.testing.assert_close(probs[:, 0], logits[:, 1].sigmoid(), rtol=0, atol=1e-7)  # vectorised sigmoid rounding
    labels = torch.tensor([2, 5, 3])
    loss = logits[torch.arange(3), labels].sum()  # what maskrcnn_loss indexes
    loss.backward()
    assert pred.mask_fcn_logits.weight.grad is not None and pred.mask_fcn_logits.weight.grad.abs().sum() > 0
