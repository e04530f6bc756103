"""Augmentation recipes, the batched crop/flip/Cutout and mixup."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from iif.data import Cutout, batch_augment, build_transform, mixup_batch
from iif.errors import IIFError

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)


def _ramp(n=6, c=3, h=8, w=8):
    # Distinct pixel values so each crop/flip is identifiable.
    return (torch.arange(n * c * h * w) % 251).to(torch.uint8).view(n, c, h, w)


def test_batch_augment_matches_per_image_reference():
    x = _ramp()
    g = torch.Generator().manual_seed(7)
    out = batch_augment(x, MEAN, STD, padding=2, generator=g)
    # Replay the same draws (same order: oy, ox, flips) and build each image by hand.
    g = torch.Generator().manual_seed(7)
    oy = torch.randint(0, 5, (6,), generator=g)
    ox = torch.randint(0, 5, (6,), generator=g)
    fl = torch.rand(6, generator=g) < 0.5
    m, s = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    for i in range(6):
        ref = F.pad(x[i], (2, 2, 2, 2))[:, oy[i]:oy[i] + 8, ox[i]:ox[i] + 8]
        if fl[i]:
            ref = ref.flip(-1)
        assert torch.allclose(out[i], (ref.float() / 255 - m) / s, atol=1e-6)
    assert fl.any() and not fl.all()  # the seed exercises both branches


def test_batch_augment_eval_and_cutout():
    x = _ramp()
    plain = batch_augment(x, MEAN, STD, crop=False, flip=False)
    ref = (x.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    assert torch.allclose(plain, ref, atol=1e-6)
    big = torch.full((50, 1, 32, 32), 200, dtype=torch.uint8)
    cut = batch_augment(big, (0.0,), (1.0,), crop=False, flip=False, cutout=16, generator=torch.Generator().manual_seed(0))
    zeros = (cut == 0).flatten(1).sum(1)
    assert zeros.max() == 256 and zeros.min() >= 64  # full 16x16 square, or clipped at a corner (>= 8x8)
    with pytest.raises(IIFError, match="mean/std"):
        batch_augment(x, (0.1, 0.2), (1.0, 1.0))
    with pytest.raises(IIFError, match=r"\(N, C, H, W\)"):
        batch_augment(x[0], MEAN, STD)


def test_cutout_square_size():
    torch.manual_seed(0)
    img = torch.ones(3, 32, 32)
    sizes = []
    for _ in range(200):
        z = Cutout(16)(img)[0] == 0
        rows, cols = z.any(1).sum().item(), z.any(0).sum().item()
        sizes.append((rows, cols))
        assert z.sum() == rows * cols  # a (clipped) axis-aligned rectangle
    assert (16, 16) in sizes and max(max(s) for s in sizes) == 16 and min(min(s) for s in sizes) >= 8
    with pytest.raises(IIFError):
        Cutout(0)


@pytest.mark.parametrize("augment", ["none", "basic", "autoaugment", "randaugment"])
def test_recipes_on_uint8_tensors(augment):
    torch.manual_seed(0)
    for c in (1, 3):
        tf = build_transform(augment, MEAN[:c], STD[:c], train=True, image_size=32)
        y = tf(torch.randint(0, 256, (c, 32, 32), dtype=torch.uint8))
        assert y.shape == (c, 32, 32) and y.dtype == torch.float32
    names = [type(t).__name__ for t in tf.transforms]
    norm = ["ToDtype", "Normalize"]
    expect = {"none": norm, "basic": ["RandomCrop", "RandomHorizontalFlip"] + norm,
              # docs/method.md#models: AutoAugment CIFAR policy + Cutout(16), Cutout after normalising (zeros = mean).
              "autoaugment": ["RandomCrop", "RandomHorizontalFlip", "AutoAugment"] + norm + ["Cutout"],
              "randaugment": ["RandomCrop", "RandomHorizontalFlip", "RandAugment"] + norm}[augment]
    assert names == expect
    if augment == "autoaugment":
        aa = [t for t in tf.transforms if isinstance(t, v2.AutoAugment)][0]
        assert aa.policy == v2.AutoAugmentPolicy.CIFAR10
    with pytest.raises(IIFError, match="augment recipe"):
        build_transform("cutmix", MEAN, STD)


def test_mixup_batch():
    x = torch.randn(8, 3, 4, 4)
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    xm, ys = mixup_batch(x, y, 0.2, 5, generator=torch.Generator().manual_seed(3))
    xm2, ys2 = mixup_batch(x, y, 0.2, 5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(xm, xm2) and torch.equal(ys, ys2)
    assert torch.allclose(ys.sum(1), torch.ones(8)) and ys[:, 4].abs().max() == 0
    # Replay the documented draws: a numpy Beta seeded from the generator, then the partner permutation.
    g = torch.Generator().manual_seed(3)
    seed = int(torch.randint(0, 2**62, (1,), generator=g))
    lam_ref = float(np.random.default_rng(seed).beta(0.2, 0.2))
    perm = torch.randperm(8, generator=g)
    assert torch.allclose(xm, lam_ref * x + (1 - lam_ref) * x[perm], atol=1e-6)
    expect_y = lam_ref * F.one_hot(y, 5) + (1 - lam_ref) * F.one_hot(y[perm], 5)
    assert torch.allclose(ys, expect_y.float(), atol=1e-6)
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(IIFError, match="alpha"):
            mixup_batch(x, y, bad, 5)
    with pytest.raises(IIFError, match="one class index"):
        mixup_batch(x, y[:3], 0.2, 5)


def test_pil_recipe_follows_the_image_size():
    """PIL images up to SMALL_IMAGE_MAX px: resize to a square, pad-and-crop (padding size // 8) + flip, the
    CIFAR AutoAugment policy and Cutout(16) from 32 px; larger: RandomResizedCrop / Resize(size*256/224)."""
    from PIL import Image
    from torchvision.transforms import v2

    from iif.data.transforms import SMALL_IMAGE_MAX

    def names(tf):
        return [type(op).__name__ for op in tf.transforms]

    small = build_transform("basic", (0.5,) * 3, (0.5,) * 3, image_size=32, kind="pil")
    assert names(small)[:4] == ["ToImage", "Resize", "RandomCrop", "RandomHorizontalFlip"]
    assert small.transforms[1].size == [32, 32]
    crop = small.transforms[2]
    assert crop.padding == [4, 4, 4, 4] or crop.padding == 4
    aa = build_transform("autoaugment", (0.5,) * 3, (0.5,) * 3, image_size=SMALL_IMAGE_MAX, kind="pil")
    policy = next(op for op in aa.transforms if isinstance(op, v2.AutoAugment)).policy
    assert policy == v2.AutoAugmentPolicy.CIFAR10 and names(aa)[-1] == "Cutout"
    big = build_transform("autoaugment", (0.5,) * 3, (0.5,) * 3, image_size=SMALL_IMAGE_MAX + 1, kind="pil")
    assert "RandomResizedCrop" in names(big) and names(big)[-1] != "Cutout"
    assert next(op for op in big.transforms if isinstance(op, v2.AutoAugment)).policy == v2.AutoAugmentPolicy.IMAGENET
    # evaluation of a small image of exactly that size is the identity before normalisation
    img = Image.fromarray(np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3))
    ev = build_transform("none", (0.0,) * 3, (1.0,) * 3, train=False, image_size=32, kind="pil")
    expect = torch.from_numpy(np.asarray(img)).permute(2, 0, 1).float() / 255
    assert torch.allclose(ev(img).as_subclass(torch.Tensor), expect, atol=1e-6)
    ev_big = build_transform("none", (0.0,) * 3, (1.0,) * 3, train=False, image_size=96, kind="pil")
    assert names(ev_big)[1:3] == ["Resize", "CenterCrop"] and ev_big.transforms[1].size == [110]
