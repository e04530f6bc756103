"""Switch a torchvision detector's box classifier to IIF, IOF or an additive margin: :func:`use_margin`.

Two lines turn a torchvision Faster R-CNN / Mask R-CNN (``model.roi_heads.box_predictor``) or SSD
(``model.head.classification_head``) into an IIF detector::

    freq = ClassFrequency.from_coco("instances_train.json")     # task="detection": K = #images / #instances
    use_margin(model, "iif", freq, variant="base10", by="object")  # end-to-end base10 IOF (Table XIV)

torchvision's detectors predict ``C + 1`` logits with the background at index 0 (paper Section IV-A.3,
"the background class is encoded as the 0 class"). The switch wraps the predictor in a
:class:`MarginBoxPredictor` whose forward returns adjusted class logits; torchvision's own code then uses
them unchanged: ``fastrcnn_loss`` (``F.cross_entropy`` on the logits) during training and
``postprocess_detections`` (``softmax`` over the ``C + 1`` logits, background column dropped) at inference;
for SSD the hard-negative-mined cross-entropy in ``SSD.compute_loss`` and the softmax in
``SSD.postprocess_detections``. The RPN, the box regression and the mask head are untouched.

Methods (``z`` the raw logits, ``n_c`` the per-class counts, ``p_c = n_c / sum_k n_k``):

| ``method`` | ``when`` | logits in the training loss | logits in the inference softmax |
|---|---|---|---|
| ``"softmax"`` | any | ``z`` | ``z`` |
| ``"iif"`` | ``"train_and_test"`` (end to end, the paper's detectors, Table XI) | ``w * z`` (Eq. 15) | ``w * z`` (Eq. 13-14) |
| ``"iif"`` | ``"train"`` | ``w * z`` | ``z`` |
| ``"iif"`` | ``"test"`` (post-process IIF on a softmax detector) | ``z`` | ``w * z`` |
| ``"balanced_softmax"`` | ``"train"`` (Ren et al.) | ``z + ln n`` | ``z`` |
| ``"logit_adjustment"`` | ``"train"`` (logit-adjusted loss, Menon et al.) | ``z - a`` | ``z`` |
| ``"logit_adjustment"`` | ``"test"`` (post-hoc logit adjustment) | ``z`` | ``z + a`` |
| ``"norcal"`` | ``"test"`` (NorCal, Pan et al. 2021) | ``z`` | ``z - gamma ln n`` |
| ``"seesaw"`` | ``"train"`` (Seesaw loss, Wang et al. 2021) | ``z_j + ln S_yj`` (``j != y``) | ``z`` |

Logit adjustment's offset ``a`` (background 0) has two forms, ``la_form``:

* ``"bayes"`` (the default): ``a_c = -tau ln p_c - ln sum_j p_j^(1 - tau)`` (``-ln(C p_c)`` at ``tau = 1``),
  the Bayes correction of a ``C + 1`` softmax detector to a foreground-balanced target at the same
  background share (:func:`iif.adjusters.bayes_la_offsets`);
* ``"prior"``: ``a_c = -tau ln p_c``, the classification form. Next to an untouched background logit it is
  the Bayes form plus ``ln sum_j p_j^(1 - tau)`` on every foreground logit (``ln C`` at ``tau = 1``: +3.0 at
  C = 20, +7.1 on LVIS), so it lifts every class against the background and turns background proposals
  into false positives.

NorCal divides each foreground probability by ``n_c^gamma`` and renormalises with the background
probability untouched, which is the softmax of ``z_c - gamma ln n_c`` (:class:`iif.adjusters.NorCal`).
Seesaw (:mod:`iif.losses.seesaw`) needs each RoI's label: ``use_margin`` taps the labels that
``roi_heads.select_training_samples`` draws (R-CNN only) and accumulates the foreground counts ``N``
during training (not saved in checkpoints: a resumed run starts counting again).

``w`` are the IIF weights of paper Eq. 12 / Table III (``iif.iif_weights``), on the foreground columns;
the background logit keeps weight 1 and offset 0. The additive methods are corrections for the training
label prior: inside the loss the prior is added, at inference it is subtracted. Adding the same offset in
both phases would cancel through the classifier's bias (and the opposite signs would correct twice), so
``when="train_and_test"`` is refused for them, and Balanced Softmax, a training loss by definition, takes
only ``when="train"``.

Background margin (``background_margin=True``, additive methods only). With the background offset at 0
the additive offsets move every foreground logit against the untouched background logit, and how far
depends on the normaliser of ``p`` (a constant, irrelevant in a classification softmax, is not
irrelevant here): ``ln n_c`` for Balanced Softmax, ``-tau ln(n_c / sum n)`` for logit adjustment. The
option treats the background as one more class with prior ``p_bg = background_fraction`` (the share of
background among the classifier's training samples) and scales the foreground prior by ``1 - p_bg``:

    p_bg = background_fraction,   p_c = (1 - p_bg) * n_c / sum_k n_k   (c = 1..C; the C + 1 priors sum to 1)

so logit adjustment uses ``-tau ln p`` on all ``C + 1`` columns (post-hoc; ``+tau ln p`` in the loss),
and Balanced Softmax adds ``ln n`` with a background count ``n_bg = sum_k n_k * p_bg / (1 - p_bg)``
(the same ``p`` up to a constant common to all ``C + 1`` columns, which the softmax ignores). By default
``background_fraction`` is the detector's own design fraction of background samples:
``1 - model.roi_heads.fg_bg_sampler.positive_fraction`` for Faster / Mask R-CNN (0.75: 512 RoIs per image,
25% positive), ``r / (1 + r)`` with SSD's hard-negative ratio ``r = model.neg_to_pos_ratio`` (3:1, so 0.75).
The sampler takes fewer positives when an image has fewer, so the measured share of background RoIs can
be higher; pass ``background_fraction`` to use a measured value.

Checkpoints: a switched model's ``state_dict`` has exactly the keys of the plain torchvision model (the
wrapper hides its ``predictor.`` level and the margin buffers are not persistent), so a plain checkpoint
loads into a switched model and a switched model's checkpoint loads into a plain one, both with
``strict=True``. The margin itself is configuration: call :func:`use_margin` again after building the
model (before or after loading), it is not stored in the checkpoint.
"""

from __future__ import annotations

import math
import types
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..adjusters import LA_FORMS, BalancedSoftmaxOffset, LogitAdjustment, NorCal, PostHocIIF, bayes_la_offsets, norcal_gamma
from ..errors import IIFError
from ..frequency import ClassFrequency
from ..losses.seesaw import seesaw_logits
from ..weights import as_counts, canonical_variant, iif_weights

__all__ = ["use_margin", "MarginBoxPredictor", "CosineBoxClassifier", "METHODS", "WHEN"]

METHODS: tuple[str, ...] = ("softmax", "iif", "balanced_softmax", "logit_adjustment", "norcal", "seesaw")
WHEN: tuple[str, ...] = ("train_and_test", "train", "test")

_BY = ("image", "object")
# The ``when`` values each method accepts (see the module docstring for why).
_ALLOWED_WHEN = {
    "softmax": WHEN,
    "iif": WHEN,
    "balanced_softmax": ("train",),
    "logit_adjustment": ("train", "test"),
    "norcal": ("test",),
    "seesaw": ("train",),
}
_ADDITIVE = ("balanced_softmax", "logit_adjustment")

FreqLike = Union[ClassFrequency, Sequence[float], np.ndarray, torch.Tensor]


# ----------------------------------------------------------------------------------------------------
# Cosine (normed) box classifier
# ----------------------------------------------------------------------------------------------------


class CosineBoxClassifier(nn.Module):
    """Normed / cosine box classifier (the paper's "Cos. Cls.", Table XV): ``z_c = s * cos(x, W_c) + b_c``.

    A drop-in for ``FastRCNNPredictor.cls_score`` (an ``nn.Linear``): features ``x`` of shape ``(N, D)``,
    logits ``(N, num_classes)``. Every row of ``W``, the background row included, and every feature vector
    are divided by their L2 norm (plus ``eps``) before the dot product, as mmdetection's ``NormedLinear``
    does (the classifier of the authors' LVIS configs, ``cls_predictor_cfg=dict(type='NormedLinear',
    tempearture=...)``); so the logits lie in ``[-s, s]`` before the bias.

    Args:
        in_features: feature size ``D`` (``box_predictor.cls_score.in_features``).
        num_classes: number of logits, background included (``C + 1``), as torchvision's predictors count.
        scale: the temperature ``s``. The paper does not print it; the authors' IIF / IOF + RFS + cosine configs
            (``fasa_iof_base10_r50_rfs_cos_norm_4x4_2x.py`` and the other ``*iif*_cos_norm*`` files) use 8, their
            softmax cosine configs 20 (mmdetection's default), and ``s = 16`` for their classification cosine
            classifiers. The default here stays 20.
        bias: keep a learnable per-class bias (initialised to 0), as mmdetection's ``NormedLinear`` does;
            it lets the background logit move beyond ``[-s, s]`` and keeps a plain ``cls_score``
            checkpoint loadable. ``bias=False`` gives the pure ``s * cos``.
        eps: added to the norms (mmdetection: 1e-6).
    """

    def __init__(self, in_features: int, num_classes: int, scale: float = 20.0, *, bias: bool = True,
                 eps: float = 1e-6) -> None:
        super().__init__()
        for what, v in (("in_features", in_features), ("num_classes", num_classes)):
            if isinstance(v, bool) or int(v) != v or v < 1:
                raise IIFError(f"CosineBoxClassifier {what} must be a positive integer; got {v!r}.")
        self.in_features = int(in_features)
        self.out_features = int(num_classes)
        self.scale = _positive_scale(scale)
        self.eps = float(eps)
        self.weight = nn.Parameter(torch.empty(self.out_features, self.in_features))
        if bias:
            self.bias = nn.Parameter(torch.zeros(self.out_features))
        else:
            self.register_parameter("bias", None)
        nn.init.normal_(self.weight, mean=0.0, std=0.01)

    @classmethod
    def from_linear(cls, linear: nn.Linear, scale: float = 20.0, *, eps: float = 1e-6) -> "CosineBoxClassifier":
        """A cosine classifier with ``linear``'s weight rows (their directions) and bias, on the same device."""
        if not isinstance(linear, nn.Linear):
            raise IIFError(f"from_linear needs an nn.Linear classifier; got {type(linear).__name__}.")
        out = cls(linear.in_features, linear.out_features, scale, bias=linear.bias is not None, eps=eps)
        out.to(device=linear.weight.device, dtype=linear.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(linear.weight)
            if linear.bias is not None:
                out.bias.copy_(linear.bias)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(start_dim=1) if x.dim() > 2 else x
        w = self.weight / (self.weight.norm(dim=1, keepdim=True) + self.eps)
        x = x / (x.norm(dim=1, keepdim=True) + self.eps)
        return F.linear(self.scale * x, w, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, num_classes={self.out_features}, scale={self.scale}, "
                f"bias={self.bias is not None}")


def _positive_scale(scale: Any) -> float:
    try:
        s = float(scale)
    except (TypeError, ValueError):
        s = float("nan")
    if not (math.isfinite(s) and s > 0):
        raise IIFError(f"cosine_scale (the cosine classifier's temperature) must be a positive number, e.g. 20 "
                       f"as in the authors' LVIS configs; got {scale!r}.")
    return s


# ----------------------------------------------------------------------------------------------------
# The wrapper
# ----------------------------------------------------------------------------------------------------


class _AddOffset(nn.Module):
    """``z + offset`` with a full ``(C + 1,)`` offset: the background term of ``background_margin=True``."""

    def __init__(self, offset: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("offset", torch.as_tensor(offset, dtype=torch.float32))

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        if logits.shape[-1] != self.offset.shape[0]:
            raise IIFError(f"logits have {logits.shape[-1]} classes but the background term has "
                           f"{self.offset.shape[0]}; rebuild the margin with use_margin for this model.")
        return logits + self.offset.to(dtype=logits.dtype)


class _SeesawOffset(nn.Module):
    """Seesaw's label-dependent logits (:func:`iif.losses.seesaw_logits`, background first) on the RoI logits.

    The labels of the RoIs come from :func:`_tap_labels` (set just before the box predictor runs) and are
    used once; each training forward first adds the foreground labels to ``cum_samples``.
    """

    def __init__(self, num_classes: int, p: float, q: float, eps: float = 1e-2) -> None:
        super().__init__()
        self.register_buffer("cum_samples", torch.zeros(num_classes, dtype=torch.float64))
        self.p, self.q, self.eps = float(p), float(q), float(eps)
        self.labels: Optional[torch.Tensor] = None

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        labels, self.labels = self.labels, None
        if labels is None or labels.shape[0] != logits.shape[0]:
            raise IIFError("the seesaw margin needs the RoI labels of this batch, which use_margin taps from "
                           "roi_heads.select_training_samples; call the detector itself in training mode "
                           "(model(images, targets)), not its box predictor alone.")
        labels = labels.to(logits.device)
        if self.training:
            fg = labels[labels > 0] - 1
            self.cum_samples += torch.bincount(fg, minlength=self.cum_samples.shape[0]).to(self.cum_samples)
        return seesaw_logits(logits, labels, self.cum_samples, self.p, self.q, self.eps, background="first")

    def extra_repr(self) -> str:
        return f"p={self.p}, q={self.q}, eps={self.eps}"


def _untap_labels(roi_heads: nn.Module) -> None:
    roi_heads.__dict__.pop("select_training_samples", None)


def _select_and_tap(roi_heads: nn.Module, proposals, targets):
    """``RoIHeads.select_training_samples`` that also hands the sampled labels (concatenated, in the order of
    the box features) to the seesaw adjuster of ``roi_heads.box_predictor``."""
    out = type(roi_heads).select_training_samples(roi_heads, proposals, targets)
    predictor = roi_heads.box_predictor
    adjuster = getattr(predictor, "adjuster", None) if isinstance(predictor, MarginBoxPredictor) else None
    if isinstance(adjuster, _SeesawOffset):
        adjuster.labels = torch.cat(list(out[2]))
    return out


def _tap_labels(roi_heads: nn.Module) -> None:
    """Route ``roi_heads.select_training_samples`` through :func:`_select_and_tap` (an instance attribute: a
    bound method, so ``copy.deepcopy`` of the model rebinds it to the copy)."""
    roi_heads.__dict__["select_training_samples"] = types.MethodType(_select_and_tap, roi_heads)


class MarginBoxPredictor(nn.Module):
    """A detector's class predictor whose class logits go through ``adjuster`` in the phases ``when`` picks.

    Wraps a Faster / Mask R-CNN box predictor (its forward returns ``(class_logits, box_regression)``; only
    the class logits change) or an SSD classification head (its forward returns ``(N, anchors, C + 1)``
    logits). ``adjuster`` maps ``(..., C + 1)`` logits to adjusted logits (e.g. ``PostHocIIF(w,
    background="first")``); it acts when ``when == "train_and_test"``, or in training mode only for
    ``"train"``, or in eval mode only for ``"test"``. Built by :func:`use_margin`; usable on its own.

    The wrapped module's parameters keep their names in ``state_dict`` (``box_predictor.cls_score.weight``,
    not ``box_predictor.predictor.cls_score.weight``), a plain checkpoint loads into the wrapper, and
    attribute reads that the wrapper does not answer (``cls_score``, ``bbox_pred``, ``num_columns``) are
    answered by the wrapped predictor. The adjuster's buffers follow ``.to(device)`` but are not saved.

    Args:
        predictor: the original ``box_predictor`` / ``classification_head``.
        adjuster: a module on the class logits, or None for no change.
        when: ``"train_and_test"``, ``"train"`` or ``"test"``.
        num_logits: ``C + 1``; if given, an adjuster with a per-class vector (``PostHocIIF``,
            ``LogitAdjustment``, ...) of another length is refused here rather than at the first forward.
        method: a label for ``repr`` and reports (``use_margin`` sets it).
    """

    def __init__(self, predictor: nn.Module, adjuster: Optional[nn.Module] = None, *,
                 when: str = "train_and_test", num_logits: Optional[int] = None, method: str = "custom") -> None:
        super().__init__()
        if not isinstance(predictor, nn.Module) or isinstance(predictor, MarginBoxPredictor):
            raise IIFError("MarginBoxPredictor wraps the detector's original predictor module (not None and not "
                           "another MarginBoxPredictor); pass model.roi_heads.box_predictor before switching.")
        self.when = _check_choice(when, WHEN, "when")
        if adjuster is not None and not isinstance(adjuster, nn.Module):
            raise IIFError(f"adjuster must be an nn.Module on the class logits (e.g. iif.PostHocIIF(weights, "
                           f"background='first')) or None; got {type(adjuster).__name__}.")
        if adjuster is not None and num_logits is not None:
            _check_adjuster_length(adjuster, int(num_logits))
        self.predictor = predictor
        self.adjuster = adjuster
        self.method = str(method)
        self.config: dict[str, Any] = {}
        if adjuster is not None:
            # The margin is configuration rebuilt by use_margin, not learned state: keep the checkpoint's keys
            # those of the plain model (buffers still follow .to(device)).
            for mod in adjuster.modules():
                for name, buf in list(mod.named_buffers(recurse=False)):
                    mod.register_buffer(name, buf, persistent=False)
        self.register_state_dict_post_hook(_strip_predictor_prefix)
        self.register_load_state_dict_pre_hook(_add_predictor_prefix)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get("_modules", {})
            if name.startswith("__") or "predictor" not in modules:
                raise
            return getattr(modules["predictor"], name)

    def __setattr__(self, name: str, value: Any) -> None:
        # ``box_predictor.cls_score = layer`` must replace the wrapped predictor's layer, not shadow it.
        modules = self.__dict__.get("_modules", {})
        inner = modules.get("predictor")
        if inner is not None and name in inner._modules:
            setattr(inner, name, value)
        else:
            super().__setattr__(name, value)

    def adjusting(self) -> bool:
        """Whether the adjuster acts in the current mode (``self.training``)."""
        if self.adjuster is None:
            return False
        return self.when == "train_and_test" or (self.when == "train") == self.training

    def adjust(self, logits: torch.Tensor) -> torch.Tensor:
        """The class logits as the loss (training mode) or the inference softmax (eval mode) sees them."""
        return self.adjuster(logits) if self.adjusting() else logits

    def forward(self, x: Any) -> Any:
        out = self.predictor(x)
        if isinstance(out, tuple):  # R-CNN box predictor: (class_logits, box_regression)
            return (self.adjust(out[0]),) + tuple(out[1:])
        return self.adjust(out)  # SSD classification head: (N, anchors, C + 1)

    def extra_repr(self) -> str:
        cfg = "".join(f", {k}={v!r}" for k, v in self.config.items())
        return f"method={self.method!r}, when={self.when!r}{cfg}"


def _strip_predictor_prefix(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """State-dict post-hook: ``<prefix>predictor.X`` -> ``<prefix>X`` (the plain model's key), order kept."""
    inner = prefix + "predictor."
    keys = [k for k in state_dict if k.startswith(inner)]
    for k in keys:  # the wrapper's keys are the last ones written so far: re-inserting keeps the order
        state_dict[prefix + k[len(inner):]] = state_dict.pop(k)
    meta = getattr(state_dict, "_metadata", None)
    if meta is not None:
        for k in [k for k in meta if k == inner[:-1] or k.startswith(inner)]:
            new = prefix[:-1] if k == inner[:-1] else prefix + k[len(inner):]
            meta.setdefault(new, meta[k])
            del meta[k]


def _add_predictor_prefix(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict, strict: bool,
                          missing_keys: list, unexpected_keys: list, error_msgs: list) -> None:
    """Load pre-hook: a plain checkpoint's ``<prefix>X`` -> ``<prefix>predictor.X`` (already-prefixed keys kept)."""
    inner = prefix + "predictor."
    for k in [k for k in state_dict if k.startswith(prefix) and not k.startswith(inner)]:
        rest = k[len(prefix):]
        if rest.split(".", 1)[0] == "adjuster":
            continue
        state_dict[inner + rest] = state_dict.pop(k)


def _check_adjuster_length(adjuster: nn.Module, num_logits: int) -> None:
    """Refuse a per-class vector (IIF weights, offsets) that fits neither C nor C + 1 logits."""
    for mod in adjuster.modules():
        vec = getattr(mod, "vec", None)
        if isinstance(vec, torch.Tensor) and vec.dim() == 1:
            if vec.shape[0] not in (num_logits - 1, num_logits):
                raise IIFError(
                    f"{type(mod).__name__} has a vector of {vec.shape[0]} entries but the detector predicts "
                    f"{num_logits} logits ({num_logits - 1} foreground classes + background at index 0); give "
                    f"{num_logits - 1} foreground entries (or {num_logits} including the background's).")


def _check_choice(value: Any, choices: Sequence[str], what: str) -> str:
    if not isinstance(value, str) or value not in choices:
        raise IIFError(f"Unknown {what} {value!r}; expected one of {tuple(choices)}.")
    return value


# ----------------------------------------------------------------------------------------------------
# Finding the predictor
# ----------------------------------------------------------------------------------------------------


def _locate(model: nn.Module) -> tuple[str, nn.Module, str, nn.Module, int]:
    """``(kind, parent, attribute, base predictor, number of logits)`` of a supported detector, or raise."""
    from torchvision.models.detection.roi_heads import RoIHeads
    from torchvision.models.detection.ssd import SSD, SSDScoringHead

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


def _counts(freq: FreqLike, by: str) -> np.ndarray:
    if isinstance(freq, ClassFrequency):
        return freq.counts(by).astype(np.float64)
    return as_counts(freq, "freq (per-class counts)")


# ----------------------------------------------------------------------------------------------------
# The switch
# ----------------------------------------------------------------------------------------------------


def use_margin(
    model: nn.Module,
    method: str,
    freq: Optional[FreqLike] = None,
    *,
    variant: str = "smooth",
    by: str = "image",
    total: Optional[Union[float, str]] = None,
    tau: float = 1.0,
    background_margin: bool = False,
    background_fraction: Optional[float] = None,
    when: str = "train_and_test",
    cosine_scale: Optional[float] = None,
    la_form: Optional[str] = None,
    gamma: float = 1.0,
    seesaw_p: float = 0.8,
    seesaw_q: float = 2.0,
    allow_negative: bool = False,
) -> nn.Module:
    """Switch ``model``'s box classifier to a margin method, in place; returns ``model``.

    See the module docstring for the table of what the loss and the inference softmax see for each
    ``method`` and ``when``. Calling it again replaces the margin (it never stacks); ``method="softmax"``
    puts the original predictor back.

    Args:
        model: a torchvision ``FasterRCNN`` / ``MaskRCNN`` (box predictor with an ``nn.Linear`` ``cls_score``)
            or ``SSD`` (e.g. ``ssd300_vgg16``), built for ``C + 1`` classes.
        method: ``"softmax"``, ``"iif"``, ``"balanced_softmax"``, ``"logit_adjustment"``, ``"norcal"`` or
            ``"seesaw"`` (:data:`METHODS`).
        freq: the training set's counts: a :class:`~iif.ClassFrequency` (``ClassFrequency.from_coco`` has
            ``task="detection"``, so IIF's K is the number of training images for ``by="image"`` and of
            instances for ``by="object"``, as in the official detection tables), or a 1-D array of ``C``
            counts in contiguous-label order; for an array, K is ``total`` if given, else the sum of the
            counts (paper Eq. 11): pass ``total=<number of training images>`` to follow the detection tables.
            Not needed for ``"softmax"``.
        variant: IIF variant (Table III): raw, smooth, relative, base2, base10, gombit, normit.
        by: ``"image"`` (image counts: IIF) or ``"object"`` (instance counts: IOF); the additive methods take
            their ``n`` from the same counts.
        total: IIF's K (a number, or ``"sum"``, ``"images"``, ``"instances"`` with a ClassFrequency). IIF only:
            the additive methods use ``p_c = n_c / sum_k n_k``.
        tau: logit adjustment's temperature (1.0 is the Bayes-optimal choice).
        background_margin: give the additive methods a background prior (formula in the module docstring);
            without it the background offset is 0.
        background_fraction: ``p_bg`` in (0, 1); default: the detector's design share of background samples
            (0.75 for torchvision's R-CNN RoI sampler and SSD's 3:1 hard negatives).
        when: ``"train_and_test"``, ``"train"`` or ``"test"`` (:data:`WHEN`).
        cosine_scale: if given, replace the R-CNN ``cls_score`` by a :class:`CosineBoxClassifier` with this
            temperature (the authors used 8 with IIF / IOF, 20 with softmax), keeping the linear layer's rows
            and bias as its start;
            the margin acts on its logits. None keeps the current classifier (a cosine one set by an earlier
            call stays). Not available for SSD. The cosine layer has new parameters: switch before building
            the optimizer. (A margin alone adds no parameters, so switching it later is safe.)
        la_form: logit adjustment's offset: ``"bayes"`` (default; background 0, ``-tau ln p_c - ln sum_j
            p_j^(1-tau)``) or ``"prior"`` (``-tau ln p_c``, the classification form); with
            ``background_margin=True`` the form is ``"prior"`` over ``C + 1`` priors (module docstring).
        gamma: NorCal's exponent (foreground scores divided by ``n_c^gamma``), >= 0.
        seesaw_p, seesaw_q: Seesaw's mitigation / compensation exponents (paper: 0.8, 2.0), >= 0.
        allow_negative: let IIF use negative weights (the authors' COCO ``relative`` / ``normit`` weights are
            negative for ``person``, Table XVII); a negative weight flips that logit's sign.

    Raises:
        IIFError: an unsupported model, a head whose number of logits is not ``len(counts) + 1``, an unknown
            method / when / variant / by, a combination the table does not list, counts the variant cannot
            use (zero counts with raw IIF, ...), or a ``background_fraction`` outside (0, 1).
    """
    method = _check_choice(method, METHODS, "method")
    when = _check_choice(when, WHEN, "when")
    by = _check_choice(by, _BY, "by ('image' for IIF, 'object' for IOF)")
    variant = canonical_variant(variant)
    kind, parent, attr, base, num_logits = _locate(model)

    if when not in _ALLOWED_WHEN[method]:
        if method == "balanced_softmax":
            fix = ("Balanced Softmax is a training loss: use when='train' (loss on z + ln n, inference on z); "
                   "for a post-hoc correction use method='logit_adjustment', when='test'.")
        else:
            fix = ("logit adjustment adds tau*ln p in the loss or subtracts it at inference: use when='train' "
                   "(logit-adjusted loss) or when='test' (post-hoc); the same offset in both phases cancels "
                   "through the classifier bias.")
        raise IIFError(f"method={method!r} does not take when={when!r}. {fix}")
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
        if kind != "rcnn":
            raise IIFError("method='seesaw' needs the RoI labels of an R-CNN detector (roi_heads); SSD is not "
                           "supported. Use Faster / Mask R-CNN.")
        for what, v in (("seesaw_p", seesaw_p), ("seesaw_q", seesaw_q)):
            try:
                vf = float(v)
            except (TypeError, ValueError):
                vf = float("nan")
            if isinstance(v, bool) or not (math.isfinite(vf) and vf >= 0):
                raise IIFError(f"{what} must be a finite number >= 0 (the paper uses p=0.8, q=2.0); got {v!r}.")
    if total is not None and method != "iif":
        raise IIFError(f"total (IIF's K) has no effect on {method!r}, which uses p_c = n_c / sum of counts; "
                       "drop total.")
    if cosine_scale is not None:
        if kind == "ssd":
            raise IIFError("cosine_scale is not supported for SSD (its classifier is a set of 3x3 convolutions); "
                           "use it with Faster / Mask R-CNN, or leave cosine_scale=None.")
        cosine_scale = _positive_scale(cosine_scale)
    if method == "logit_adjustment":
        try:
            tau_f = float(tau)
        except (TypeError, ValueError):
            tau_f = float("nan")
        if isinstance(tau, bool) or not math.isfinite(tau_f):
            raise IIFError(f"tau must be a finite number (1.0 is the Bayes-optimal choice); got {tau!r}.")

    adjuster: Optional[nn.Module] = None
    config: dict[str, Any] = {}
    if method != "softmax":
        if freq is None:
            raise IIFError(f"method={method!r} needs the training counts: pass freq=ClassFrequency.from_coco("
                           "train_json) or a 1-D array of per-class counts.")
        counts = _counts(freq, by)
        if counts.shape[0] + 1 != num_logits:
            raise IIFError(
                f"The detector predicts {num_logits} logits ({num_logits - 1} foreground classes + background) but "
                f"the counts cover {counts.shape[0]} classes; build the detector with num_classes="
                f"{counts.shape[0] + 1} in torchvision (C + 1, background included) or pass the counts of its "
                f"{num_logits - 1} categories.")
        config["by"] = by
        if method == "iif":
            if isinstance(freq, ClassFrequency):
                weights = freq.weights(variant, by=by, total=total, allow_negative=bool(allow_negative))
                k = freq.resolve_total(total, by)
            else:
                if isinstance(total, str):
                    raise IIFError(f"total={total!r} needs a ClassFrequency; with a count array pass K as a number.")
                weights = iif_weights(counts, variant, total=total, allow_negative=bool(allow_negative))
                k = float(counts.sum()) if total is None else float(total)
            adjuster = PostHocIIF(weights, background="first")
            config.update(variant=variant, K=k)
            if allow_negative:
                config["allow_negative"] = True
        elif method == "norcal":
            adjuster = NorCal(counts, gamma=norcal_gamma(gamma), background="first")
            config["gamma"] = norcal_gamma(gamma)
        elif method == "seesaw":
            adjuster = _SeesawOffset(counts.shape[0], float(seesaw_p), float(seesaw_q))
            config.update(p=float(seesaw_p), q=float(seesaw_q))
        else:
            if background_margin:
                p_bg = (_default_background_fraction(kind, model) if background_fraction is None
                        else background_fraction)
                try:
                    p_bg = float(p_bg)
                except (TypeError, ValueError):
                    p_bg = float("nan")
                if not 0.0 < p_bg < 1.0:
                    raise IIFError(f"background_fraction must lie strictly between 0 and 1 (the share of background "
                                   f"samples in training, e.g. 0.75); got {background_fraction!r}.")
                config["background_fraction"] = p_bg
            if method == "balanced_softmax":
                adjuster = BalancedSoftmaxOffset(counts, background="first")
                if background_margin:
                    # Background count on the scale of n: n_bg / (n_bg + sum n) = p_bg.
                    term = torch.zeros(num_logits)
                    term[0] = math.log(counts.sum() * p_bg / (1.0 - p_bg))
                    adjuster = nn.Sequential(adjuster, _AddOffset(term))
            elif la_form == "bayes":
                # Post-hoc: z + a (a the Bayes offsets, background 0). Logit-adjusted loss: z - a.
                term = torch.zeros(num_logits, dtype=torch.float64)
                term[1:] = torch.as_tensor(bayes_la_offsets(counts, tau_f), dtype=torch.float64)
                adjuster = _AddOffset(term if when == "test" else -term)
                config.update(tau=tau_f, la_form="bayes")
            else:
                # Post-hoc: z - tau ln p. Logit-adjusted loss: z + tau ln p, i.e. the same adjuster at -tau.
                t = tau_f if when == "test" else -tau_f
                adjuster = LogitAdjustment(counts, tau=t, background="first")
                config.update(tau=tau_f, la_form="prior")
                if background_margin:
                    # -t ln p with p_c = (1 - p_bg) n_c / sum n, p_0 = p_bg: the adjuster gives -t ln(n_c / sum n).
                    term = torch.full((num_logits,), -t * math.log(1.0 - p_bg))
                    term[0] = -t * math.log(p_bg)
                    adjuster = nn.Sequential(adjuster, _AddOffset(term))

    # Everything is validated: now change the model.
    if cosine_scale is not None:
        if isinstance(base.cls_score, CosineBoxClassifier):
            base.cls_score.scale = cosine_scale
        else:
            base.cls_score = CosineBoxClassifier.from_linear(base.cls_score, cosine_scale)
        config["cosine_scale"] = cosine_scale
    if kind == "rcnn":
        _untap_labels(parent)
    if adjuster is None:
        setattr(parent, attr, base)
        return model
    param = next(base.parameters(), None)
    if param is not None:
        adjuster.to(device=param.device)
    wrapper = MarginBoxPredictor(base, adjuster, when=when, num_logits=num_logits, method=method)
    wrapper.train(base.training)
    wrapper.config = config
    setattr(parent, attr, wrapper)
    if isinstance(adjuster, _SeesawOffset):
        _tap_labels(parent)
    return model
