"""Predictions for new image files from a trained checkpoint, with the checkpoint's own preprocessing.

    from iif.predict import predict_images
    rows = predict_images("runs/folder/last.pt", ["cat.jpg", "photos/"], adjust="iif:smooth", topk=3)
    rows[0] == {"path": "cat.jpg", "top": [{"class": "cat", "index": 2, "score": 0.91}, ...]}

What the model sees is what it was evaluated on: the checkpoint stores its evaluation preprocessing
(``preprocess``: image size, channels, normalisation, class names; written by ``iif train``, see
:func:`iif.train.evaluation.checkpoint_preprocess`). File-backed datasets (``folder``, list datasets) use the
very transform their evaluation split used (:func:`iif.data.transforms.build_transform` with
``train=False``); in-memory datasets (digits, MNIST, CIFAR, and small folder trees, which are decoded
with a bilinear resize to the square) keep images at ``image_size`` pixels, so a new image is resized to
that square the same way, then scaled to [0, 1] and normalised. Images are converted to grey (one channel)
or RGB to match the model. A checkpoint written before ``preprocess`` existed is handled by
rebuilding its dataset from the stored config (which must then be available).

``adjust`` is an adjuster spec as in ``iif eval --adjust`` (:func:`iif.train.build_adjuster`:
``iif:<variant>`` post-process IIF, Eq. 15 of the paper, ``la:<tau>``, ``taunorm:<tau>``), or ``loss`` for the
decision rule of the loss the checkpoint was trained with (``w * z`` for the IIF loss; raw logits for a
loss without one). ``score`` is the softmax of the logits the decision is made on (adjusted, when asked).

Unreadable images: by default an :class:`IIFError` naming them (up to five, and how many), raised before
any result is returned; ``skip_unreadable=True`` leaves them out with one warning naming them.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch

from .errors import IIFError
from .readers import IMG_EXTENSIONS, special_files_message, walk_image_files

__all__ = ["Predictor", "predict_images", "image_paths", "image_transform", "load_image"]

PathLike = str | os.PathLike


def image_paths(inputs: Iterable[PathLike]) -> list[Path]:
    """Files given as they are (any extension); folders searched recursively for image files
    (:data:`iif.readers.IMG_EXTENSIONS`, :func:`iif.readers.walk_image_files`: links followed without cycles,
    FIFOs, sockets and devices skipped with one warning), sorted. IIFError for a path that does not exist, is
    not a regular file, or a folder without images."""
    out: list[Path] = []
    special: list[tuple[str, str]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():  # links followed, each real folder and file once; FIFOs etc. never opened
            walk = walk_image_files(p, IMG_EXTENSIONS)
            special += walk.special
            found = sorted(Path(f) for f in walk.files)
            if not found:
                raise IIFError(f"{p} holds no image files ({', '.join(IMG_EXTENSIONS)}); give image files or a "
                               "folder of them.")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        elif p.exists():
            raise IIFError(f"{p}: not a regular file (a FIFO, socket or device would block or never end); give "
                           "image files or folders of images.")
        else:
            raise IIFError(f"{p}: no such file or folder; give image files or folders of images.")
    message = special_files_message(special, "image folders")
    if message:
        warnings.warn(message, stacklevel=2)
    if not out:
        raise IIFError("no images given; pass image files or folders of images.")
    return out


def load_image(path: PathLike, channels: int):
    """The image at ``path`` as a PIL image with ``channels`` (1: grey ``L``, 3: ``RGB``)."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        return im.convert("L" if channels == 1 else "RGB")


def image_transform(pre: dict) -> Callable:
    """PIL image -> normalised float32 ``(C, H, W)`` tensor, as the checkpoint's evaluation split did."""
    from torchvision.transforms import v2

    from .data.transforms import build_transform

    size = int(pre["image_size"])
    if pre["kind"] == "pil":
        return build_transform("none", pre["mean"], pre["std"], train=False, image_size=size, kind="pil")
    # In-memory datasets hold uint8 (C, size, size) images (a small folder tree is decoded so: PIL bilinear
    # resize to the square); their eval transform starts from that tensor.
    from PIL import Image

    eval_tf = build_transform("none", pre["mean"], pre["std"], train=False, image_size=size, kind="tensor")
    tensor_tf = v2.Compose([v2.ToImage(), eval_tf])

    def transform(img):
        if img.size != (size, size):
            img = img.resize((size, size), Image.BILINEAR, reducing_gap=None)
        return tensor_tf(img)

    return transform


class Predictor:
    """A checkpoint ready to score image files: model (eval mode), transform, class names, adjuster."""

    def __init__(self, checkpoint: PathLike, adjust: str | None = None, device: str | None = None) -> None:
        from .train import build_adjuster
        from .train.evaluation import checkpoint_preprocess, restore_checkpoint

        r = restore_checkpoint(checkpoint, device, build_data=False)
        pre = r.ckpt.get("preprocess")
        if not isinstance(pre, dict):  # written before checkpoints stored it: rebuilt from the dataset
            pre = checkpoint_preprocess(r.splits)
        self.restored = r
        self.model = r.model
        self.device = r.device
        self.preprocess = pre
        self.class_names = [str(n) for n in pre["class_names"]]
        self.channels = int(pre["channels"])
        self.transform = image_transform(pre)
        self.adjust = adjust
        self.adjuster: Callable | None = None
        if adjust == "loss":
            self.adjuster = r.own_adjuster()
        elif adjust not in (None, "", "none"):
            counts = r.ckpt.get("class_counts")
            if counts is None:
                raise IIFError(f"{r.path} stores no training class counts, which --adjust {adjust} needs; use a "
                               "checkpoint written by iif train.")
            self.adjuster = build_adjuster(adjust, [int(c) for c in counts], self.model)

    @torch.no_grad()
    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """Float32 logits of a transformed ``(B, C, H, W)`` batch, adjusted when an adjuster was asked for."""
        x = batch.to(self.device)
        f = self.model.features(x)
        z = self.model.classifier(f).float()
        if self.adjuster is not None:
            z = self.adjuster(f, z).float()
        return z.cpu()

    def __call__(self, paths: Sequence[PathLike], topk: int = 5, batch_size: int = 64,
                 skip_unreadable: bool = False) -> list[dict]:
        if int(topk) < 1:
            raise IIFError(f"topk must be >= 1; got {topk}.")
        if int(batch_size) < 1:
            raise IIFError(f"batch size must be >= 1; got {batch_size}.")
        from PIL import Image

        from .resources import check_image_memory

        # one line with the estimate before a batch is built (a checkpoint's image size may be anything)
        check_image_memory(min(int(batch_size), max(len(paths), 1)), int(self.preprocess["image_size"]),
                           self.channels, what="a prediction batch",
                           size_key="the checkpoint's preprocess image_size", batch_key="--batch-size")

        k = min(int(topk), len(self.class_names))
        results: list[dict] = []
        bad: list[tuple[str, str]] = []
        for start in range(0, len(paths), int(batch_size)):
            tensors, kept = [], []
            for p in paths[start:start + int(batch_size)]:
                try:
                    tensors.append(self.transform(load_image(p, self.channels)))
                    kept.append(str(p))
                except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:  # broken/huge files
                    bad.append((str(p), str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
            if not tensors or (bad and not skip_unreadable):
                continue  # an error follows: no need to score the rest
            probs = torch.softmax(self.logits(torch.stack(tensors)), dim=1)
            top_p, top_i = probs.topk(k, dim=1)
            for path, ps, idx in zip(kept, top_p.tolist(), top_i.tolist()):
                results.append({"path": path, "top": [{"class": self.class_names[i], "index": int(i), "score": float(s)}
                                                      for s, i in zip(ps, idx)]})
        if bad:
            names = "; ".join(f"{p} ({why})" for p, why in bad[:5])
            names += f"; and {len(bad) - 5} more" if len(bad) > 5 else ""
            if not skip_unreadable:
                raise IIFError(f"{len(bad)} of {len(paths)} image(s) cannot be read: {names}; remove or re-save "
                               "them, or skip them with --skip-unreadable.")
            warnings.warn(f"skipped {len(bad)} unreadable image(s): {names}", stacklevel=2)
        return results


def predict_images(checkpoint: PathLike, paths: Iterable[PathLike], adjust: str | None = None, topk: int = 5, *,
                   device: str | None = None, batch_size: int = 64, skip_unreadable: bool = False) -> list[dict]:
    """Top-``topk`` classes for each image (files, or folders searched recursively), in input order.

    Returns one dict per image: ``{"path": str, "top": [{"class": name, "index": int, "score": float}, ...]}``
    (best first; ``score`` is the softmax of the, possibly adjusted, logits). See the module docstring for
    ``adjust`` and unreadable images.
    """
    return Predictor(checkpoint, adjust, device)(image_paths(paths), topk, batch_size, skip_unreadable)
