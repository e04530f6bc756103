"""Backbones, build_model, freezing and checkpoint loading."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from iif.errors import IIFError
from iif.models import (
    ARCHS,
    ImageClassifier,
    build_model,
    freeze_backbone,
    load_state,
    option_a_shortcut,
    replace_head,
    set_backbone_eval,
    unfreeze_backbone,
)
from iif.models.cifar_resnet import CifarBasicBlock, ShortcutA
from iif.models.se_resnet import SEBottleneck

torch.manual_seed(0)



def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("arch", ["resnet32", "se_resnet32"])
def test_cifar_resnets_forward_and_channels_last(arch: str) -> None:
    model = build_model(arch, 10).eval()
    x = torch.randn(2, 3, 16, 16)  # any size works (global pooling); small keeps the test fast
    with torch.no_grad():
        feats = model.features(x)
        logits = model(x)
        logits_cl = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    assert model.feature_dim == 64 and feats.shape == (2, 64)
    assert logits.shape == (2, 10)
    assert torch.allclose(logits, model.classifier(feats), atol=1e-6)
    assert torch.allclose(logits, logits_cl, atol=1e-4)


@pytest.mark.parametrize("size,channels", [(8, 1), (28, 1), (32, 3), (5, 1)])
def test_small_cnn_any_input_size(size: int, channels: int) -> None:
    model = build_model("small_cnn", 7, in_channels=channels, backbone_kwargs={"width": 8})
    out = model(torch.randn(3, channels, size, size))
    assert model.feature_dim == 32 and out.shape == (3, 7)


@pytest.mark.parametrize("arch", ["se_resnet50", "se_resnext50_32x4d", "se_resnet152"])
def test_imagenet_se_nets_build_and_forward(arch: str) -> None:
    channels = 1 if arch == "se_resnet50" else 3  # also covers the replaced grey-input stem
    model = build_model(arch, 5, head="cosine", in_channels=channels).eval()
    with torch.no_grad():
        out = model(torch.randn(1, channels, 64, 64))
    assert model.feature_dim == 2048 and out.shape == (1, 5)
    blocks = [m for m in model.modules() if isinstance(m, SEBottleneck)]
    assert len(blocks) == {"se_resnet152": 3 + 8 + 36 + 3}.get(arch, 3 + 4 + 6 + 3)
    for b in blocks:  # reduction r = 16 on the bottleneck's output channels; bias-free FCs (authors' code)
        assert isinstance(b.se.fc1, nn.Linear) and b.se.fc1.out_features == b.bn3.num_features // 16
        assert b.se.fc1.bias is None and b.se.fc2.bias is None
    if arch == "se_resnext50_32x4d":
        assert all(b.conv2.groups == 32 for b in blocks)
        assert blocks[0].conv2.in_channels == 128  # 32 groups x 4 channels in the first stage


def test_imagenet_se_resnet50_torchvision_style_adds_the_se_biases() -> None:
    official = build_model("se_resnet50", 10)
    tv = build_model("se_resnet50", 10, backbone_kwargs={"style": "torchvision"})
    # One bias per hidden unit (C/16) and per channel (C) in every SE; bottleneck outputs 256..2048 per stage.
    biases = sum(n * (c // 16 + c) for n, c in zip((3, 4, 6, 3), (256, 512, 1024, 2048)))
    assert _n_params(tv) - _n_params(official) == biases == 16_048
    assert all(b.se.fc1.bias is not None for b in tv.modules() if isinstance(b, SEBottleneck))


def test_timm_and_torchvision_backbones_drop_their_classifier() -> None:
    import timm
    import torchvision

    model = build_model("timm:resnet18", 7, head="cosine").eval()
    reference = timm.create_model("resnet18", num_classes=0)
    assert model.feature_dim == reference.num_features == 512
    assert _n_params(model) == _n_params(reference) + 7 * 512
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)

    model = build_model("torchvision:resnet18", 4).eval()
    full = torchvision.models.resnet18(weights=None)
    assert model.feature_dim == full.fc.in_features
    assert _n_params(model) == _n_params(full) - _n_params(full.fc) + _n_params(model.classifier)
    with torch.no_grad():
        assert model.features(torch.randn(2, 3, 32, 32)).shape == (2, 512)

    model = build_model("torchvision:mobilenet_v3_small", 3, in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 3)
    assert model.feature_dim == 1024  # input of the last Linear of the classifier Sequential


# ----------------------------------------------------------------------------------------- ResNet-32


def _resnet32_params_by_hand(num_classes: int, se_reduction: int | None = None, se_bias: bool = False,
                             head: str = "linear") -> int:
    """Count from the layer shapes of He et al.'s CIFAR ResNet-32 (3x3 convs, no bias; BN has 2 per channel)."""
    conv = lambda cin, cout: 9 * cin * cout  # noqa: E731
    bn = lambda c: 2 * c  # noqa: E731

    def se(c: int) -> int:  # fc1 (c -> c/r) and fc2 (c/r -> c), each with a bias only in the torchvision form
        if se_reduction is None:
            return 0
        hidden = c // se_reduction
        return (c * hidden + hidden * se_bias) + (hidden * c + c * se_bias)

    total = conv(3, 16) + bn(16)
    prev = 16
    for width in (16, 32, 64):
        for _ in range(5):
            total += conv(prev, width) + bn(width) + conv(width, width) + bn(width) + se(width)
            prev = width
    # option-A shortcuts add nothing; the linear head has a bias, the cosine head (fixed s) only W.
    return total + 64 * num_classes + (num_classes if head == "linear" else 0)


def test_resnet32_parameter_count_matches_hand_count() -> None:
    model = build_model("resnet32", 10)
    assert _n_params(model) == _resnet32_params_by_hand(10)
    assert 0.45e6 < _n_params(model) < 0.47e6  # He et al. report 0.46M
    assert _n_params(build_model("se_resnet32", 100)) == _resnet32_params_by_hand(100, se_reduction=4)
    # Option A: the only convolutions are 3x3 (no 1x1 projection shortcuts).
    assert all(m.kernel_size == (3, 3) for m in model.backbone.modules() if isinstance(m, nn.Conv2d))


def test_se_resnet32_cosine_100_classes_has_the_official_parameter_count() -> None:
    """The authors' SE-ResNet-32 (bias-free SE FCs) with the cosine head for CIFAR-100: 483,344 parameters."""
    official = build_model("se_resnet32", 100, head="cosine")
    by_hand = _resnet32_params_by_hand(100, se_reduction=4, se_bias=False, head="cosine")
    assert _n_params(official) == by_hand == 483_344
    se_modules = [m for n, m in official.backbone.named_modules() if n.endswith(".se")]
    assert len(se_modules) == 15
    assert all(isinstance(fc, nn.Linear) and fc.bias is None for se in se_modules for fc in (se.fc1, se.fc2))
    # The torchvision form (1x1 convs with biases) stays available by name: 700 more parameters,
    # one bias per hidden unit and per channel: 5 blocks x ((4 + 16) + (8 + 32) + (16 + 64)).
    tv = build_model("se_resnet32", 100, head="cosine", backbone_kwargs={"style": "torchvision"})
    assert _n_params(tv) == _resnet32_params_by_hand(100, se_reduction=4, se_bias=True, head="cosine") == 484_044
    assert all(m.se.fc1.bias is not None for m in tv.backbone.modules() if isinstance(m, CifarBasicBlock))
    with pytest.raises(IIFError, match="style 'keras'.*official.*torchvision"):
        build_model("se_resnet32", 10, backbone_kwargs={"style": "keras"})


def test_official_style_initialises_like_the_authors_code() -> None:
    """Kaiming-normal with fan-in and gain sqrt(2) on every conv and SE FC (torch's kaiming_normal_ defaults)."""
    torch.manual_seed(0)
    net = build_model("se_resnet32", 10, head="cosine").backbone
    # std = sqrt(2 / fan_in): the stem has fan-in 3*9 = 27 (fan-out 16*9 = 144 would give 0.118);
    # the last SE's fc1 has fan-in 64 and fc2 fan-in 16.
    checks = [
        (net.conv1.weight, 27),
        (net.layer3[4].se.fc1.weight, 64),
        (net.layer3[4].se.fc2.weight, 16),
        (net.layer2[0].conv1.weight, 16 * 9),  # stride-2 conv: fan-in 144, fan-out 288
    ]
    for weight, fan_in in checks:
        expected = (2.0 / fan_in) ** 0.5
        assert abs(weight.std().item() / expected - 1) < 0.12, (weight.shape, weight.std().item(), expected)
    # The torchvision style keeps torchvision ResNet's fan-out init (stem std sqrt(2/144)).
    torch.manual_seed(0)
    tv = build_model("se_resnet32", 10, backbone_kwargs={"style": "torchvision"}).backbone
    assert abs(tv.conv1.weight.std().item() / (2.0 / 144) ** 0.5 - 1) < 0.12


def test_option_a_shortcut_subsamples_and_zero_pads_channels() -> None:
    x = torch.randn(2, 16, 8, 8)
    module = ShortcutA(32, stride=2)
    assert _n_params(module) == 0
    out = module(x)
    assert out.shape == (2, 32, 4, 4)
    xs = x.numpy()[:, :, ::2, ::2]
    expected = np.concatenate([np.zeros((2, 8, 4, 4)), xs, np.zeros((2, 8, 4, 4))], axis=1)
    assert np.array_equal(out.numpy(), expected)
    # Odd channel increase 3 -> 6: one zero channel before the data, two after.
    odd = option_a_shortcut(x[:, :3], 6, 1)
    assert torch.equal(odd[:, 1:4], x[:, :3]) and not odd[:, [0, 4, 5]].any()
    block = CifarBasicBlock(16, 32, stride=2)
    assert isinstance(block.shortcut, ShortcutA) and _n_params(block.shortcut) == 0


@pytest.mark.parametrize("style", ["official", "torchvision"])
def test_se_block_matches_independent_formula_and_sits_before_the_add(style: str) -> None:
    block = CifarBasicBlock(16, 16, stride=1, se_reduction=4, style=style).eval().double()
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.3)
        block.bn2.running_mean.normal_(0, 0.1)
    se = block.se
    y = torch.randn(2, 16, 5, 5, dtype=torch.float64)
    # Independent route in numpy: squeeze (mean over H, W), FC - ReLU - FC, sigmoid, rescale channels.
    yn = y.numpy()
    w1 = se.fc1.weight.detach().numpy().reshape(4, 16)
    w2 = se.fc2.weight.detach().numpy().reshape(16, 4)
    if style == "official":
        assert se.fc1.bias is None and se.fc2.bias is None
        b1, b2 = np.zeros(4), np.zeros(16)
    else:
        b1, b2 = se.fc1.bias.detach().numpy(), se.fc2.bias.detach().numpy()
    z = yn.mean(axis=(2, 3))
    gate = 1.0 / (1.0 + np.exp(-(np.maximum(z @ w1.T + b1, 0.0) @ w2.T + b2)))
    with torch.no_grad():
        assert np.allclose(se(y).numpy(), yn * gate[:, :, None, None], atol=1e-12)
        # Placement: relu(SE(bn2(conv2(relu(bn1(conv1 x))))) + x).
        x = torch.randn(2, 16, 5, 5, dtype=torch.float64)
        inner = block.bn2(block.conv2(F.relu(block.bn1(block.conv1(x)))))
        assert torch.allclose(block(x), F.relu(se(inner) + x), atol=1e-12)


def test_se_bottleneck_applies_se_after_bn3_before_add() -> None:
    down = nn.Sequential(nn.Conv2d(32, 64, 1, bias=False), nn.BatchNorm2d(64))
    block = SEBottleneck(32, 16, downsample=down).eval()
    assert block.se.fc1.out_features == 64 // 16
    x = torch.randn(2, 32, 6, 6)
    with torch.no_grad():
        out = F.relu(block.bn1(block.conv1(x)))
        out = F.relu(block.bn2(block.conv2(out)))
        expected = F.relu(block.se(block.bn3(block.conv3(out))) + down(x))
        assert torch.allclose(block(x), expected, atol=1e-6)


# ----------------------------------------------------------------------------------------- freezing


def test_freeze_backbone_keeps_weights_and_bn_statistics_fixed() -> None:
    model = build_model("small_cnn", 4, in_channels=1, head="cosine", backbone_kwargs={"width": 4})
    freeze_backbone(model)
    model.train()
    assert model.training and not model.backbone.training and model.classifier.training
    before = copy.deepcopy(model.backbone.state_dict())
    head_before = model.classifier.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1)
    for _ in range(2):
        loss = F.cross_entropy(model(torch.randn(8, 1, 8, 8) * 3 + 1), torch.randint(0, 4, (8,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.backbone.state_dict()
    assert any("running_mean" in k for k in after)
    for key, value in before.items():
        assert torch.equal(value, after[key]), key
    assert not torch.equal(head_before, model.classifier.weight)
    assert all(not p.requires_grad for p in model.backbone.parameters())
    model.eval().train()  # a later train() call still keeps the backbone frozen
    assert not model.backbone.training
    unfreeze_backbone(model)
    assert model.backbone.training and all(p.requires_grad for p in model.parameters())


def test_set_backbone_eval_on_a_plain_module() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
            self.classifier = nn.Linear(3, 2)

    net = freeze_backbone(Net().train())
    assert not net.body.training and net.classifier.training
    assert not any(p.requires_grad for p in net.body.parameters()) and net.classifier.weight.requires_grad
    with pytest.raises(IIFError, match="classifier"):
        freeze_backbone(nn.Linear(2, 2))
    assert set_backbone_eval(Net().train()).classifier.training


def test_replace_head_keeps_dimensions() -> None:
    model = build_model("resnet32", 10)
    replace_head(model, "tau_norm", tau=0.5)
    assert model.classifier.weight.shape == (10, 64) and model.classifier.tau == 0.5
    assert model.num_classes == 10 and model.head_name == "tau_norm"


# ----------------------------------------------------------------------------------------- loading


def test_load_state_round_trip_and_wrappers() -> None:
    src = build_model("small_cnn", 3, in_channels=1, backbone_kwargs={"width": 4}).eval()
    x = torch.randn(2, 1, 8, 8)
    for state in (
        src.state_dict(),
        {"model": src.state_dict(), "epoch": 3},
        {f"module.{k}": v for k, v in src.state_dict().items()},
    ):
        dst = build_model("small_cnn", 3, in_channels=1, backbone_kwargs={"width": 4}).eval()
        load_state(dst, state)
        with torch.no_grad():
            assert torch.equal(dst(x), src(x))


def test_load_state_mismatch_errors_name_keys_and_shapes() -> None:
    ckpt = build_model("resnet32", 100).state_dict()
    with pytest.raises(IIFError, match=r"number of classes differs \(checkpoint 100, model 10\).*classifier\.weight"):
        load_state(build_model("resnet32", 10), ckpt)
    with pytest.raises(IIFError, match=r"missing in checkpoint: .*\.se\.fc1\.weight"):
        load_state(build_model("se_resnet32", 100), ckpt)
    with pytest.raises(IIFError, match=r"not in model: .*\.se\."):
        load_state(build_model("resnet32", 100), build_model("se_resnet32", 100).state_dict())
    with pytest.raises(IIFError, match="shapes differ"):  # shape mismatch raises even when not strict
        load_state(build_model("resnet32", 10), ckpt, strict=False)
    with pytest.raises(IIFError, match="state dict"):
        load_state(build_model("resnet32", 10), [1, 2])
    # Not strict: the common keys load, the SE modules keep their initialisation.
    se = build_model("se_resnet32", 100)
    load_state(se, ckpt, strict=False)
    assert torch.equal(se.backbone.conv1.weight, ckpt["backbone.conv1.weight"])


# ----------------------------------------------------------------------------------------- bad input


def test_build_model_bad_inputs() -> None:
    with pytest.raises(IIFError, match="resnet32.*small_cnn.*timm:<name>"):
        build_model("resnet33", 10)
    with pytest.raises(IIFError, match="Did you mean 'resnet32'"):
        build_model("resnet_32", 10)
    with pytest.raises(IIFError, match="Unknown head.*cosine"):
        build_model("resnet32", 10, head="softmax")
    with pytest.raises(IIFError, match="Unknown arch"):
        build_model("keras:resnet50", 10)
    with pytest.raises(IIFError, match="timm has no model"):
        build_model("timm:resnet18_not_a_model", 10)
    with pytest.raises(IIFError, match="torchvision has no classification model"):
        build_model("torchvision:resnet_9000", 10)
    with pytest.raises(IIFError, match="names no model"):
        build_model("timm:", 10)
    with pytest.raises(IIFError, match="num_classes"):
        build_model("resnet32", 0)
    with pytest.raises(IIFError, match="in_channels"):
        build_model("resnet32", 10, in_channels=0)
    with pytest.raises(IIFError, match="No pretrained weights"):
        build_model("se_resnet50", 10, pretrained=True)
    with pytest.raises(IIFError, match="Bad backbone option"):
        build_model("resnet32", 10, backbone_kwargs={"width": 3})
    with pytest.raises(IIFError, match="width"):
        build_model("small_cnn", 10, backbone_kwargs={"width": 0})
    with pytest.raises(IIFError, match="does not accept"):
        build_model("resnet32", 10, head="linear", scale=16)
    assert "se_resnext50_32x4d" in ARCHS and isinstance(build_model("small_cnn", 2), ImageClassifier)
