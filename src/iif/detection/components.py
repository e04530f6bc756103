"""The components of the paper's Table XV that are build options, not architectures (issue 17):

* ``mask_predictor``: ``"standard"`` (torchvision's ``MaskRCNNPredictor``) or ``"normalised"`` (the Seesaw
  paper's normalised mask predictor, :class:`iif.detection.mask_heads.NormalisedMaskPredictor`; the paper's
  "Normalised Mask", Section IV-B.5);
* ``box_nms_thresh``: the IoU threshold of the per-class NMS on the final detections (torchvision's
  ``RoIHeads.nms_thresh``, 0.5; SSD's and YOLOv3's ``nms_thresh``, 0.45); ``None`` keeps the architecture's;
* ``mask_thresh``: the probability above which a pasted mask pixel belongs to the instance when masks are
  RLE-encoded for evaluation (:func:`iif.detection.detections_to_results`; torchvision's references and
  mmdetection use 0.5); ``None`` is 0.5.

The paper's last Table XV row uses "a stricter NMS threshold that is 0.3, mask threshold of 0.4"
(``box_nms_thresh: 0.3``, ``mask_thresh: 0.4``). Both thresholds act only at inference: det-eval may change
them on a trained run. Torch-free (the config validator imports it).
"""

from __future__ import annotations

import math
from typing import Any, Optional

from ..errors import IIFError

__all__ = ["MASK_PREDICTORS", "DEFAULT_MASK_THRESH", "check_components", "apply_thresholds", "mask_threshold"]

#: The values of ``build_detector(mask_predictor=...)`` / det config ``model.mask_predictor``.
MASK_PREDICTORS: tuple[str, ...] = ("standard", "normalised")
#: The mask binarisation threshold when none is set.
DEFAULT_MASK_THRESH = 0.5


def _number(value: Any) -> float:
    try:
        return float(value) if not isinstance(value, bool) else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def check_components(arch: str, *, mask_predictor: Any = "standard", box_nms_thresh: Any = None,
                     mask_thresh: Any = None, class_agnostic_mask: bool = False, config: bool = False) -> None:
    """One :class:`IIFError` line for a component the architecture cannot take or a threshold out of range;
    ``config`` names the det config keys (``model.*``) instead of ``build_detector``'s keywords."""
    from .archs import has_masks

    def name(key: str) -> str:
        return f"config key 'model.{key}'" if config else key

    if mask_predictor not in MASK_PREDICTORS:
        raise IIFError(f"{name('mask_predictor')} is {mask_predictor!r}; use one of {', '.join(MASK_PREDICTORS)} "
                       "(normalised: the Seesaw paper's normalised mask).")
    if mask_predictor != "standard" and not has_masks(arch):
        raise IIFError(f"{name('mask_predictor')} is {mask_predictor!r} but {arch} has no mask head; use a "
                       f"maskrcnn_* arch or mask_predictor standard.")
    if mask_predictor != "standard" and class_agnostic_mask:
        raise IIFError(f"{name('mask_predictor')} {mask_predictor!r} has one normalised channel per class; it does "
                       "not combine with class_agnostic_mask: set one of them.")
    if box_nms_thresh is not None:
        v = _number(box_nms_thresh)
        if not (math.isfinite(v) and 0 < v <= 1):
            raise IIFError(f"{name('box_nms_thresh')} must be an IoU in (0, 1] (0.5 torchvision's, 0.3 the paper's "
                           f"stricter NMS) or null; got {box_nms_thresh!r}.")
    if mask_thresh is not None:
        v = _number(mask_thresh)
        if not (math.isfinite(v) and 0 < v < 1):
            raise IIFError(f"{name('mask_thresh')} must be a probability in (0, 1) (0.5 the default, 0.4 the "
                           f"paper's) or null; got {mask_thresh!r}.")
        if not has_masks(arch):
            raise IIFError(f"{name('mask_thresh')} is set but {arch} predicts no masks; drop it (null).")


def apply_thresholds(model: Any, *, box_nms_thresh: Optional[float] = None,
                     mask_thresh: Optional[float] = None) -> Any:
    """Set the detector's NMS IoU threshold (``roi_heads.nms_thresh`` of an R-CNN, or the model's own
    ``nms_thresh``: SSD, YOLOv3) and its mask threshold (``model.mask_thresh``, read by
    :func:`mask_threshold`); ``None`` leaves each as it is. Returns ``model``."""
    if box_nms_thresh is not None:
        holder = getattr(model, "roi_heads", None)
        holder = holder if hasattr(holder, "nms_thresh") else model
        if not hasattr(holder, "nms_thresh"):
            raise IIFError(f"{type(model).__name__} has no nms_thresh (roi_heads.nms_thresh or its own) to set "
                           "box_nms_thresh on; leave box_nms_thresh null for it.")
        holder.nms_thresh = float(box_nms_thresh)
    if mask_thresh is not None:
        model.mask_thresh = float(mask_thresh)
    return model


def mask_threshold(model: Any) -> float:
    """The mask binarisation threshold of ``model`` (:func:`apply_thresholds`), else 0.5."""
    return float(getattr(model, "mask_thresh", DEFAULT_MASK_THRESH))
