"""The pretrained start of the offline benchmark's detectors: a backbone trained on a *balanced* classification
task of the benchmark's own object domain, built once per (generator, seed, backbone) into the cache.

Why. LVIS detectors start from an ImageNet-pretrained backbone: their rare categories are rare in the detection
annotations, not in what the backbone has seen. A detector trained from scratch on the 2,000-image benchmark of
:mod:`iif.detection.synthetic` never learns its rare categories (AP_r 0-0.5 on ``iif det-bench --quick``), so
the rare-class half of the paper's question has no signal. The analogue here: classify the benchmark's 20 source
categories (the ten Fashion-MNIST classes and the ten digits, :data:`iif.detection.synthetic.CATEGORIES`),
``per_class`` images each (balanced), rendered as the scenes draw objects (tight crop, resized, recoloured on a
coloured, gradient, sometimes noisy background), with the detector's ResNet as the network.

No leakage into evaluation. Only the sources' TRAIN splits are used (the benchmark draws its evaluation splits'
objects from the TEST splits); any train-split source image that an evaluation split's annotation records
(``"source": [dataset, "train", index]``) is excluded as well, so a generator that draws evaluation objects
from the train split cannot leak them. The held-out accuracy is measured on ``test_per_class`` images per
category of the sources' TEST splits (a number for the docs only: the weights never see them).

Cache. ``$IIF_CACHE_DIR/det-pretrain/v<generator>-seed<seed>-<depth>-<key>/`` (``~/.cache/iif`` without
``IIF_CACHE_DIR``, as det-bench's benchmark) holds ``backbone.pth`` (a torchvision-format ResNet state dict,
``fc`` included, loadable by ``build_detector(backbone_weights=...)`` and by ``torchvision.models.resnet*``
of that depth) and ``pretrain.json`` (settings, accuracy, time). ``<key>`` hashes everything the weights
depend on (:func:`pretrain_key`); both files are written atomically (``pretrain.json`` first, the weights
last), so a folder with ``backbone.pth`` is complete and a killed build leaves nothing that is read.

``backbone_weights: pretrained`` (det-train configs, ``iif det-bench model.backbone_weights=pretrained``) is
resolved by :func:`resolve_backbone_weights` to that file, building it on first use. Determinism: the same
sources, benchmark, settings, torch version and thread count give the same weights; the caller's torch RNG is
left as it was (the detector built next is initialised as if no pretraining had run).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import IIFError

__all__ = ["PRETRAIN_VERSION", "PRETRAIN_DEFAULTS", "KEYWORD", "pretrain_backbone", "pretrained_backbone",
           "resolve_backbone_weights", "pretrain_key", "pretrain_cache_root", "excluded_sources"]

#: Bumped whenever the same settings would give different weights.
PRETRAIN_VERSION = 1
#: The ``backbone_weights`` keyword meaning "the cached pretraining of this benchmark".
KEYWORD = "pretrained"
#: Default recipe: about 3.6 CPU-minutes for the cpu-quick preset's r10, held-out accuracy 81.1% (2 epochs:
#: 2.1 CPU-minutes, 75.3%, but softmax AP_r 3.8 instead of 5.6 on the v2 val split; docs/detection.md).
PRETRAIN_DEFAULTS: dict[str, Any] = {
    "per_class": 1500,  # training images per category (20 categories, balanced)
    "epochs": 4,
    "size": 32,  # square input side; objects' long side in [size/2, size - 2]
    "batch_size": 128,
    "lr": 0.1,  # SGD, Nesterov momentum 0.9, linear warm-up then cosine to 0
    "weight_decay": 5e-4,
    "warmup_iters": 50,
    "test_per_class": 200,  # held-out source TEST images per category for the reported accuracy
}

_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)  # torchvision's detection transform normalises so
_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
_CROP_THRESHOLD = 30  # as synthetic: source pixels above it define the object's tight crop
_MIN_PIXELS = 30  # sources with fewer pixels above 60 are near-empty and skipped (as synthetic)
_FILE, _META = "backbone.pth", "pretrain.json"


# ------------------------------------------------------------------------------------------------- the data
def _classes() -> list[tuple[str, int]]:
    """``(source dataset, source label)`` of each class, in the order of the benchmark's category ids."""
    from .synthetic import CATEGORIES

    return [(c.dataset, c.label) for c in sorted(CATEGORIES, key=lambda c: c.id)]


def _pick(sources: Mapping[str, tuple], split: str, per_class: int, rng: np.random.Generator,
          exclude: Mapping[str, set] | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """``per_class`` usable source images of each class from ``split`` (seeded order, each once while they
    last): ``([28x28 uint8 image], class indices)``."""
    images, labels = [], []
    for ci, (dataset, label) in enumerate(_classes()):
        arrays = sources[dataset]
        imgs, labs = (arrays[0], arrays[1]) if split == "train" else (arrays[2], arrays[3])
        labs = np.asarray(labs).reshape(-1)
        idx = np.flatnonzero(labs == label)
        idx = idx[(np.asarray(imgs)[idx] > 60).reshape(len(idx), -1).sum(axis=1) >= _MIN_PIXELS]
        if exclude:
            idx = np.setdiff1d(idx, np.fromiter(exclude.get(dataset, ()), dtype=np.int64), assume_unique=False)
        if not len(idx):
            raise IIFError(f"{dataset} {split} split has no usable image of class {label} for the pretraining; "
                           "check the source files (iif det-data --source-root).")
        order = rng.permutation(idx)
        take = np.resize(order, per_class)  # repeats only when the class has fewer than per_class images
        images.extend(np.asarray(imgs[i]) for i in take)
        labels.extend([ci] * per_class)
    return images, np.asarray(labels, dtype=np.int64)


def _render(glyphs: list[np.ndarray], size: int, rng: np.random.Generator) -> torch.Tensor:
    """uint8 ``(n, 3, size, size)``: each source object cropped to its tight box, resized (long side in
    ``[size/2, size-2]``, aspect kept), placed at a random offset, in a random colour over a random colour
    gradient that contrasts with it in luminance, with pixel noise on half of them."""
    n = len(glyphs)
    lo, hi = max(4, size // 2), size - 2
    alpha = torch.zeros(n, size, size)
    longs = rng.integers(lo, hi + 1, n)
    offsets = rng.random((n, 2))
    for i, g in enumerate(glyphs):
        ys, xs = np.nonzero(g > _CROP_THRESHOLD)
        crop = g[ys.min():ys.max() + 1, xs.min():xs.max() + 1] if len(ys) else g
        h, w = crop.shape
        s = longs[i] / max(h, w)
        th, tw = max(1, round(h * s)), max(1, round(w * s))
        t = torch.from_numpy(crop.astype(np.float32) / 255.0)[None, None]
        t = F.interpolate(t, size=(th, tw), mode="bilinear", align_corners=False, antialias=True)[0, 0]
        y0, x0 = int(offsets[i, 0] * (size - th + 1)), int(offsets[i, 1] * (size - tw + 1))
        alpha[i, y0:y0 + th, x0:x0 + tw] = t.clamp(0, 1)
    lum = torch.tensor([0.299, 0.587, 0.114])
    bg0 = torch.from_numpy(rng.random((n, 3))).float()
    bg1 = (bg0 + torch.from_numpy(rng.normal(0, 0.25, (n, 3))).float()).clamp(0, 1)
    # The object's colour: the first of 8 candidates whose luminance differs from the background's by >= 0.3
    # (else the most different one), as the scenes keep objects visible.
    cand = torch.from_numpy(rng.random((n, 8, 3))).float()
    diff = ((cand @ lum) - (bg0 @ lum)[:, None]).abs()
    ok = diff >= 0.3
    pick = torch.where(ok.any(1), ok.float().argmax(1), diff.argmax(1))
    fg = cand[torch.arange(n), pick]
    theta = torch.from_numpy(rng.random(n) * 2 * np.pi).float()
    noise_sd = torch.from_numpy(np.where(rng.random(n) < 0.5, rng.random(n) * 0.1, 0.0)).float()
    grid = torch.linspace(0, 1, size)
    out = torch.empty(n, 3, size, size, dtype=torch.uint8)
    gen = torch.Generator().manual_seed(int(rng.integers(2 ** 31)))
    for a in range(0, n, 1024):  # chunks keep the float images small
        b = min(n, a + 1024)
        ramp = (torch.cos(theta[a:b])[:, None, None] * grid[None, None, :]
                + torch.sin(theta[a:b])[:, None, None] * grid[None, :, None])
        ramp = (ramp - ramp.amin((1, 2), keepdim=True)) / (ramp.amax((1, 2), keepdim=True)
                                                           - ramp.amin((1, 2), keepdim=True) + 1e-6)
        bg = bg0[a:b, :, None, None] + (bg1 - bg0)[a:b, :, None, None] * ramp[:, None]
        al = alpha[a:b, None]
        img = bg * (1 - al) + fg[a:b, :, None, None] * al
        img = img + noise_sd[a:b, None, None, None] * torch.randn(img.shape, generator=gen)
        out[a:b] = (img.clamp(0, 1) * 255 + 0.5).to(torch.uint8)
    return out


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return (x.float() / 255.0 - _MEAN) / _STD


# -------------------------------------------------------------------------------------------------- training
def _network(depth: str, num_classes: int) -> nn.Module:
    from .models import _resnet

    net = _resnet(depth, "bn")
    net.fc = nn.Linear(net.fc.in_features, num_classes)
    return net


@torch.no_grad()
def _accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> np.ndarray:
    net.eval()
    pred = torch.cat([net(_normalise(x[i:i + batch_size])).argmax(1) for i in range(0, len(x), batch_size)])
    return (pred == y).numpy()


def pretrain_backbone(*, depth: str = "r10", seed: int = 0, sources: Mapping[str, tuple] | None = None,
                      source_root: str | os.PathLike | None = None, exclude: Mapping[str, set] | None = None,
                      log: Callable[[str], Any] = print, **settings: Any) -> tuple[dict[str, torch.Tensor], dict]:
    """Train ``depth``'s ResNet (BatchNorm) to classify the 20 source categories, balanced; returns
    ``(state dict in torchvision's ResNet format, metadata)``. Writes nothing (see :func:`pretrained_backbone`).

    ``sources``: ``{"fashion-mnist": arrays, "mnist": arrays}`` as ``iif.data.mnist.load_mnist_arrays`` returns
    them (else loaded, ``source_root`` as ``iif det-data --source-root``); ``exclude``: ``{dataset: {train
    index}}`` never used; ``settings`` override :data:`PRETRAIN_DEFAULTS`. The caller's torch RNG state is
    restored afterwards. The metadata holds the held-out accuracy on the sources' test splits (overall and
    per source dataset), the training and CPU time and the settings.
    """
    from .models import ARCHS

    cfg = _settings(settings)
    if depth not in {b for f, b in ARCHS.values() if f != "ssd"}:
        raise IIFError(f"pretraining is for the ResNet backbones (r10, r18, r34, r50, r101); got {depth!r}.")
    if sources is None:
        from .synthetic import _load_sources

        sources = _load_sources(source_root, False)
    cpu0, t0 = time.process_time(), time.perf_counter()
    rng = np.random.default_rng([int(seed), PRETRAIN_VERSION, 7])
    glyphs, y = _pick(sources, "train", cfg["per_class"], rng, exclude)
    x = _render(glyphs, cfg["size"], rng)
    tglyphs, ty = _pick(sources, "test", cfg["test_per_class"], rng)
    tx = _render(tglyphs, cfg["size"], rng)
    y, ty = torch.from_numpy(y), torch.from_numpy(ty)
    render_s = time.perf_counter() - t0
    n_classes = len(_classes())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        net = _network(depth, n_classes)
        losses = _train(net, x, y, cfg, int(seed), depth, log, t0)
        correct = _accuracy(net, tx, ty, 256)
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    fashion = np.asarray([_classes()[int(c)][0] == "fashion-mnist" for c in ty])
    meta = {
        "format": "iif-det-pretrain", "version": PRETRAIN_VERSION, "depth": depth, "seed": int(seed),
        "settings": cfg, "classes": [f"{d}:{lab}" for d, lab in _classes()],
        "train_images": int(len(x)), "test_images": int(len(tx)),
        "excluded_sources": {k: len(v) for k, v in (exclude or {}).items()},
        "test_accuracy": float(correct.mean()), "test_accuracy_fashion": float(correct[fashion].mean()),
        "test_accuracy_mnist": float(correct[~fashion].mean()), "train_loss": losses,
        "render_s": round(render_s, 2), "wall_s": round(time.perf_counter() - t0, 2),
        "cpu_s": round(time.process_time() - cpu0, 2), "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    log(f"pretrain {depth}: held-out accuracy {100 * meta['test_accuracy']:.1f}% on {len(tx)} balanced source test "
        f"images (Fashion-MNIST {100 * meta['test_accuracy_fashion']:.1f}%, MNIST "
        f"{100 * meta['test_accuracy_mnist']:.1f}%); {meta['wall_s']:.0f} s wall, {meta['cpu_s']:.0f} CPU-s")
    return state, meta


def _train(net: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: Mapping[str, Any], seed: int, depth: str,
           log: Callable[[str], Any], t0: float) -> list[float]:
    """:func:`pretrain_backbone`'s training: SGD (Nesterov, no weight decay on biases and norms) with a linear
    warm-up then cosine learning rate, batches in a seeded random order; returns each epoch's mean loss."""
    decay = [p for n, p in net.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in net.named_parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": cfg["weight_decay"]},
                           {"params": no_decay, "weight_decay": 0.0}], lr=cfg["lr"], momentum=0.9, nesterov=True)
    bs = int(cfg["batch_size"])
    per_epoch = (len(x) + bs - 1) // bs
    total = per_epoch * int(cfg["epochs"])
    warm = min(int(cfg["warmup_iters"]), max(total - 1, 0))

    def lr_at(it: int) -> float:
        if it < warm:
            return cfg["lr"] * (it + 1) / warm
        return cfg["lr"] * 0.5 * (1 + np.cos(np.pi * (it - warm) / max(total - warm, 1)))

    gen = torch.Generator().manual_seed(int(seed))
    it, losses = 0, []
    net.train()
    for epoch in range(int(cfg["epochs"])):
        order = torch.randperm(len(x), generator=gen)
        running = 0.0
        for b in range(per_epoch):
            idx = order[b * bs:(b + 1) * bs]
            for group in opt.param_groups:
                group["lr"] = lr_at(it)
            loss = F.cross_entropy(net(_normalise(x[idx])), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running += float(loss.detach())
            it += 1
        losses.append(running / per_epoch)
        log(f"pretrain {depth}: epoch {epoch + 1}/{cfg['epochs']}: loss {losses[-1]:.3f} "
            f"({time.perf_counter() - t0:.0f} s)")
    return losses


def _settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(settings) - set(PRETRAIN_DEFAULTS))
    if unknown:
        raise IIFError(f"unknown pretraining setting(s) {', '.join(unknown)}; use {', '.join(PRETRAIN_DEFAULTS)}.")
    cfg = {**PRETRAIN_DEFAULTS, **settings}
    for key in ("per_class", "epochs", "batch_size", "test_per_class", "size"):
        v = cfg[key]
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < (8 if key == "size" else 1):
            raise IIFError(f"pretraining setting {key} must be an integer >= {8 if key == 'size' else 1}; got {v!r}.")
    for key in ("lr", "weight_decay"):
        if not np.isfinite(float(cfg[key])) or float(cfg[key]) < 0 or (key == "lr" and float(cfg[key]) == 0):
            raise IIFError(f"pretraining setting {key} must be a finite number {'> 0' if key == 'lr' else '>= 0'}; "
                           f"got {cfg[key]!r}.")
    return {k: (int(v) if isinstance(v, (int, np.integer)) else float(v)) for k, v in cfg.items()}


# ----------------------------------------------------------------------------------------------------- cache
def pretrain_cache_root() -> Path:
    """``$IIF_CACHE_DIR/det-pretrain`` (``~/.cache/iif/det-pretrain`` without it)."""
    return Path(os.environ.get("IIF_CACHE_DIR") or Path.home() / ".cache" / "iif") / "det-pretrain"


def _marker(benchmark: str | os.PathLike) -> dict:
    from .synthetic import BENCHMARK_FORMAT

    path = Path(benchmark) / "BENCHMARK.json"
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        marker = None
    if not isinstance(marker, dict) or marker.get("format") != BENCHMARK_FORMAT:
        raise IIFError(f"backbone_weights 'pretrained' needs an iif det-data benchmark (a folder with BENCHMARK.json); "
                       f"{benchmark} is not one. Pass a weights file as backbone_weights, or null (from scratch).")
    return marker


def excluded_sources(benchmark: str | os.PathLike) -> dict[str, set]:
    """``{dataset: {index}}``: the sources' TRAIN-split images that an evaluation split of the benchmark
    (every split but ``train`` in ``BENCHMARK.json``) records as an annotation's source; the pretraining skips
    them. Empty for generator 1 (its evaluation objects come from the sources' test splits)."""
    root = Path(benchmark)
    marker = _marker(root)
    out: dict[str, set] = {}
    for split, info in (marker.get("splits") or {}).items():
        if split == "train" or not isinstance(info, dict) or not info.get("annotations"):
            continue
        try:
            ann = json.loads((root / info["annotations"]).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise IIFError(f"cannot read {root / info['annotations']} ({exc}); regenerate the benchmark with "
                           "iif det-data.") from None
        for a in ann.get("annotations", []):
            src = a.get("source")
            if isinstance(src, list) and len(src) == 3 and src[1] == "train":
                out.setdefault(str(src[0]), set()).add(int(src[2]))
    return out


def pretrain_key(marker: Mapping[str, Any], depth: str, settings: Mapping[str, Any],
                 exclude: Mapping[str, set]) -> str:
    """12 hex digits of a hash of what the weights depend on: the generator version, the benchmark's seed and
    options, the backbone depth, the recipe (version and settings) and the excluded source images."""
    blob = json.dumps({"generator": marker.get("generator_version"), "seed": marker.get("seed"),
                       "options": marker.get("options"), "depth": depth, "version": PRETRAIN_VERSION,
                       "settings": dict(settings), "exclude": {k: sorted(v) for k, v in sorted(exclude.items())}},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def pretrained_backbone(benchmark: str | os.PathLike, depth: str = "r10", *,
                        sources: Mapping[str, tuple] | None = None, source_root: str | os.PathLike | None = None,
                        log: Callable[[str], Any] = print, **settings: Any) -> Path:
    """The cached pretrained backbone of the ``iif det-data`` benchmark folder ``benchmark`` for ``depth``:
    the path of its ``backbone.pth``, trained (:func:`pretrain_backbone`, seeded with the benchmark's seed) and
    written into :func:`pretrain_cache_root` on first use, returned as is afterwards."""
    marker = _marker(benchmark)
    cfg = _settings(settings)
    exclude = excluded_sources(benchmark)
    folder = pretrain_cache_root() / (f"v{marker.get('generator_version')}-seed{marker.get('seed')}-{depth}-"
                                      f"{pretrain_key(marker, depth, cfg, exclude)}")
    path = folder / _FILE
    if path.is_file():
        return path
    from ..outputs import atomic_torch_save, atomic_write_json, json_safe

    log(f"pretrain {depth}: building the pretrained backbone of {benchmark} into {folder} (once; about 4 CPU-minutes "
        "for r10)")
    state, meta = pretrain_backbone(depth=depth, seed=int(marker.get("seed") or 0), sources=sources,
                                    source_root=source_root, exclude=exclude, log=log, **cfg)
    meta.update(benchmark=str(benchmark), generator_version=marker.get("generator_version"),
                benchmark_options=marker.get("options"), date=time.strftime("%Y-%m-%d", time.gmtime()))
    atomic_write_json(folder / _META, json_safe(meta), mkdir=True)
    atomic_torch_save(state, path, mkdir=True)
    return path


def resolve_backbone_weights(weights: Any, *, arch: str, data_root: str | os.PathLike | None = None,
                             log: Callable[[str], Any] = print, **settings: Any) -> Any:
    """``backbone_weights`` as ``build_detector`` takes it: :data:`KEYWORD` (``"pretrained"``) becomes the
    cached pretraining of the benchmark ``data_root`` for ``arch``'s ResNet (:func:`pretrained_backbone`, built
    on first use); every other value (None, "none", a file, a torchvision weights name) is returned as is."""
    if not (isinstance(weights, str) and weights.strip() == KEYWORD) or os.path.isfile(str(weights)):
        return weights
    from .models import ARCHS

    if arch not in ARCHS or ARCHS[arch][0] == "ssd":
        raise IIFError(f"backbone_weights 'pretrained' is for the ResNet-FPN archs; model.arch is {arch}: set "
                       "backbone_weights=null.")
    if data_root is None:
        raise IIFError("backbone_weights 'pretrained' needs an iif det-data benchmark as the data (data.root / "
                       "--data); pass a weights file as backbone_weights, or null (from scratch).")
    return str(pretrained_backbone(data_root, ARCHS[arch][1], log=log, **settings))
