"""Set-up that several detection test files share (not a test file: pytest collects only ``test_*.py``; the
tests import it by name, their folder being on ``sys.path`` as for ``test_runtime_shared``).

- a tiny FPN R-CNN, its one-image batch, and a four-image data set for exact-resume runs (EQLv2, FASA);
- the tiny cascades (Cascade Mask R-CNN, HTC): model keywords, batch, det-train overrides, the raw IIF weights,
  the stage hooks, box IoU and decoding by hand, the equal-stage-weights pair, the DDP step and the resume pair;
- ``iif explain`` on detectors: the image as a tensor, smooth IIF weights, a bias-map convolution, Grad-CAM by
  autograd, and the softmax/IIF det-train pair explained through the CLI's ``--compare``.

Everything computed by hand here is from the paper's formulas or the published method, not from ``iif``.
"""

from __future__ import annotations

import json
import math

import numpy as np
import torch
import torch.nn.functional as F


# ---------------------------------------------------------------------------------------- tiny FPN R-CNN
def tiny_fpn_rcnn(arch="maskrcnn_r10_fpn", seed=0):
    """A 3-class ``arch`` at 64 px (FPN 16 on P3-P5, 32-wide box head, 32 RoIs per image), torch seed ``seed``."""
    from iif.detection.models import build_detector

    torch.manual_seed(seed)
    kw = dict(min_size=64, max_size=64, fpn_channels=16, representation_size=32, returned_layers=(2, 3, 4),
              anchor_sizes=((16,), (32,), (64,), (128,)), box_batch_size_per_image=32)
    if arch.startswith("maskrcnn"):
        kw["mask_layers"] = (8,)
    return build_detector(arch, 3, **kw)


def one_image_batch():
    """One random 64-px image with two boxes (classes 2 and 3) and their box-shaped masks."""
    mask = torch.zeros(2, 64, 64, dtype=torch.uint8)
    mask[0, 5:30, 5:30] = 1
    mask[1, 30:60, 20:50] = 1
    t = {"boxes": torch.tensor([[5.0, 5, 30, 30], [20, 30, 50, 60]]), "labels": torch.tensor([2, 3]), "masks": mask}
    return [torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(1))], [t]


def four_square_images():
    """A 4-image detection data set: 64-px dark noise, one bright 20-px square each (moving right), labels 1..3."""
    g = torch.Generator().manual_seed(0)
    ds = []
    for i in range(4):
        img = torch.rand(3, 64, 64, generator=g) * 0.2
        x0 = 4 + 9 * i
        img[:, 10:30, x0:x0 + 20] = 0.9
        ds.append((img, {"boxes": torch.tensor([[x0, 10.0, x0 + 20, 30]]), "labels": torch.tensor([1 + i % 3]),
                         "image_id": 100 + i}))
    return ds


# train_detector keywords of the exact-resume tests on four_square_images
RESUME_TRAIN_KW = dict(batch_size=2, lr=0.01, warmup_iters=2, milestones=(2,), clip_grad_norm=5.0, device="cpu",
                       seed=3)


# ------------------------------------------------------------------------------------- tiny cascades
CASCADE_MODEL = dict(min_size=64, max_size=64, fpn_channels=16, representation_size=32, mask_layers=[8],
                     box_detections_per_img=30, rpn_post_nms_top_n_train=60, rpn_post_nms_top_n_test=40,
                     box_batch_size_per_image=48)
CASCADE_COUNTS = np.array([40.0, 9.0, 2.0])  # 3 foreground classes
# det-train overrides of a tiny cascade run on the session's detection benchmark
CASCADE_TRAIN = ["data.max_train_images=24", "data.max_val_images=8", "model.min_size=64", "model.max_size=64",
                 "model.fpn_channels=16", "model.representation_size=32", "model.mask_layers=[8]",
                 "model.box_detections_per_img=20", "schedule.batch_size=4", "schedule.warmup_iters=2",
                 "schedule.milestones=[1]", "eval.batch_size=4", "runtime.threads=1"]


def tiny_cascade(arch, seed=0, **kw):
    """``arch`` (a cascade) with 3 classes and :data:`CASCADE_MODEL`'s sizes (``kw`` overrides), seed ``seed``."""
    from iif.detection import build_detector

    torch.manual_seed(seed)
    return build_detector(arch, 3, **{**CASCADE_MODEL, **kw})


def cascade_batch():
    """Two random 64-px images: two boxes (classes 1, 3) and one box (class 2), each with its box as mask."""
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(3, 64, 64, generator=g) for _ in range(2)]
    targets = []
    for boxes, labels in (([[4.0, 6, 30, 34], [28, 30, 60, 58]], [1, 3]), ([[10.0, 8, 50, 40]], [2])):
        b = torch.tensor(boxes)
        masks = torch.zeros(len(b), 64, 64, dtype=torch.uint8)
        for m, (x0, y0, x1, y1) in zip(masks, b.int().tolist()):
            m[y0:y1, x0:x1] = 1
        targets.append({"boxes": b, "labels": torch.tensor(labels), "masks": masks})
    return images, targets


def stage_predictors(model):
    rh = model.roi_heads
    return [rh.box_predictor, rh.box_predictor_2, rh.box_predictor_3]


def raw_iif(counts):
    """Raw IIF (paper Eq. 11-12, Table III 'raw'): w_c = ln(K / n_c), K = the sum of the counts for an array."""
    return np.log(counts.sum() / counts)


def capture_stage_logits(model):
    """Forward hooks recording each stage's raw logits z (its cls_score layer) and what its predictor returns."""
    raw, adjusted = {0: [], 1: [], 2: []}, {0: [], 1: [], 2: []}
    for t, pred in enumerate(stage_predictors(model)):
        pred.cls_score.register_forward_hook(lambda m, i, o, t=t: raw[t].append(o.detach().clone()))
        pred.register_forward_hook(lambda m, i, o, t=t: adjusted[t].append(o[0].detach().clone()))
    return raw, adjusted


def record_samples(model):
    """Wrap ``model.roi_heads.sample`` so that each call's result is appended to the list returned."""
    rh = model.roi_heads
    drawn = []
    original = rh.sample
    rh.sample = lambda t, *a: drawn.append(original(t, *a)) or drawn[-1]
    return drawn


def box_iou(a, b):
    """IoU of two boxes (x0, y0, x1, y1), by hand."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def decode_by_hand(deltas, boxes, weights, size=64.0):
    """Fast R-CNN's decoding: centre + (dx / wx) * width, width * exp(dw / ww), ..., clipped to the image."""
    wx, wy, ww, wh = weights
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    cx, cy = boxes[:, 0] + w / 2 + deltas[:, 0] / wx * w, boxes[:, 1] + h / 2 + deltas[:, 1] / wy * h
    nw, nh = w * torch.exp(deltas[:, 2] / ww), h * torch.exp(deltas[:, 3] / wh)
    out = torch.stack([cx - nw / 2, cy - nh / 2, cx + nw / 2, cy + nh / 2], 1)
    return out.clamp(0, size)


def losses_with_default_and_unit_stage_weights(build):
    """The training losses on :func:`cascade_batch` of two models ``build()`` makes, the second with every stage
    loss weight 1, under the same torch seed (5): ``(default, unit)``."""
    images, targets = cascade_batch()
    a, b = build(), build()
    b.roi_heads.stage_loss_weights = (1.0, 1.0, 1.0)
    a.train(), b.train()
    torch.manual_seed(5)
    la = a(images, targets)
    torch.manual_seed(5)
    lb = b(images, targets)
    return la, lb


def ddp_rank_step(rank: int, build, queue) -> None:
    """One DDP training step of ``build()`` with raw IIF on every stage on this rank's image of
    :func:`cascade_batch`; puts every trainable parameter's gradient after the all-reduce on ``queue``."""
    import torch.distributed as dist

    from iif.detection.margins import use_margin
    from iif.runtime.distributed import join_process_group, wrap_ddp

    dev, info = join_process_group("cpu")
    model = build()
    use_margin(model, "iif", CASCADE_COUNTS, variant="raw")
    net = wrap_ddp(model, dev, info)
    images, targets = cascade_batch()
    net.train()
    torch.manual_seed(rank)
    sum(net(images[rank:rank + 1], targets[rank:rank + 1]).values()).backward()
    queue.put((rank, [p.grad.numpy().copy() for p in model.parameters() if p.requires_grad]))  # by value
    dist.destroy_process_group()


def ddp_and_single_process_grads(build):
    """``(g0, g1, single)``: the gradients of :func:`ddp_rank_step` on two forked gloo ranks, and for each rank
    the same step in this process (same model, image and torch seed) without DDP."""
    from test_runtime_shared import _fork_two_ranks

    from iif.detection.margins import use_margin

    (_, g0), (_, g1) = _fork_two_ranks(ddp_rank_step, build)
    images, targets = cascade_batch()
    single = []
    for rank in (0, 1):
        model = build()
        use_margin(model, "iif", CASCADE_COUNTS, variant="raw")
        model.train()
        torch.manual_seed(rank)
        sum(model(images[rank:rank + 1], targets[rank:rank + 1]).values()).backward()
        single.append([p.grad for p in model.parameters() if p.requires_grad])
    return g0, g1, single


def assert_ddp_grads_are_the_mean(g0, g1, single):
    """Both ranks hold the same gradients, the mean of the two single-process ones."""
    for a, b, s0, s1 in zip(g0, g1, *single):
        a, b = torch.from_numpy(a), torch.from_numpy(b)
        assert torch.allclose(a, b, atol=1e-7)
        assert torch.allclose(a, (s0 + s1) / 2, rtol=1e-4, atol=1e-6)


def full_and_resumed_runs(bench, tmp_path, arch):
    """det-train ``det_bench_iif`` of ``arch`` for two epochs at once, and for one epoch, stop, ``--resume``
    (masks not evaluated); asserts each exits 0 and returns the two ``last.pt`` model state dicts."""
    from iif.cli import main

    args = ["det-train", "det_bench_iif", f"data.root={bench}", *CASCADE_TRAIN, f"model.arch={arch}",
            "schedule.epochs=2", "eval.masks=false", "--quiet"]
    full, part = tmp_path / "full", tmp_path / "part"
    assert main([*args, "--out", str(full)]) == 0
    assert main([*args, "runtime.stop_after_epoch=1", "--out", str(part)]) == 0
    assert main([*args, "--out", str(part), "--resume"]) == 0
    a = torch.load(full / "last.pt", weights_only=True)["model"]
    b = torch.load(part / "last.pt", weights_only=True)["model"]
    return a, b


# ---------------------------------------------------------------------------------- iif explain on detectors
def image_tensor(path):
    """The RGB image at ``path`` as a float (3, H, W) tensor in [0, 1]."""
    from PIL import Image

    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), np.float32) / 255.0).permute(2, 0, 1)


def write_noise_image(path, h, w):
    """A uniform random ``h`` x ``w`` RGB PNG at ``path`` (numpy seed 0); returns ``path``."""
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def smooth_iif(counts, background=False):
    """Table III smooth: ln((K + 1) / (n_c + 1)) + 1, K the sum of the counts; with ``background`` a first
    weight 1 for the background logit."""
    k = sum(counts)
    return torch.tensor(([1.0] if background else []) + [math.log((k + 1) / (n + 1)) + 1 for n in counts])


class PlusMap(torch.nn.Module):
    """A 1x1 output convolution plus a fixed per-cell bias map."""

    def __init__(self, conv: torch.nn.Module, bias_map: torch.Tensor) -> None:
        super().__init__()
        self.conv = conv
        self.register_buffer("bias_map", bias_map)

    def forward(self, x):
        return self.conv(x) + self.bias_map


def gradcam_by_hand(score, activation, size):
    """Grad-CAM (Selvaraju et al.): relu(sum_k mean(d score / d A_k) A_k) of ``activation`` (1, K, h, w), by
    autograd, bilinearly upsampled to ``size`` (H, W) as a numpy array."""
    (g,) = torch.autograd.grad(score, activation)
    cam = torch.relu((g.mean((2, 3), keepdim=True) * activation).sum(1))[0].detach()
    return F.interpolate(cam[None, None], size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def explain_compared_runs(bench, tmp_path, train_args):
    """Two det-train runs, ``train_args(out, method)`` for softmax then IIF, and ``iif explain`` of the first
    val image with ``--compare``: asserts the commands exit 0, the PNG is drawn and the rows come in that order.
    Returns ``(row, detections of the image by the run's model)`` per run."""
    from PIL import Image

    from iif.cli import main
    from iif.explain_detection import load_detector_run

    runs = {m: tmp_path / m for m in ("softmax", "iif")}
    for method, out in runs.items():
        assert main(train_args(out, method)) == 0
    img = sorted(p for p in bench.rglob("*.png") if "val" in p.parts[-2])[0]
    dest = tmp_path / "explained"
    assert main(["explain", str(runs["softmax"]), str(img), "--compare", str(runs["iif"]), "--out", str(dest)]) == 0
    with Image.open(dest / "explain.png") as im:
        im.load()
        assert im.size[0] > 100 and im.size[1] > 100
    rows = json.loads((dest / "explain.json").read_text())["checkpoints"]
    assert [r["label"].split()[0] for r in rows] == ["softmax", "iif"]
    out = []
    for row, run in zip(rows, runs.values()):
        model, names, _ = load_detector_run(run)
        with torch.no_grad():
            det = model([image_tensor(img)])[0]
        out.append((row, det))
    return out


def assert_row_is_the_best_detection(row, det):
    """The explained row's class and top score are the model's own best detection's."""
    import pytest

    best = int(det["scores"].argmax())
    assert row["predicted_index"] == int(det["labels"][best]) - 1
    assert row["top"][0]["score"] == pytest.approx(float(det["scores"][best]), rel=1e-4)
