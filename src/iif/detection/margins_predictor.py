"""The modules :func:`iif.detection.use_margin` installs: :class:`MarginBoxPredictor` (the wrapper whose class
logits go through an adjuster, with the plain model's state-dict keys), :class:`CosineBoxClassifier` (the
normed box classifier) and the adjusters of its own (the background term, Seesaw's label-dependent logits).

Moved out of :mod:`iif.detection.margins` (issue 16), which re-exports the public classes.
"""

from __future__ import annotations

import math
import types
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import IIFError
from ..losses.seesaw import seesaw_logits
from .margins_table import WHEN, _check_choice

__all__ = ["MarginBoxPredictor", "CosineBoxClassifier"]


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
