"""The ResNeXt-101 64x4d backbone of ``maskrcnn_x101_64x4d_fpn`` (paper Table XIII, M.X101; issue 17).

Checked against routes that do not go through :func:`iif.detection.models._resnet`: the parameter count and the
grouped 3x3 conv shapes computed by hand (Xie et al.: C = 64 groups of width d = 4 in the first stage, doubling
per stage), torchvision's own ``resnext101_64x4d`` builder (key names and shapes), and timm's independent
ResNeXt implementation (its weights loaded as ``backbone_weights`` give the same stage-4 features).
"""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("torchvision")

from iif.detection.archs import ARCHS, has_masks, has_resnet_backbone  # noqa: E402
from iif.detection.models import build_detector  # noqa: E402
from iif.errors import IIFError  # noqa: E402

ARCH = "maskrcnn_x101_64x4d_fpn"
SMALL = dict(min_size=64, max_size=64, fpn_channels=16, representation_size=32, mask_layers=[8],
             box_detections_per_img=10, rpn_pre_nms_top_n_train=50, rpn_post_nms_top_n_train=20,
             rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20, box_batch_size_per_image=16)


def _hand_count() -> tuple[int, dict[str, tuple[int, ...]]]:
    """ResNeXt-101 64x4d's parameters (with the 1000-way fc) and the 3x3 conv shape of each stage's first block,
    from the block recipe: stage planes p = 64, 128, 256, 512 with 3, 4, 23, 3 blocks; the bottleneck width is
    groups x width_per_group x p / 64 = 4p, split into 64 groups (4p / 64 input channels per filter), and the
    block's output is 4p; BatchNorm has a weight and a bias per channel; the first block of each stage has a
    1x1 projection shortcut."""
    total = 3 * 64 * 7 * 7 + 2 * 64  # stem conv + bn
    inp, shapes = 64, {}
    for stage, (p, n) in enumerate(zip((64, 128, 256, 512), (3, 4, 23, 3)), start=1):
        width, out = 4 * p, 4 * p
        shapes[f"layer{stage}.0.conv2.weight"] = (width, width // 64, 3, 3)
        for b in range(n):
            total += inp * width + 2 * width            # conv1 1x1 + bn1
            total += width * (width // 64) * 9 + 2 * width  # grouped conv2 3x3 + bn2
            total += width * out + 2 * out              # conv3 1x1 + bn3
            if b == 0:
                total += inp * out + 2 * out            # downsample 1x1 + bn
            inp = out
    return total + 2048 * 1000 + 1000, shapes


def test_arch_is_registered_as_a_resnet_backbone_with_masks():
    assert ARCHS[ARCH] == ("maskrcnn", "x101_64x4d")
    assert has_resnet_backbone(ARCH) and has_masks(ARCH)


def test_parameter_count_and_group_conv_shapes_match_hand_count_and_torchvision():
    from torchvision.models import resnext101_64x4d

    from iif.detection.models import _resnet

    ours = _resnet("x101_64x4d", "bn")
    total, shapes = _hand_count()
    assert total == 83_455_272  # torchvision's published num_params of ResNeXt101_64X4D_Weights
    assert sum(p.numel() for p in ours.parameters()) == total
    state = ours.state_dict()
    for key, shape in shapes.items():
        assert tuple(state[key].shape) == shape, key
    convs = [m.conv2 for stage in (ours.layer1, ours.layer2, ours.layer3, ours.layer4) for m in stage]
    assert len(convs) == 33 and all(c.groups == 64 for c in convs)
    tv = resnext101_64x4d(weights=None).state_dict()
    assert {k: tuple(v.shape) for k, v in tv.items()} == {k: tuple(v.shape) for k, v in state.items()}


@pytest.fixture(scope="module")
def timm_file(tmp_path_factory):
    """timm's ResNeXt-101 64x4d (random init, seed 0; its own implementation, torchvision's key names), in eval
    mode, and its state dict saved as a local backbone_weights file."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    net = timm.create_model("resnext101_64x4d", pretrained=False).eval()
    # timm zero-initialises each block's last BatchNorm (the residual branch would add nothing and the grouped
    # convs would go unchecked): every BatchNorm gets random affine terms and running statistics instead.
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.1, 0.3)
                m.bias.uniform_(-0.1, 0.1)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("x101") / "x101_timm.pt"
    torch.save(net.state_dict(), path)
    yield net, path
    path.unlink()


def test_timm_weights_load_as_backbone_weights_and_give_timms_features(timm_file):
    net, path = timm_file
    logs = []
    model = build_detector(ARCH, 3, backbone_weights=str(path), norm="frozen_bn", log=logs.append, **SMALL).eval()
    body = model.backbone.body
    assert body.layer1[0].conv2.groups == 64 and tuple(body.layer4[0].conv2.weight.shape) == (2048, 32, 3, 3)
    assert any("ResNeXt-101 64x4d" in line for line in logs), logs
    torch.manual_seed(1)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = net.forward_features(x)
        ours = body(x)
    # the FPN's body returns the stages it feeds; the last one is layer4's output (stride 32)
    got = list(ours.values())[-1]
    assert got.shape == want.shape == (1, 2048, 2, 2)
    assert float(want.abs().max()) > 1e-3  # a non-trivial output
    assert float((got - want).abs().max()) <= 1e-4 * float(want.abs().max())


def test_resnet101_weights_are_refused_for_the_resnext():
    with pytest.raises(IIFError, match=r"ResNeXt-101 64x4d.*ResNeXt101_64X4D_Weights"):
        build_detector(ARCH, 3, backbone_weights="ResNet101_Weights.IMAGENET1K_V1", **SMALL)


def test_resnet101_file_is_refused_naming_the_mis_shaped_tensor(tmp_path):
    from torchvision.models import resnet101

    path = tmp_path / "r101.pt"
    torch.save(resnet101(weights=None).state_dict(), path)
    with pytest.raises(IIFError, match=r"do not fit the ResNeXt-101 64x4d backbone \(layer1\.0\.conv1\.weight is "
                                       r"\(64, 64, 1, 1\) in the file but \(256, 64, 1, 1\)"):
        build_detector(ARCH, 3, backbone_weights=str(path), **SMALL)


def test_tiny_forward_trains_and_predicts():
    torch.manual_seed(0)
    model = build_detector(ARCH, 3, norm="gn", **SMALL)
    images = [torch.rand(3, 64, 64), torch.rand(3, 64, 48)]
    masks = torch.zeros(1, 64, 64, dtype=torch.uint8)
    masks[0, 8:40, 10:30] = 1
    target = {"boxes": torch.tensor([[10.0, 8.0, 30.0, 40.0]]), "labels": torch.tensor([2]), "masks": masks}
    masks2 = torch.zeros(1, 64, 48, dtype=torch.uint8)
    masks2[0, 4:20, 4:20] = 1
    target2 = {"boxes": torch.tensor([[4.0, 4.0, 20.0, 20.0]]), "labels": torch.tensor([1]), "masks": masks2}
    model.train()
    losses = model(images, [target, target2])
    assert {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"} <= set(losses)
    total = sum(losses.values())
    assert math.isfinite(float(total.detach()))
    total.backward()
    grad = model.backbone.body.layer1[0].conv2.weight.grad
    assert grad is not None and grad.shape == (256, 4, 3, 3) and float(grad.abs().sum()) > 0
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2 and all({"boxes", "labels", "scores", "masks"} <= set(o) for o in out)
    assert all(o["masks"].shape[-2:] == img.shape[-2:] for o, img in zip(out, images))
