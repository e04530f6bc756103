"""The adjuster :func:`iif.detection.use_margin` puts on the class logits. :func:`_build_adjuster` is the detection
implementation the built-in method definitions of :mod:`iif.methods` name, one builder per kind of method: IIF's
weights (paper Eq. 12-15, Table III), NorCal, Seesaw, and the additive offsets (Balanced Softmax, logit
adjustment, with the optional background prior of the module docstring of :mod:`iif.detection.margins`).
:func:`_transform_adjuster` is the generic one of a method defined only by its transforms.

Moved out of :mod:`iif.detection.margins` (issue 16).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from ..adjusters import BalancedSoftmaxOffset, LogitAdjustment, NorCal, PostHocIIF, bayes_la_offsets, norcal_gamma
from ..errors import IIFError
from ..frequency import ClassFrequency
from ..weights import iif_weights
from .margins_checks import _default_background_fraction
from .margins_predictor import _AddOffset, _SeesawOffset
from .margins_table import FreqLike, _counts

__all__: list[str] = []


def _build_adjuster(model: nn.Module, kind: str, num_logits: int, method: str, freq: Optional[FreqLike], *,
                    by: str, variant: str, total: Any, allow_negative: bool, gamma: float, seesaw_p: float,
                    seesaw_q: float, background_margin: bool, background_fraction: Optional[float],
                    la_form: str, tau: Optional[float], when: str) -> tuple[Optional[nn.Module], dict[str, Any]]:
    """``(adjuster, config)`` for ``method`` (None and ``{}`` for ``"softmax"``), after checking that the counts
    are given and cover the detector's ``num_logits - 1`` foreground classes."""
    config: dict[str, Any] = {}
    if method == "softmax":
        return None, config
    if freq is None:
        raise IIFError(f"method={method!r} needs the training counts: pass freq=ClassFrequency.from_coco("
                       "train_json) or a 1-D array of per-class counts.")
    counts = _counts(freq, by)
    _check_counts_fit(counts, num_logits)
    config["by"] = by
    if method == "iif":
        adjuster = _iif_adjuster(freq, counts, by, variant, total, allow_negative, config)
    elif method == "norcal":
        adjuster = NorCal(counts, gamma=norcal_gamma(gamma), background="first")
        config["gamma"] = norcal_gamma(gamma)
    elif method == "seesaw":
        adjuster = _SeesawOffset(counts.shape[0], float(seesaw_p), float(seesaw_q))
        config.update(p=float(seesaw_p), q=float(seesaw_q))
    else:
        p_bg = None
        if background_margin:
            p_bg = _background_share(kind, model, background_fraction)
            config["background_fraction"] = p_bg
        adjuster = _additive_adjuster(method, counts, num_logits, p_bg, la_form, tau, when, config)
    return adjuster, config


def _iif_adjuster(freq: FreqLike, counts: np.ndarray, by: str, variant: str, total: Any, allow_negative: bool,
                  config: dict[str, Any]) -> nn.Module:
    """IIF weights on the foreground logits (background weight 1): ``PostHocIIF(w, background="first")``."""
    if isinstance(freq, ClassFrequency):
        weights = freq.weights(variant, by=by, total=total, allow_negative=bool(allow_negative))
        k = freq.resolve_total(total, by)
    else:
        if isinstance(total, str):
            raise IIFError(f"total={total!r} needs a ClassFrequency; with a count array pass K as a number.")
        weights = iif_weights(counts, variant, total=total, allow_negative=bool(allow_negative))
        k = float(counts.sum()) if total is None else float(total)
    config.update(variant=variant, K=k)
    if allow_negative:
        config["allow_negative"] = True
    return PostHocIIF(weights, background="first")


def _background_share(kind: str, model: nn.Module, background_fraction: Optional[float]) -> float:
    """``p_bg``: ``background_fraction``, or the detector's design share of background samples; in (0, 1)."""
    p_bg = _default_background_fraction(kind, model) if background_fraction is None else background_fraction
    try:
        p_bg = float(p_bg)
    except (TypeError, ValueError):
        p_bg = float("nan")
    if not 0.0 < p_bg < 1.0:
        raise IIFError(f"background_fraction must lie strictly between 0 and 1 (the share of background "
                       f"samples in training, e.g. 0.75); got {background_fraction!r}.")
    return p_bg


def _additive_adjuster(method: str, counts: np.ndarray, num_logits: int, p_bg: Optional[float], la_form: str,
                       tau_f: Optional[float], when: str, config: dict[str, Any]) -> nn.Module:
    """Balanced Softmax's ``z + ln n`` or logit adjustment's offsets (``la_form``), with the background prior
    ``p_bg`` when ``background_margin`` gave one (None: background offset 0)."""
    if method == "balanced_softmax":
        adjuster = BalancedSoftmaxOffset(counts, background="first")
        if p_bg is not None:
            # Background count on the scale of n: n_bg / (n_bg + sum n) = p_bg.
            term = torch.zeros(num_logits)
            term[0] = math.log(counts.sum() * p_bg / (1.0 - p_bg))
            adjuster = nn.Sequential(adjuster, _AddOffset(term))
        return adjuster
    if la_form == "bayes":
        # Post-hoc: z + a (a the Bayes offsets, background 0). Logit-adjusted loss: z - a.
        term = torch.zeros(num_logits, dtype=torch.float64)
        term[1:] = torch.as_tensor(bayes_la_offsets(counts, tau_f), dtype=torch.float64)
        config.update(tau=tau_f, la_form="bayes")
        return _AddOffset(term if when == "test" else -term)
    # Post-hoc: z - tau ln p. Logit-adjusted loss: z + tau ln p, i.e. the same adjuster at -tau.
    t = tau_f if when == "test" else -tau_f
    adjuster = LogitAdjustment(counts, tau=t, background="first")
    config.update(tau=tau_f, la_form="prior")
    if p_bg is not None:
        # -t ln p with p_c = (1 - p_bg) n_c / sum n, p_0 = p_bg: the adjuster gives -t ln(n_c / sum n).
        term = torch.full((num_logits,), -t * math.log(1.0 - p_bg))
        term[0] = -t * math.log(p_bg)
        adjuster = nn.Sequential(adjuster, _AddOffset(term))
    return adjuster


def _transform_adjuster(model: nn.Module, kind: str, num_logits: int, method: str, freq: Optional[FreqLike], *,
                        by: str, params: Optional[dict]) -> tuple[nn.Module, dict[str, Any]]:
    """The generic margin of a method defined by its transforms (:mod:`iif.methods`, e.g. one added with
    :func:`iif.register_method`): :class:`~iif.logit_transforms.TransformAdjuster` on the ``C`` foreground logits,
    the background logit (index 0) untouched; its ``train`` transform in training mode, ``infer`` in eval mode
    (the wrapper calls it in the phases ``when`` picks)."""
    from ..logit_transforms import TransformAdjuster

    if freq is None:
        raise IIFError(f"method={method!r} needs the training counts: pass freq=ClassFrequency.from_coco("
                       "train_json) or a 1-D array of per-class counts.")
    counts = _counts(freq, by)
    _check_counts_fit(counts, num_logits)
    adjuster = TransformAdjuster(method, counts, params, background="first")
    return adjuster, {"by": by, **adjuster.params}


def _check_counts_fit(counts: np.ndarray, num_logits: int) -> None:
    if counts.shape[0] + 1 != num_logits:
        raise IIFError(
            f"The detector predicts {num_logits} logits ({num_logits - 1} foreground classes + background) but "
            f"the counts cover {counts.shape[0]} classes; build the detector with num_classes="
            f"{counts.shape[0] + 1} in torchvision (C + 1, background included) or pass the counts of its "
            f"{num_logits - 1} categories.")
