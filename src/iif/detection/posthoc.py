"""Post-hoc margins on a trained two-stage detector from one backbone pass.

A post-hoc margin (``use_margin(..., when="test")``) changes only the box classifier's logits, so the
backbone, the RPN proposals and the RoI box-head features of a validation image are the same for every
post-hoc row of ``iif det-bench``. :func:`cache_roi_inputs` runs those once; :func:`detect_from_cache` then
runs the box predictor (through whatever margin is switched on), torchvision's own
``postprocess_detections``, the mask branch on the new boxes, and the resize back to the image size — the
same code path as ``model(images)`` in eval mode, so boxes, labels and scores are identical and masks equal
to float32 rounding (tested), at a fraction of the cost. Masks are memoised per (box, label): a margin
changes which detections survive, not a surviving detection's box or mask. :func:`iter_results` goes one
step further for ``iif det-bench``'s rows: it yields json-ready results and memoises each detection's
pasted, RLE-encoded mask, so a row pays the mask head, the full-image paste and the encoding only for the
(box, label) pairs no earlier row kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import torch
from torch import nn

from ..errors import IIFError

__all__ = ["RoICache", "cache_roi_inputs", "detect_from_cache", "iter_detections", "iter_results"]


@dataclass
class RoICache:
    """Per batch: FPN features, proposals, RoI box-head features and the image sizes (resized / original)."""

    batches: list[dict]
    image_ids: list[int]

    def __len__(self) -> int:
        return len(self.image_ids)


def _check_two_stage(model: nn.Module) -> None:
    rh = getattr(model, "roi_heads", None)
    if rh is None or not hasattr(rh, "box_predictor") or not hasattr(model, "rpn"):
        raise IIFError(f"{type(model).__name__} is not a two-stage torchvision detector (Faster/Mask R-CNN); "
                       "run full inference (iif.detection.predict) for it instead of the RoI cache.")
    if getattr(rh, "extra_stage_predictors", None):
        raise IIFError(f"{type(rh).__name__} is a cascade: its scores average three box stages, each on the previous "
                       "stage's boxes, which the one-stage RoI cache cannot replay; score it with full inference "
                       "(iif.detection.predict, or iif det-eval --margin).")


@torch.no_grad()
def cache_roi_inputs(model: nn.Module, batches: Iterable[tuple[list[torch.Tensor], list[dict]]],
                     device: str | torch.device = "cpu") -> RoICache:
    """Run backbone, RPN and the RoI box head once over ``batches`` of ``(images, targets)``.

    Targets are used only for their ``image_id``. The model is put in eval mode. Memory: per image the
    FPN features plus ``proposals x representation_size`` floats (about 2-3 MB at 128 px with 300 proposals).
    """
    _check_two_stage(model)
    model.eval()
    rh = model.roi_heads
    out, ids = [], []
    for images, targets in batches:
        images = [im.to(device) for im in images]
        original_sizes = [tuple(im.shape[-2:]) for im in images]
        image_list, _ = model.transform(images)
        features = model.backbone(image_list.tensors)
        if isinstance(features, torch.Tensor):
            features = {"0": features}
        proposals, _ = model.rpn(image_list, features)
        box_features = rh.box_head(rh.box_roi_pool(features, proposals, image_list.image_sizes))
        out.append({"features": features, "proposals": proposals, "box_features": box_features,
                    "image_sizes": list(image_list.image_sizes), "original_sizes": original_sizes})
        ids.extend(int(t["image_id"]) for t in targets)
    return RoICache(out, ids)


def detect_from_cache(model: nn.Module, cache: RoICache) -> list[dict[str, torch.Tensor]]:
    """Detections of ``model`` (with its current box predictor and margin) for every cached image.

    The cache belongs to the model it was made with: mask probabilities computed here are kept in it and
    reused by later calls (a margin never changes the mask head). Returns one dict per image (``boxes`` xyxy
    in the original image's pixels, ``labels`` 1..C, ``scores``, and ``masks`` (N, 1, H, W) probabilities
    for Mask R-CNN), in cache order, as ``model(images)`` does. Full-size masks of every image at once can
    take gigabytes: :func:`iter_detections` gives them a batch at a time.
    """
    return [r for _, batch in iter_detections(model, cache) for r in batch]


@torch.no_grad()
def iter_detections(model: nn.Module, cache: RoICache) -> Iterator[tuple[list[int], list[dict[str, torch.Tensor]]]]:
    """``(image_ids, detections)`` per cached batch; see :func:`detect_from_cache`."""
    _check_two_stage(model)
    model.eval()
    rh = model.roi_heads
    start = 0
    for b in cache.batches:
        class_logits, box_regression = rh.box_predictor(b["box_features"])
        boxes, scores, labels = rh.postprocess_detections(class_logits, box_regression, b["proposals"], b["image_sizes"])
        batch = [{"boxes": bx, "labels": lb, "scores": sc} for bx, sc, lb in zip(boxes, scores, labels)]
        if rh.has_mask():
            memo = b.setdefault("masks", [{} for _ in boxes])
            for i, r in enumerate(batch):
                r["masks"] = _masks(rh, b, i, boxes[i], labels[i], memo[i])
        ids = cache.image_ids[start : start + len(batch)]
        start += len(batch)
        yield ids, model.transform.postprocess(batch, b["image_sizes"], b["original_sizes"])


def _masks(rh, b: dict, i: int, boxes: torch.Tensor, labels: torch.Tensor, memo: dict) -> torch.Tensor:
    """Mask probabilities (N, 1, M, M) of image ``i``'s detections, computing only the (box, label) pairs not
    seen before. A post-hoc margin changes which detections survive and their scores, but a detection's box
    is the same decoded (proposal, class) box in every row, and its mask depends only on that box, the label
    and the image's features, so rows share most of the mask head's work (the dominant inference cost).
    One image at a time: a batch's mask-head activations for 300 detections per image take gigabytes."""
    from torchvision.models.detection.roi_heads import maskrcnn_inference

    keys = [(tuple(bx), int(lb)) for bx, lb in zip(boxes.tolist(), labels.tolist())]
    todo = [j for j, k in enumerate(keys) if k not in memo]
    if not keys:  # no detection: the head's own empty output keeps the shapes right
        feats = {k: v[i : i + 1] for k, v in b["features"].items()}
        mask_features = rh.mask_head(rh.mask_roi_pool(feats, [boxes], [b["image_sizes"][i]]))
        return maskrcnn_inference(rh.mask_predictor(mask_features), [labels])[0]
    if todo:
        idx = torch.tensor(todo, dtype=torch.long)
        feats = {k: v[i : i + 1] for k, v in b["features"].items()}
        mask_features = rh.mask_head(rh.mask_roi_pool(feats, [boxes[idx]], [b["image_sizes"][i]]))
        probs = maskrcnn_inference(rh.mask_predictor(mask_features), [labels[idx]])[0]
        for j, pr in zip(todo, probs):
            memo[keys[j]] = pr
    return torch.stack([memo[k] for k in keys])


@torch.no_grad()
def iter_results(model: nn.Module, cache: RoICache, category_ids, *, masks: bool = True) -> Iterator[list[dict]]:
    """LVIS/COCO result dicts of every cached image, a batch at a time: the same dicts as
    ``detections_to_results(detect_from_cache(model, cache), ...)`` (tested), faster for repeated rows.

    Each detection's ``segmentation`` (mask > 0.5, pasted at the original image size, pycocotools RLE) is
    memoised in the cache per (image, decoded box, label): the first row that keeps a pair pays its mask head
    pass, paste and encoding; later rows that keep it reuse the string. ``masks=False`` gives box results.
    """
    from torchvision.models.detection.roi_heads import maskrcnn_inference, paste_masks_in_image
    from torchvision.models.detection.transform import resize_boxes

    _check_two_stage(model)
    model.eval()
    rh = model.roi_heads
    cat = [int(c) for c in category_ids]
    want_masks = masks and rh.has_mask()
    start = 0
    for b in cache.batches:
        class_logits, box_regression = rh.box_predictor(b["box_features"])
        boxes, scores, labels = rh.postprocess_detections(class_logits, box_regression, b["proposals"], b["image_sizes"])
        memo = b.setdefault("rles", [{} for _ in boxes]) if want_masks else None
        out: list[dict] = []
        for i, (bx, sc, lb) in enumerate(zip(boxes, scores, labels)):
            image_id = cache.image_ids[start + i]
            if lb.numel() and (int(lb.min()) < 1 or int(lb.max()) > len(cat)):
                raise IIFError(f"image {image_id}: labels outside 1..{len(cat)}; the detector's number of classes "
                               "does not match the dataset's categories.")
            orig = resize_boxes(bx, b["image_sizes"][i], b["original_sizes"][i])
            if want_masks:
                keys = [(tuple(k), int(c)) for k, c in zip(bx.tolist(), lb.tolist())]
                todo = [j for j, k in enumerate(keys) if k not in memo[i]]
                if todo:
                    idx = torch.tensor(todo, dtype=torch.long)
                    feats = {k: v[i : i + 1] for k, v in b["features"].items()}
                    mf = rh.mask_head(rh.mask_roi_pool(feats, [bx[idx]], [b["image_sizes"][i]]))
                    probs = maskrcnn_inference(rh.mask_predictor(mf), [lb[idx]])[0]
                    pasted = paste_masks_in_image(probs, orig[idx], b["original_sizes"][i])
                    for j, rle in zip(todo, _encode(pasted)):
                        memo[i][keys[j]] = rle
            xywh = orig.to(torch.float64)
            xywh[:, 2:] -= xywh[:, :2]
            for j, (box, score, label) in enumerate(zip(xywh.tolist(), sc.to(torch.float64).tolist(), lb.tolist())):
                r = {"image_id": int(image_id), "category_id": cat[label - 1], "bbox": box, "score": score}
                if want_masks:
                    r["segmentation"] = memo[i][keys[j]]
                out.append(r)
        start += len(boxes)
        yield out


def _encode(pasted: torch.Tensor) -> list[dict]:
    """(N, 1, H, W) mask probabilities -> json-ready RLEs of ``mask > 0.5`` (as detections_to_results)."""
    import numpy as np
    from pycocotools import mask as mask_utils

    binary = (pasted[:, 0] > 0.5).numpy().astype(np.uint8)
    rles = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0)))
    return [{"size": [int(v) for v in r["size"]], "counts": r["counts"].decode("ascii")} for r in rles]
