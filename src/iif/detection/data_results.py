"""Detector outputs as LVIS/COCO result dicts (:func:`detections_to_results`).

Moved out of :mod:`iif.detection.data` (issue 16), which re-exports it.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from ..errors import IIFError

__all__ = ["detections_to_results"]


def detections_to_results(outputs: Sequence[Mapping[str, torch.Tensor]], image_ids: Sequence[int],
                          category_ids: Sequence[int], *, masks: bool, mask_thresh: float = 0.5) -> list[dict]:
    """torchvision detector outputs as LVIS/COCO result dicts.

    Args:
        outputs: one dict per image from a detector in eval mode: ``boxes`` (N, 4) ``x1, y1, x2, y2``,
            ``labels`` (N,) contiguous 1..C, ``scores`` (N,) and, with ``masks``, ``masks`` (N, 1, H, W)
            probabilities.
        image_ids: the json id of each image.
        category_ids: json category ids sorted; label ``k`` is ``category_ids[k - 1]``.
        masks: add ``segmentation``: the mask thresholded at ``mask_thresh``, RLE-encoded by pycocotools with
            ``counts`` as str (json-ready).
        mask_thresh: a pixel belongs to the instance where its probability exceeds this (0.5 as torchvision's
            references; the paper's last Table XV row uses 0.4: det config ``model.mask_thresh``).

    Returns:
        ``[{"image_id", "category_id" (json id), "bbox" [x, y, w, h], "score"[, "segmentation"]}, ...]``.
    """
    if len(outputs) != len(image_ids):
        raise IIFError(f"{len(outputs)} outputs but {len(image_ids)} image ids; pass one id per image.")
    cat = np.asarray(list(category_ids), dtype=np.int64)
    results: list[dict] = []
    for out, image_id in zip(outputs, image_ids):
        labels = out["labels"].detach().cpu().numpy().astype(np.int64).reshape(-1)
        if labels.size and (labels.min() < 1 or labels.max() > cat.size):
            raise IIFError(f"image {image_id}: labels {int(labels.min())}..{int(labels.max())} outside 1..{cat.size}; "
                           "the detector's number of classes does not match the dataset's categories.")
        boxes = out["boxes"].detach().cpu().to(torch.float64).numpy().reshape(-1, 4)
        scores = out["scores"].detach().cpu().to(torch.float64).numpy().reshape(-1)
        xywh = boxes.copy()
        xywh[:, 2:] -= boxes[:, :2]
        rles = None
        if masks:
            if "masks" not in out:
                raise IIFError("masks=True but the detector outputs have no 'masks'; use masks=False for box models.")
            m = out["masks"].detach().cpu()
            if m.ndim == 4:
                m = m[:, 0]
            if m.shape[0] != labels.size:
                raise IIFError(f"image {image_id}: {m.shape[0]} masks for {labels.size} boxes.")
            if labels.size:
                from pycocotools import mask as mask_utils

                binary = (m > float(mask_thresh)).numpy().astype(np.uint8)
                rles = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0)))
        ids = cat[labels - 1] if labels.size else labels
        for j in range(labels.size):
            r = {"image_id": int(image_id), "category_id": int(ids[j]), "bbox": [float(v) for v in xywh[j]],
                 "score": float(scores[j])}
            if rles is not None:
                rle = rles[j]
                r["segmentation"] = {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
            results.append(r)
    return results
