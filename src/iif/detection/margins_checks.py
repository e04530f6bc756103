"""The checks :func:`iif.detection.use_margin` runs before it changes anything: which detector it is
(:func:`_locate`) and whether the arguments fit the method table (:func:`_check_arguments`), in a fixed order
so that the first error is always the same.

Moved out of :mod:`iif.detection.margins` (issue 16).
"""

from __future__ import annotations

import math
from typing import Any, Optional

from torch import nn

from ..adjusters import LA_FORMS, norcal_gamma
from ..errors import IIFError
from ..methods import get_method
from .margins_predictor import CosineBoxClassifier, MarginBoxPredictor, _positive_scale
from .margins_table import _ADDITIVE, _ALLOWED_WHEN, _check_choice

__all__: list[str] = []


def _locate(model: nn.Module) -> tuple[str, nn.Module, str, nn.Module, int]:
    """``(kind, parent, attribute, base predictor, number of logits)`` of a supported detector, or raise."""
    from torchvision.models.detection.roi_heads import RoIHeads
    from torchvision.models.detection.ssd import SSD, SSDScoringHead

    site = getattr(model, "margin_site", None) if isinstance(model, nn.Module) else None
    if callable(site):  # a detector that names its class-logit module itself (YOLOv3: iif.detection.yolo)
        kind, parent, attr = site()
        pred = getattr(parent, attr)
        base = pred.predictor if isinstance(pred, MarginBoxPredictor) else pred
        return kind, parent, attr, base, int(base.num_columns)
    roi_heads = getattr(model, "roi_heads", None) if isinstance(model, nn.Module) else None
    if isinstance(roi_heads, RoIHeads):
        pred = roi_heads.box_predictor
        base = pred.predictor if isinstance(pred, MarginBoxPredictor) else pred
        cls_score = getattr(base, "cls_score", None)
        if not isinstance(cls_score, (nn.Linear, CosineBoxClassifier)):
            raise IIFError(f"{type(model).__name__}.roi_heads.box_predictor ({type(base).__name__}) has no "
                           "cls_score layer to read the number of classes from; use torchvision's FastRCNNPredictor "
                           "(cls_score + bbox_pred) or wrap your predictor with MarginBoxPredictor yourself.")
        return "rcnn", roi_heads, "box_predictor", base, int(cls_score.out_features)
    head = getattr(getattr(model, "head", None), "classification_head", None)
    if isinstance(model, SSD) and head is not None:
        base = head.predictor if isinstance(head, MarginBoxPredictor) else head
        if not isinstance(base, SSDScoringHead):
            raise IIFError(f"{type(model).__name__}.head.classification_head is a {type(base).__name__}, not "
                           "torchvision's SSD classification head; wrap it with MarginBoxPredictor yourself.")
        return "ssd", model.head, "classification_head", base, int(base.num_columns)
    raise IIFError(f"use_margin supports torchvision Faster R-CNN / Mask R-CNN (model.roi_heads.box_predictor) and "
                   f"SSD (model.head.classification_head); got {type(model).__name__}. Build the detector with "
                   "torchvision.models.detection (or iif.detection.build_detector).")


def _default_background_fraction(kind: str, model: nn.Module) -> float:
    if kind == "rcnn":
        return 1.0 - float(model.roi_heads.fg_bg_sampler.positive_fraction)
    r = float(model.neg_to_pos_ratio)
    return r / (1.0 + r)


def _check_arguments(method: str, when: str, kind: str, *, background_margin: bool,
                     background_fraction: Optional[float], la_form: Optional[str], allow_negative: bool,
                     gamma: float, seesaw_p: float, seesaw_q: float, total: Any, cosine_scale: Optional[float],
                     tau: float) -> tuple[str, Optional[float], Optional[float]]:
    """:func:`use_margin`'s argument checks after the method, ``when``, ``by``, variant and detector (``kind``
    from :func:`_locate`) are known. Returns ``(la_form, cosine_scale, tau)``: the logit-adjustment form
    (default ``"prior"`` with ``background_margin``, else ``"bayes"``), the cosine temperature as a float (or
    None) and ``tau`` as a float (None unless ``method == "logit_adjustment"``)."""
    allowed = get_method(method, "detection").when
    if when not in allowed:
        if method not in _ALLOWED_WHEN:  # a method defined by its transforms (iif.methods)
            fix = (f"its definition allows when in {allowed} (train_and_test needs train and infer transforms, "
                   "train a train transform, test an infer transform).")
        elif method == "balanced_softmax":
            fix = ("Balanced Softmax is a training loss: use when='train' (loss on z + ln n, inference on z); "
                   "for a post-hoc correction use method='logit_adjustment', when='test'.")
        else:
            fix = ("logit adjustment adds tau*ln p in the loss or subtracts it at inference: use when='train' "
                   "(logit-adjusted loss) or when='test' (post-hoc); the same offset in both phases cancels "
                   "through the classifier bias.")
        raise IIFError(f"method={method!r} does not take when={when!r}. {fix}")
    if background_margin and kind == "yolo":
        raise IIFError("background_margin gives the background class a prior, but YOLOv3 has objectness and no "
                       "background class (its class softmax is over the C categories); drop background_margin=True.")
    if background_margin and method not in _ADDITIVE:
        raise IIFError(f"background_margin applies to the additive methods (balanced_softmax, logit_adjustment); "
                       f"{method!r} keeps the background logit as it is (IIF's background weight is 1, paper "
                       "IV-A.3). Drop background_margin=True.")
    if background_fraction is not None and not background_margin:
        raise IIFError("background_fraction is only used with background_margin=True; pass both or neither.")
    if la_form is not None:
        if method != "logit_adjustment":
            raise IIFError(f"la_form chooses logit adjustment's offset; {method!r} does not use it. Drop la_form.")
        la_form = _check_choice(la_form, LA_FORMS, "la_form")
        if background_margin and la_form != "prior":
            raise IIFError("background_margin=True gives logit adjustment a background prior, which is the 'prior' "
                           "form over C + 1 classes; drop la_form or pass la_form='prior'.")
    la_form = la_form or ("prior" if background_margin else "bayes")
    if allow_negative and method != "iif":
        raise IIFError(f"allow_negative applies to IIF weights; {method!r} has none. Drop allow_negative.")
    if method == "norcal":
        norcal_gamma(gamma)
    if method == "seesaw":
        _check_seesaw(kind, seesaw_p, seesaw_q)
    if total is not None and method != "iif":
        raise IIFError(f"total (IIF's K) has no effect on {method!r}, which uses p_c = n_c / sum of counts; "
                       "drop total.")
    if cosine_scale is not None:
        if kind == "yolo":
            raise IIFError("cosine_scale is not supported for YOLOv3 (its classifier is a 1x1 convolution of the "
                           "head); leave cosine_scale=None.")
        if kind == "ssd":
            raise IIFError("cosine_scale is not supported for SSD (its classifier is a set of 3x3 convolutions); "
                           "use it with Faster / Mask R-CNN, or leave cosine_scale=None.")
        cosine_scale = _positive_scale(cosine_scale)
    tau_f = None
    if method == "logit_adjustment":
        try:
            tau_f = float(tau)
        except (TypeError, ValueError):
            tau_f = float("nan")
        if isinstance(tau, bool) or not math.isfinite(tau_f):
            raise IIFError(f"tau must be a finite number (1.0 is the Bayes-optimal choice); got {tau!r}.")
    return la_form, cosine_scale, tau_f


def _check_seesaw(kind: str, seesaw_p: float, seesaw_q: float) -> None:
    """Seesaw needs an R-CNN detector (the RoI labels) and exponents that are finite numbers >= 0."""
    if kind != "rcnn":
        raise IIFError("method='seesaw' needs the RoI labels of an R-CNN detector (roi_heads); SSD and YOLOv3 "
                       "are not supported. Use Faster / Mask R-CNN.")
    for what, v in (("seesaw_p", seesaw_p), ("seesaw_q", seesaw_q)):
        try:
            vf = float(v)
        except (TypeError, ValueError):
            vf = float("nan")
        if isinstance(v, bool) or not (math.isfinite(vf) and vf >= 0):
            raise IIFError(f"{what} must be a finite number >= 0 (the paper uses p=0.8, q=2.0); got {v!r}.")
