"""Where a classifier looks and what it scores: the paper's Fig. 6 analysis for ``iif train`` checkpoints.

    from iif.explain import explain_image
    maps = explain_image("runs/iif/last.pt", "toaster.png", target="toaster")
    maps.predicted, maps.scores, maps.score_map, maps.gradcam[maps.predicted]

Fig. 6 of the paper compares softmax and IIF on one image containing a rare class: (iii) the class scores of
the confident region (softmax picks *cup*, IIF the rare *toaster*) and (iv) Grad-CAM (Selvaraju et al.,
ICCV 2017), large in both models, so IIF changes which class is scored, not where the network looks. For a
classifier this module gives, per checkpoint:

* ``scores``: the softmax over the classes of the logits the decision is made on (``adjust``: by default the
  checkpoint's own loss rule, ``w * z`` for the IIF loss, Eq. 13 of the paper; see :mod:`iif.predict`);
* ``score_map``: the class-score heatmap, the classifier applied to each location of the backbone's last
  spatial feature map (for a linear head followed by global average pooling this is the class activation map
  of Zhou et al., CVPR 2016: its mean over the locations is the logit), for the predicted class, upsampled
  bilinearly to the input size;
* ``gradcam``: Grad-CAM of the same layer, ``ReLU(sum_k a_k A^k)`` with ``a_k`` the spatial mean of the
  gradient of the class's decision logit w.r.t. channel ``k``, for the predicted and the true (asked)
  class, computed by captum's ``LayerGradCam`` (the optional extra ``iif[explain]``), upsampled the same way.

The layer is the last module of the backbone, in execution order, whose output is a 4-D map with more than
one location (the input of the global pooling for the built-in backbones). Detector runs of ``iif
det-train`` are explained by :mod:`iif.explain_detection`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import IIFError

__all__ = ["ClassMaps", "explain_image", "image_channels", "resolve_class", "spatial_layer", "score_map",
           "grad_cam", "plot_explanations", "DecisionModel", "checkpoint_kind", "CAPTUM_HINT"]

PathLike = str | os.PathLike

CAPTUM_HINT = 'iif explain needs captum (Grad-CAM), which is not installed; install it with: pip install "iif[explain]"'

# PIL modes by band count; a palette image ("P") is shown and converted as RGB.
_MODE_CHANNELS = {"1": 1, "L": 1, "I": 1, "F": 1, "I;16": 1, "I;16B": 1, "I;16L": 1, "LA": 2, "La": 2, "PA": 2,
                  "P": 3, "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3, "RGBA": 4, "RGBa": 4, "RGBX": 4, "CMYK": 4}


@dataclasses.dataclass
class ClassMaps:
    """One checkpoint's explanation of one image (maps are ``(H, W)`` float arrays at the input size)."""

    checkpoint: str
    label: str                      # what the figure calls the checkpoint (its loss and file name)
    class_names: list[str]
    logits: np.ndarray              # (C,) decision logits (adjusted when asked)
    scores: np.ndarray              # (C,) softmax of ``logits``
    predicted: int
    target: int | None              # the true / asked class, when known
    image: np.ndarray               # (H, W, 3) the model's input de-normalised to [0, 1], for display
    layer: str                      # the backbone layer the maps come from
    score_map: np.ndarray | None    # decision logit of the predicted class at each location (None: head does not fit)
    gradcam: dict[int, np.ndarray]  # class index -> Grad-CAM (>= 0)
    box: list[float] | None = None  # detectors: the explained detection [x0, y0, x1, y1] in image pixels
    proposal: list[float] | None = None  # detectors: the RPN proposal it was scored on, in the resized input
    objectness: dict[int, np.ndarray] | None = None  # YOLOv3: stride -> sigmoid objectness, max over anchors
    cell: dict | None = None        # YOLOv3: the detection's stride, anchor, row and column (SSD: map, row, column, anchor)
    level_maps: dict[str, np.ndarray] | None = None  # SSD: detection map "HxW" -> max over its anchors of the class score

    def summary(self) -> dict:
        """Plain data for ``explain.json``: classes, scores, and where each map peaks (row, column)."""
        def peak(m: np.ndarray | None) -> list[int] | None:  # None: no map, or one without positive evidence
            return None if m is None or not (m > 0).any() else [int(v) for v in np.unravel_index(int(np.argmax(m)), m.shape)]

        top = np.argsort(-self.scores)[:5]
        return {"checkpoint": self.checkpoint, "label": self.label, "layer": self.layer,
                "predicted": self.class_names[self.predicted], "predicted_index": self.predicted,
                "target": None if self.target is None else self.class_names[self.target], "target_index": self.target,
                "top": [{"class": self.class_names[i], "index": int(i), "score": float(self.scores[i])} for i in top],
                "score_map_peak": peak(self.score_map),
                "gradcam_peak": {self.class_names[c]: peak(m) for c, m in self.gradcam.items()},
                "image_size": list(self.image.shape[:2]), "box": self.box,
                **({} if self.objectness is None else {
                    "cell": self.cell, "objectness_peak": {str(s): peak(m) for s, m in self.objectness.items()},
                    "objectness_max": {str(s): float(m.max()) for s, m in self.objectness.items()}}),
                **({} if self.level_maps is None else {
                    "cell": self.cell, "level_peak": {k: peak(m) for k, m in self.level_maps.items()},
                    "level_max": {k: float(m.max()) for k, m in self.level_maps.items()}})}


def image_channels(path: PathLike) -> tuple[int, str]:
    """``(channels, PIL mode)`` of the image file at ``path``; IIFError when it cannot be read as an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            mode = im.mode
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise IIFError(f"{path}: cannot be read as an image ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                       "give a PNG or JPEG file.") from None
    return _MODE_CHANNELS.get(mode, len(mode)), mode


def check_image_channels(path: PathLike, channels: int) -> None:
    """Refuse an image whose channel count is not the model's (1: grey, 3: RGB) instead of converting it."""
    have, mode = image_channels(path)
    if have != int(channels):
        want = "grey (mode L)" if int(channels) == 1 else "RGB"
        raise IIFError(f"{path} has {have} channel(s) (PIL mode {mode}) but the checkpoint's model takes {channels} "
                       f"({want}); convert the image first, e.g. PIL: Image.open(p).convert({'L' if int(channels) == 1 else 'RGB'!r}).save(q).")


def resolve_class(target: str | int | None, class_names: Sequence[str], image: PathLike | None = None) -> int | None:
    """The index of ``target`` (a class name, else an index) in ``class_names``; when ``target`` is None, the
    image's parent folder name if it is a class name (a class-folder tree), else None. IIFError naming the
    classes for an unknown one."""
    names = [str(n) for n in class_names]
    if target is None or str(target) == "":
        parent = Path(image).parent.name if image is not None else ""
        return names.index(parent) if parent in names else None
    text = str(target)
    if text in names:
        return names.index(text)
    if text.lstrip("-").isdigit() and 0 <= int(text) < len(names):
        return int(text)
    import difflib

    close = difflib.get_close_matches(text, names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    shown = ", ".join(names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20 else "")
    raise IIFError(f"--class {text!r} is not a class of the checkpoint; give a name ({shown}) or an index 0-"
                   f"{len(names) - 1}.{hint}")


def spatial_layer(backbone: nn.Module, x: torch.Tensor) -> tuple[str, nn.Module, torch.Tensor]:
    """``(name, module, output)`` of the last module of ``backbone`` (execution order) whose output is a 4-D map
    with more than one location; the last 4-D one when every map is 1x1. IIFError when there is none."""
    seen: list[tuple[str, nn.Module, torch.Tensor]] = []

    def hook(name):
        def record(module, _inputs, output):
            if isinstance(output, torch.Tensor) and output.dim() == 4:
                seen.append((name, module, output.detach().clone()))
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in backbone.named_modules() if n]
    try:
        with torch.no_grad():
            backbone(x)
    finally:
        for h in handles:
            h.remove()
    if not seen:
        raise IIFError("the checkpoint's backbone has no 4-D feature map (no convolutional layer); Grad-CAM and the "
                       "class-score heatmap need one.")
    spatial = [s for s in seen if s[2].shape[-1] * s[2].shape[-2] > 1]
    return (spatial or seen)[-1]


class DecisionModel(nn.Module):
    """images -> the decision logits: ``classifier(features)``, then the adjuster (``w * z`` for IIF) if any."""

    def __init__(self, model: nn.Module, adjuster: Callable | None) -> None:
        super().__init__()
        self.model, self.adjuster = model, adjuster

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.model.features(x)
        z = self.model.classifier(f).float()
        return z if self.adjuster is None else self.adjuster(f, z).float()

    def head(self, f: torch.Tensor) -> torch.Tensor:
        z = self.model.classifier(f).float()
        return z if self.adjuster is None else self.adjuster(f, z).float()


def score_map(decision: DecisionModel, fmap: torch.Tensor, feature_dim: int) -> torch.Tensor | None:
    """The decision logits of every class at each location of ``fmap`` ``(1, D, h, w)``: the head applied to
    each location's feature vector, ``(C, h, w)``; None when ``D`` is not the head's input size."""
    if fmap.shape[1] != int(feature_dim):
        return None
    _, d, h, w = fmap.shape
    with torch.no_grad():
        z = decision.head(fmap[0].permute(1, 2, 0).reshape(h * w, d))
    return z.T.reshape(-1, h, w)


def grad_cam(decision: nn.Module, layer: nn.Module, x: torch.Tensor, classes: Sequence[int]) -> dict[int, torch.Tensor]:
    """Grad-CAM ``(h, w)`` of ``layer`` for each class of ``classes`` (captum's ``LayerGradCam``, ReLU applied)."""
    try:
        from captum.attr import LayerGradCam
    except ImportError:
        raise IIFError(CAPTUM_HINT) from None
    cam = LayerGradCam(decision, layer)
    out = {}
    for c in dict.fromkeys(int(c) for c in classes):
        a = cam.attribute(x, target=c, relu_attributions=True)
        out[c] = a.detach()[0, 0].float()
    return out


def _upsample(m: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    return F.interpolate(m[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def _display_image(x: torch.Tensor, pre: dict) -> np.ndarray:
    img = x[0].detach().cpu().float()
    mean = torch.tensor(pre.get("mean") or [0.0] * img.shape[0]).view(-1, 1, 1)
    std = torch.tensor(pre.get("std") or [1.0] * img.shape[0]).view(-1, 1, 1)
    img = (img * std + mean).clamp(0, 1)
    if img.shape[0] == 1:
        img = img.expand(3, -1, -1)
    return img.permute(1, 2, 0).numpy()


def checkpoint_kind(checkpoint: PathLike) -> str:
    """``"detector"`` for a checkpoint (or run folder) of ``iif det-train``, ``"classifier"`` for one of ``iif
    train`` with class names; IIFError for a checkpoint without class names or holding only weights."""
    from .runtime import load_checkpoint

    path = Path(checkpoint)
    if path.is_dir():
        path = next((path / n for n in ("best.pt", "last.pt", "final.pt") if (path / n).is_file()), path)
    ckpt = load_checkpoint(path)
    if "config" not in ckpt and "settings" in ckpt:
        return "detector"
    pre = ckpt.get("preprocess")
    if "config" in ckpt and isinstance(pre, dict) and not pre.get("class_names"):
        raise IIFError(f"{path} stores no class names (preprocess.class_names); use a checkpoint written by iif train.")
    if "config" not in ckpt:
        raise IIFError(f"{path} holds only weights, without the config and class names iif explain needs; use a "
                       "checkpoint written by iif train.")
    return "classifier"


def _label(predictor) -> str:
    """The loss the checkpoint's classifier was trained with (a decoupled stage-2 checkpoint: stage 2's), e.g.
    ``ce (best.pt)``, ``iif:smooth (best.pt)``, ``stage2 iif:smooth (best.pt)``."""
    r = predictor.restored
    stage2 = r.ckpt.get("stage") == "stage2"
    section = getattr(r.cfg, "decoupled" if stage2 else "loss", None)
    loss = str(getattr(section, "loss" if stage2 else "name", "?"))
    variant = getattr(section, "variant", None) if loss.startswith("iif") else None
    return f"{'stage2 ' if stage2 else ''}{loss}{':' + variant if variant else ''} ({Path(r.path).name})"


def explain_image(checkpoint: PathLike, image: PathLike, target: str | int | None = None, *,
                  adjust: str | None = "loss", device: str | None = "cpu") -> ClassMaps:
    """Class scores, class-score heatmap and Grad-CAMs (predicted and ``target`` class) of ``image`` under
    ``checkpoint`` (see the module docstring). ``target``: a class name or index; None takes the image's
    parent folder name when it is a class name. ``adjust``: as in :mod:`iif.predict` (default ``"loss"``, the
    rule of the checkpoint's own loss). Bad input raises :class:`IIFError` (one line)."""
    from .predict import Predictor, load_image

    if checkpoint_kind(checkpoint) == "detector":
        raise IIFError(f"{checkpoint} is an iif det-train (detector) checkpoint; explain it with "
                       "iif.explain_detection (iif explain does so by itself).")
    p = Predictor(checkpoint, adjust=None if adjust in (None, "", "none") else adjust, device=device)
    if not p.class_names:
        raise IIFError(f"{checkpoint} stores no class names; use a checkpoint written by iif train.")
    check_image_channels(image, p.channels)
    tgt = resolve_class(target, p.class_names, image)
    x = p.transform(load_image(image, p.channels))[None].to(p.device)
    model = p.model
    decision = DecisionModel(model, p.adjuster).eval()
    name, layer, fmap = spatial_layer(model.backbone, x)
    with torch.no_grad():
        logits = decision(x)[0].cpu()
    pred = int(logits.argmax())
    size = tuple(x.shape[-2:])
    smap = score_map(decision, fmap, getattr(model, "feature_dim", fmap.shape[1]))
    cams = grad_cam(decision, layer, x, [pred] + ([tgt] if tgt is not None else []))
    return ClassMaps(checkpoint=str(p.restored.path), label=_label(p), class_names=list(p.class_names),
                     logits=logits.numpy(), scores=torch.softmax(logits, 0).numpy(), predicted=pred, target=tgt,
                     image=_display_image(x, p.preprocess), layer=name,
                     score_map=None if smap is None else _upsample(smap[pred].cpu(), size),
                     gradcam={c: _upsample(m.cpu(), size) for c, m in cams.items()})


def _bars(ax, m: ClassMaps) -> None:
    colours = ["0.6"] * len(m.scores)
    if m.target is not None:
        colours[m.target] = "tab:green"
    colours[m.predicted] = "tab:red" if m.target not in (None, m.predicted) else "tab:green" if m.target is not None else "tab:blue"
    ax.bar(np.arange(len(m.scores)), m.scores, color=colours)
    ax.set_ylim(0, 1)
    ax.set_xlabel("class index")
    ax.set_ylabel("objectness x softmax" if m.objectness is not None else "softmax score")
    ax.set_title("class scores (red: wrong prediction, green: true)", fontsize=8)


def _draw_box(ax, m: ClassMaps) -> None:
    if m.box is not None:
        from matplotlib.patches import Rectangle

        x0, y0, x1, y1 = m.box
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="white", linewidth=1.5))


def _overlay(ax, m: ClassMaps, heat: np.ndarray | None, title: str) -> None:
    ax.imshow(m.image)
    _draw_box(ax, m)
    if heat is not None and (heat > 0).any():
        ax.imshow(heat, cmap="jet", alpha=0.5)
        r, c = np.unravel_index(int(np.argmax(heat)), heat.shape)
        ax.plot([c], [r], marker="+", color="white", markersize=10)
    elif heat is not None or m.box is None:  # Grad-CAM is all zero when no channel's evidence is positive anywhere
        note = "n/a" if heat is None else "all zero: no positive evidence"
        ax.text(0.5, 0.5, note, ha="center", va="center", transform=ax.transAxes, color="white", fontsize=8,
                bbox={"facecolor": "black", "alpha": 0.6})
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def plot_explanations(results: Sequence[ClassMaps], image_name: str = ""):
    """One row per checkpoint: input with prediction, class scores (Fig. 6 iii), class-score heatmap of the
    predicted class, Grad-CAM of the predicted and of the true class (Fig. 6 iv). Returns the figure."""
    from .reporting import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(len(results), 5, figsize=(17, 3.4 * len(results)), squeeze=False)
    for row, m in zip(axes, results):
        names = m.class_names
        pred = f"{names[m.predicted]} ({m.scores[m.predicted]:.2f})"
        true = names[m.target] if m.target is not None else "unknown (--class)"
        row[0].imshow(m.image)
        _draw_box(row[0], m)
        row[0].set_title(f"{m.label}\npredicted {pred}, true {true}", fontsize=8)
        row[0].axis("off")
        _bars(row[1], m)
        if m.objectness is not None:
            heat_title = "objectness (max over anchors and scales)"
        else:
            what = ("the detection (a detector scores boxes)" if m.score_map is None else
                    "highest RoI score (box-wise)" if m.level_maps is None else
                    "anchor class score (max over anchors and maps)") if m.box is not None else "class-score heatmap"
            heat_title = f"{what}: {names[m.predicted]}"
        _overlay(row[2], m, m.score_map, heat_title)
        _overlay(row[3], m, m.gradcam.get(m.predicted), f"Grad-CAM ({m.layer}): predicted {names[m.predicted]}")
        if m.target is None or m.target == m.predicted:
            note = "true class = predicted" if m.target is not None else "true class unknown: pass --class"
            _overlay(row[4], m, m.gradcam.get(m.target) if m.target is not None else None, f"Grad-CAM: {note}")
        else:
            _overlay(row[4], m, m.gradcam.get(m.target), f"Grad-CAM: true {names[m.target]}")
    if image_name:
        fig.suptitle(image_name, fontsize=9)
    fig.tight_layout()
    return fig
