"""FASA (Zang, Huang, Loy, 'FASA: Feature Augmentation and Sampling Adaptation for Long-Tailed Instance
Segmentation', ICCV 2021) as a training option of torchvision's Faster / Mask R-CNN and of the first box stage
of Cascade Mask R-CNN / HTC (:func:`use_fasa`, det config ``model.fasa: true``; the paper's Table XV row "FASA").
On a cascade the statistics are stage 1's (its ``box_head`` features, its IoU-0.5 foreground RoIs), the virtual
features go through stage 1's classifier and ``loss_fasa`` takes no stage weight (stage 1's is 1).

Feature augmentation (FASA Sec. 3.2). For every foreground class ``c`` the detector keeps the running mean
``mu_c`` and variance ``sigma2_c`` of the RoI box-head features (the classifier's input, ``box_head``'s
output) of the foreground RoIs labelled ``c``. At each training iteration, with ``m_c, v_c`` the mean and
unbiased variance of this iteration's ``n_c`` features of class ``c`` (``v_c = 0`` when ``n_c = 1``):

    mu_c <- (1 - alpha) mu_c + alpha m_c,   sigma2_c <- (1 - alpha) sigma2_c + alpha v_c      (momentum update)

with ``alpha = 0.1`` (the authors' ``decay_ratio``); the first batch holding class ``c`` sets ``mu_c = m_c``,
``sigma2_c = v_c``. Then each class is drawn independently with its sampling probability ``p_c`` (a uniform
``u_c < p_c``); each drawn class that has statistics gives one virtual feature

    f_c = mu_c + sqrt(sigma2_c) * eps,   eps ~ N(0, I)

which goes through the box classifier (the same ``cls_score``; with :func:`iif.detection.use_margin` its logits
pass the margin's adjuster exactly as the real RoIs' do) and adds the term

    loss_fasa = lambda * mean_k CE(z(f_k), c_k),   lambda = 0.1 (the authors' ``loss_aug_weight``)

to the losses (its own key ``loss_fasa``, 0 when no class was drawn). Only the classifier learns from it: the
statistics are detached.

Sampling probabilities. Initialised from the inverse instance frequency, ``p_c = s ((1/n_c) / sum_j (1/n_j))^k``
clipped to ``[0, 1]`` with ``s = k = 1`` (the authors' ``instance_prob_scale`` / ``instance_prob_power``;
classes without training instances get 0). The paper's sampling adaptation (Sec. 3.3) changes them once per
epoch from the change of the classification loss of the real RoIs on the validation set, per group of classes:
:func:`group_classes` (affinity propagation on the similarities ``-||mu_i - mu_j||^2`` between the running class
means), :func:`class_val_losses` (the box classifier's CE of the foreground sampled RoIs of the val images, per
class, computed as in training but without gradients), :func:`adapt_probabilities` / :meth:`FASA.adapt` (a
group's ``p`` x1.1 when its summed loss fell since the previous epoch, x0.9 when it rose). ``iif det-train`` runs
them after every epoch through :class:`FASAAdaptation` (det config ``model.fasa_adapt``, default true; false keeps
the starting probabilities). The authors also start drawing virtual features in the second epoch;
``start_iter`` (default 0) delays them by a number of iterations.

Under ``torch.distributed`` the per-class sums (count, sum, sum of squares) are all-reduced before the update,
so every rank keeps the same statistics (the batch of the update is then the global batch); the per-class
validation loss sums are all-reduced too, so every rank adapts identically. The statistics, the probabilities
and the last epoch's validation loss are buffers outside the ``state_dict`` (the checkpoint keys stay the plain model's) listed in
``accumulators``: ``iif det-train`` saves them in ``last.pt``'s ``margin_state`` and restores them on
``--resume``, like EQLv2's gradient sums, so a resumed run continues exactly.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
import types
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import IIFError

__all__ = ["FASA", "FASA_DEFAULTS", "FASAAdaptation", "use_fasa", "remove_fasa", "adapt_probabilities",
           "class_val_losses", "group_classes", "inverse_frequency_probs"]

#: The authors' values (fasa_cfg of their configs and of the IIF paper's FASA configs).
FASA_DEFAULTS = {"momentum": 0.1, "loss_weight": 0.1, "prob_scale": 1.0, "prob_power": 1.0, "start_iter": 0}


def inverse_frequency_probs(counts: Any, scale: float = 1.0, power: float = 1.0) -> torch.Tensor:
    """``p_c = scale * ((1/n_c) / sum_j 1/n_j) ** power`` clipped to ``[0, 1]``; 0 for a class with no instance."""
    n = torch.as_tensor(np.asarray(counts, dtype=np.float64))
    inv = torch.where(n > 0, 1.0 / n.clamp_min(1e-300), torch.zeros_like(n))
    total = inv.sum()
    if total <= 0:
        raise IIFError("FASA needs the training set's instance counts with at least one class present; "
                       "every count is 0 (check the training annotations).")
    return (scale * (inv / total) ** power).clamp(0.0, 1.0)


def adapt_probabilities(probs: torch.Tensor, loss_before: torch.Tensor, loss_now: torch.Tensor, *, up: float = 1.1,
                        down: float = 0.9, groups: Optional[Sequence[Sequence[int]]] = None) -> torch.Tensor:
    """FASA's sampling adaptation (Sec. 3.3): for each group (each class alone when ``groups`` is None) compare
    the summed per-class loss ``loss_now`` with ``loss_before``; a fall multiplies the group's probabilities by
    ``up``, a rise by ``down``, no change keeps them; the result is clipped to ``[0, 1]``."""
    out = probs.clone()
    for g in (groups if groups is not None else [[c] for c in range(probs.shape[0])]):
        idx = torch.as_tensor(list(g), dtype=torch.long)
        delta = float(loss_now[idx].sum() - loss_before[idx].sum())
        if delta < 0:
            out[idx] = out[idx] * up
        elif delta > 0:
            out[idx] = out[idx] * down
    return out.clamp(0.0, 1.0)


class FASA(nn.Module):
    """The class-wise feature statistics, the sampling probabilities and the virtual-feature loss (module doc).

    Args:
        num_classes: foreground classes ``C``.
        dim: feature size ``D`` (``box_head``'s output, the classifier's ``in_features``).
        counts: ``(C,)`` training instance counts (the initial probabilities).
        momentum: ``alpha`` of the running update. loss_weight: ``lambda``. prob_scale / prob_power: ``s`` and
        ``k`` of the initial probabilities. start_iter: iterations before the first virtual feature.
    """

    #: Buffers a det-train checkpoint carries (``margin_state``) so that a resumed run is exact.
    accumulators = ("mean", "var", "seen", "prob", "last_loss", "iteration")

    def __init__(self, num_classes: int, dim: int, counts: Any, *, momentum: float = 0.1, loss_weight: float = 0.1,
                 prob_scale: float = 1.0, prob_power: float = 1.0, start_iter: int = 0) -> None:
        super().__init__()
        self.num_classes, self.dim = int(num_classes), int(dim)
        self.momentum, self.loss_weight, self.start_iter = float(momentum), float(loss_weight), int(start_iter)
        probs = inverse_frequency_probs(counts, prob_scale, prob_power)
        if probs.shape != (self.num_classes,):
            raise IIFError(f"FASA needs {self.num_classes} class counts; got {tuple(probs.shape)}.")
        for name, value in (("mean", torch.zeros(self.num_classes, self.dim, dtype=torch.float64)),
                            ("var", torch.zeros(self.num_classes, self.dim, dtype=torch.float64)),
                            ("seen", torch.zeros(self.num_classes, dtype=torch.bool)),
                            ("prob", probs.to(torch.float64)),
                            ("last_loss", torch.full((self.num_classes,), float("nan"), dtype=torch.float64)),
                            ("iteration", torch.zeros((), dtype=torch.int64))):
            self.register_buffer(name, value, persistent=False)

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """The momentum update with ``features`` ``(N, D)`` of foreground RoIs and their 0-based ``labels``."""
        c, d = self.num_classes, self.dim
        x = features.detach().to(self.mean.device, torch.float64).reshape(-1, d)
        lab = labels.to(self.mean.device, torch.long).reshape(-1)
        stats = torch.zeros(c, 2 * d + 1, dtype=torch.float64, device=self.mean.device)
        stats.index_add_(0, lab, torch.cat([x, x * x, torch.ones_like(x[:, :1])], dim=1))
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(stats)
        n = stats[:, -1]
        has = n > 0
        if not bool(has.any()):
            return
        nh = n[has].unsqueeze(1)
        m = stats[has, :d] / nh
        v = ((stats[has, d:2 * d] - nh * m * m) / (nh - 1).clamp_min(1.0)).clamp_min(0.0)
        v = torch.where(nh > 1, v, torch.zeros_like(v))
        old = self.seen[has].unsqueeze(1)
        a = self.momentum
        self.mean[has] = torch.where(old, (1 - a) * self.mean[has] + a * m, m)
        self.var[has] = torch.where(old, (1 - a) * self.var[has] + a * v, v)
        self.seen[has] = True

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Virtual features ``(K, D)`` and their 0-based labels: class ``c`` drawn when ``u_c < p_c`` (one
        ``torch.rand(C)``) and seen, then ``mu_c + sqrt(sigma2_c) * eps`` with one ``torch.randn(K, D)``."""
        u = torch.rand(self.num_classes, dtype=torch.float64, device=self.mean.device)
        chosen = torch.nonzero((u < self.prob) & self.seen).flatten()
        eps = torch.randn(chosen.shape[0], self.dim, dtype=torch.float64, device=self.mean.device)
        return self.mean[chosen] + self.var[chosen].sqrt() * eps, chosen

    def step(self, features: torch.Tensor, labels: torch.Tensor,
             classify: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """One training iteration: update with the foreground RoIs (``labels`` in torchvision's ``0..C``, 0 the
        background), draw virtual features and return ``lambda * CE`` of ``classify(features, labels)`` (the
        ``C + 1`` logits, background first) on them."""
        fg = labels > 0
        self.update(features[fg], labels[fg] - 1)
        self.iteration += 1
        zero = features.new_zeros((), dtype=torch.float32)
        if int(self.iteration) <= self.start_iter:
            return zero
        virtual, vlab = self.sample()
        if vlab.numel() == 0:
            return zero
        target = (vlab + 1).to(features.device)
        logits = classify(virtual.to(features.device, features.dtype), target)
        return self.loss_weight * F.cross_entropy(logits.float(), target)

    @torch.no_grad()
    def adapt(self, class_loss: torch.Tensor, *, up: float = 1.1, down: float = 0.9,
              groups: Optional[Sequence[Sequence[int]]] = None) -> None:
        """Apply :func:`adapt_probabilities` with this epoch's per-class loss against the previous call's (the
        first call only records it), as the paper's per-epoch adaptation does (det-train: :class:`FASAAdaptation`)."""
        now = class_loss.detach().to(self.prob.device, torch.float64)
        if not bool(torch.isnan(self.last_loss).any()):
            self.prob.copy_(adapt_probabilities(self.prob, self.last_loss, now, up=up, down=down, groups=groups))
        self.last_loss.copy_(now)

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, dim={self.dim}, momentum={self.momentum}, "
                f"loss_weight={self.loss_weight}, start_iter={self.start_iter}")


# ------------------------------------------------------------------------------------------ roi_heads hooks


def _virtual_logits(roi_heads: nn.Module, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The ``C + 1`` class logits of virtual features: the box predictor's ``cls_score``, then the margin's
    adjuster in the phases it acts (a label-dependent one, Seesaw, is handed the virtual labels)."""
    from .eqlv2 import EQLv2Adjuster
    from .margins_predictor import MarginBoxPredictor

    predictor = roi_heads.box_predictor
    if not isinstance(predictor, MarginBoxPredictor):
        return predictor.cls_score(features)
    adjuster = predictor.adjuster
    if isinstance(adjuster, EQLv2Adjuster):
        raise IIFError("FASA's virtual features take a softmax cross-entropy; method 'eqlv2' has a sigmoid "
                       "classifier: use another margin method or model.fasa=false.")
    if adjuster is not None and hasattr(adjuster, "labels") and predictor.adjusting():
        adjuster.labels = labels
    return predictor.adjust(predictor.predictor.cls_score(features))


def _is_cascade(roi_heads: nn.Module) -> bool:
    from .cascade import CascadeRoIHeads

    return isinstance(roi_heads, CascadeRoIHeads)


@contextmanager
def _sampled_labels_tap(roi_heads: nn.Module, seen: dict) -> Iterator[None]:
    """While active, ``seen["labels"]`` gets the labels of the RoIs ``roi_heads`` samples for training (its
    ``select_training_samples``; a cascade's ``sample`` of stage 0), from the first call after ``seen`` was
    emptied. The sampler is wrapped on the instance and put back as it was."""
    name = "sample" if _is_cascade(roi_heads) else "select_training_samples"
    before = roi_heads.__dict__.get(name)
    inner = getattr(roi_heads, name)

    def tapped(*args):
        out = inner(*args)
        if name == "select_training_samples":
            seen.setdefault("labels", torch.cat(list(out[2])))
        elif args[0] == 0:  # a cascade's stage 0: (boxes, labels, ...) per image
            seen.setdefault("labels", torch.cat(list(out[1])))
        return out

    roi_heads.__dict__[name] = tapped
    try:
        yield
    finally:
        if before is None:
            roi_heads.__dict__.pop(name, None)
        else:
            roi_heads.__dict__[name] = before


def _forward(roi_heads: nn.Module, features, proposals, image_shapes, targets=None):
    """``RoIHeads.forward`` plus, in training, ``loss_fasa``: the box features (a hook on ``box_head``, the first
    stage's on a cascade) and the sampled RoIs' labels (a tap of ``select_training_samples``, a cascade's
    ``sample`` of stage 0) of this call feed :meth:`FASA.step`."""
    if not roi_heads.training:
        return type(roi_heads).forward(roi_heads, features, proposals, image_shapes, targets)
    seen: dict[str, torch.Tensor] = {}

    def grab(module, inputs, output):
        seen.setdefault("features", output)

    handle = roi_heads.box_head.register_forward_hook(grab)
    try:
        with _sampled_labels_tap(roi_heads, seen):
            result, losses = type(roi_heads).forward(roi_heads, features, proposals, image_shapes, targets)
    finally:
        handle.remove()
    feats = seen["features"].flatten(1)
    losses["loss_fasa"] = roi_heads.fasa.step(feats, seen["labels"].to(feats.device),
                                              lambda x, y: _virtual_logits(roi_heads, x, y))
    return result, losses


def _check_params(params: Optional[dict]) -> dict[str, Any]:
    out = dict(FASA_DEFAULTS)
    for key, value in (params or {}).items():
        if key not in out:
            raise IIFError(f"FASA has no parameter {key!r}; its parameters are "
                           + ", ".join(f"{k}={v}" for k, v in FASA_DEFAULTS.items()) + " (Zang et al. 2021).")
        ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
        if key == "momentum":
            ok = ok and 0 < value <= 1
        elif key == "start_iter":
            ok = ok and int(value) == value and value >= 0
        else:
            ok = ok and value >= 0
        if not ok:
            raise IIFError(f"FASA parameter {key!r} is {value!r}; give a finite number (momentum in (0, 1], "
                           f"start_iter a whole number >= 0, the others >= 0); published: {FASA_DEFAULTS[key]}.")
        out[key] = value
    return out


def use_fasa(model: nn.Module, counts: Any, **params: Any) -> FASA:
    """Switch FASA on for a torchvision Faster / Mask R-CNN ``model`` or a cascade's first stage (module doc):
    ``counts`` are the ``C``
    training instance counts (a :class:`~iif.ClassFrequency`'s ``object_counts`` is taken from it), ``params``
    any of :data:`FASA_DEFAULTS`. Returns the :class:`FASA` state (``model.roi_heads.fasa``). Works before or
    after :func:`iif.detection.use_margin` (not with ``eqlv2``)."""
    from torchvision.models.detection.roi_heads import RoIHeads

    rh = getattr(model, "roi_heads", None)
    if rh is None or not (type(rh) is RoIHeads or _is_cascade(rh)):
        raise IIFError(f"FASA augments the RoI box-head features of an R-CNN (Faster / Mask R-CNN, a cascade's first "
                       f"stage); {type(model).__name__} has no such RoI heads: use a fasterrcnn_*, maskrcnn_*, "
                       "cascade_maskrcnn_* or htc_* arch or model.fasa=false.")
    own = rh.__dict__.get("forward")
    if own is not None and getattr(own, "__func__", None) is not _forward:
        raise IIFError("FASA cannot combine with method 'eqlv2' (a sigmoid classifier that replaces the box "
                       "loss); use another margin method or model.fasa=false.")
    hp = _check_params(params)
    counts = getattr(counts, "object_counts", counts)
    cls = rh.box_predictor.cls_score
    num_classes = int(cls.out_features) - 1
    state = FASA(num_classes, int(cls.in_features), counts, **hp)
    rh.fasa = state.to(cls.weight.device)
    rh.__dict__["forward"] = types.MethodType(_forward, rh)
    return state


def remove_fasa(model: nn.Module) -> None:
    """Undo :func:`use_fasa`."""
    rh = model.roi_heads
    bound = rh.__dict__.get("forward")
    if getattr(bound, "__func__", None) is _forward:
        del rh.__dict__["forward"]
    if "fasa" in rh._modules:
        del rh._modules["fasa"]


def fasa_params(m: Any) -> dict[str, Any]:
    """:func:`use_fasa`'s parameters from a det config's ``model`` section (``model.fasa_*``)."""
    return {k: getattr(m, f"fasa_{k}") for k in FASA_DEFAULTS}


def check_fasa_config(m: Any) -> None:
    """``model.fasa`` and ``model.fasa_*`` of a det config: one line for a wrong value or an arch without RoI heads."""
    from .archs import ARCHS

    if not isinstance(m.fasa, bool):
        raise IIFError(f"config key 'model.fasa' must be true or false; got {m.fasa!r}.")
    if ARCHS[m.arch][0] not in ("fasterrcnn", "maskrcnn", "cascade_maskrcnn", "htc"):
        raise IIFError(f"config key 'model.fasa' is true but model.arch {m.arch} has no such RoI heads (FASA augments "
                       "the box-head features of an R-CNN): use a fasterrcnn_*, maskrcnn_*, cascade_maskrcnn_* or "
                       "htc_* arch or model.fasa=false.")
    try:
        _check_params(fasa_params(m))
    except IIFError as exc:
        raise IIFError(f"config key 'model.fasa_*': {exc}") from None


# ------------------------------------------------------------------------------ sampling adaptation (Sec. 3.3)


def group_classes(mean: Any, seen: Any, *, random_state: int = 1) -> list[list[int]]:
    """FASA's class groups (Sec. 3.3): affinity propagation (``sklearn.cluster.AffinityPropagation``,
    ``affinity="precomputed"``, default preference = the median similarity, ``random_state`` fixed so the groups
    are deterministic) on the similarities ``s_ij = -||mu_i - mu_j||^2`` between the running class means of the
    classes that have statistics (``seen``); every class without statistics is a group of its own, and so is
    every seen class when fewer than two are seen or the propagation does not converge (sklearn then labels
    every point -1): the per-class rule. Groups are sorted lists of 0-based class indices, ordered by their
    first member.

    Choices against the authors' code (a public copy of their box head, ``dynamic_sampling``): it hands the
    *positive* squared distances to ``AffinityPropagation(affinity='precomputed', random_state=1)``, which reads a
    precomputed matrix as similarities (larger = more alike), so far-apart classes would attract; the paper groups
    classes with similar features, so the negative squared distance (what sklearn's own ``affinity='euclidean'``
    computes) is used here, with their ``random_state=1``. They also cluster every class, including those never
    seen (all at the zero mean, so they fall together); here those stay alone, as no feature says they are alike.
    """
    m = np.asarray(torch.as_tensor(mean).detach().cpu().to(torch.float64))
    s = np.asarray(torch.as_tensor(seen).detach().cpu()).astype(bool).reshape(-1)
    if m.ndim != 2 or m.shape[0] != s.shape[0]:
        raise IIFError(f"group_classes needs (C, D) means and (C,) seen flags; got {m.shape} and {s.shape}.")
    idx = np.flatnonzero(s)
    groups: list[list[int]] = [[int(c)] for c in np.flatnonzero(~s)]
    if idx.size < 2:
        return sorted(groups + [[int(c)] for c in idx])
    x = m[idx]
    sim = -((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    import warnings

    from sklearn.cluster import AffinityPropagation  # the 'train' extra

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # non-convergence / equal similarities: handled below
        labels = AffinityPropagation(affinity="precomputed", random_state=random_state).fit(sim).labels_
    labels = np.asarray(labels)
    if (labels < 0).any():
        groups += [[int(c)] for c in idx]
    else:
        groups += [sorted(int(c) for c in idx[labels == k]) for k in np.unique(labels)]
    return sorted(groups)


def _no_bn_updates(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    """Every module's training flag (to restore), then ``model.train()`` with each BatchNorm in eval mode."""
    flags = [(mod, mod.training) for mod in model.modules()]
    model.train()
    for mod in model.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            mod.eval()
    return flags


@torch.no_grad()
def class_val_losses(model: nn.Module, dataset, *, batch_size: int = 2, device: Any = "cpu",
                     seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class sums of the box classifier's cross-entropy over the foreground sampled RoIs of ``dataset``'s
    images, and their counts: both ``(C,)`` float64, this rank's share only (the caller all-reduces).

    Computed as the training loss is: ``model`` (a FASA detector, :func:`use_fasa`) runs in training mode with
    the targets (train-mode RPN proposals, the ground truth added to them, ``box_batch_size_per_image`` RoIs
    sampled at 25% foreground, a cascade's stage 1), its class logits (after a train-phase margin) against the
    sampled labels, ``CE(z, y)`` per RoI. No gradients; BatchNorm layers stay in eval mode; the mask branch is
    switched off; FASA's own training step (statistics, virtual features) is bypassed; every buffer (e.g.
    Seesaw's class counts, which a training forward adds to) is restored afterwards; the RoI sampling draws from a private torch
    stream seeded with ``seed`` (the training stream is left as it was). Under ``torch.distributed`` each rank
    takes the images ``rank::world_size``."""
    from ..runtime.distributed import current_group
    from .data import collate

    rh = model.roi_heads
    state = rh.fasa
    c = state.num_classes
    dev = torch.device(device)
    group = current_group()
    mine = list(range(group.rank, len(dataset), group.world_size))
    sums = torch.zeros(c, dtype=torch.float64, device=dev)
    counts = torch.zeros(c, dtype=torch.float64, device=dev)
    seen: dict[str, torch.Tensor] = {}
    own_forward = rh.__dict__.pop("forward", None)

    def grab(module, inputs, output):
        seen.setdefault("logits", output[0] if isinstance(output, (tuple, list)) else output)

    saved_buffers = [(b, b.detach().clone()) for b in model.buffers()]  # e.g. Seesaw's cum_samples
    mask_pool = rh.mask_roi_pool if getattr(rh, "mask_roi_pool", None) is not None else None
    flags = _no_bn_updates(model)
    handle = rh.box_predictor.register_forward_hook(grab)
    devices = [dev] if dev.type == "cuda" else []
    try:
        if mask_pool is not None:
            rh.mask_roi_pool = None
        with torch.random.fork_rng(devices=devices), _sampled_labels_tap(rh, seen):
            torch.manual_seed(seed)
            for start in range(0, len(mine), batch_size):  # no DataLoader: its iterator would draw a seed
                images, targets = collate([dataset[i] for i in mine[start:start + batch_size]])
                images = [im.to(dev) for im in images]
                targets = [{k: v.to(dev) for k, v in t.items() if k in ("boxes", "labels")} for t in targets]
                seen.clear()
                model(images, targets)
                labels = seen["labels"].to(dev)
                ce = F.cross_entropy(seen["logits"].float(), labels, reduction="none").double()
                fg = labels > 0
                sums.index_add_(0, labels[fg] - 1, ce[fg])
                counts.index_add_(0, labels[fg] - 1, torch.ones_like(ce[fg]))
    finally:
        handle.remove()
        if own_forward is not None:
            rh.__dict__["forward"] = own_forward
        if mask_pool is not None:
            rh.mask_roi_pool = mask_pool
        for mod, flag in flags:
            mod.training = flag
        for b, value in saved_buffers:
            b.copy_(value)
    return sums, counts


class FASAAdaptation:
    """det-train's per-epoch sampling adaptation (Sec. 3.3), the ``epoch_end`` hook of
    :func:`iif.detection.train_detector`: after each epoch, on every rank,

    1. the per-class validation loss of the real RoIs (:func:`class_val_losses` on ``val``, all-reduced over the
       ranks): ``L_c = S_c / N``, ``S_c`` the summed CE of class ``c``'s foreground RoIs and ``N`` the number of
       foreground RoIs of all classes (the authors' normalisation by the label total, so a change in how many
       RoIs the proposals give does not read as a change of loss);
    2. the groups (:func:`group_classes` on the running means, identical on every rank: the statistics are
       all-reduced in training);
    3. :meth:`FASA.adapt` with ``L`` and the groups: from the second epoch on, a group whose summed ``L`` fell
       since the previous epoch has its ``p`` multiplied by ``up`` (1.1, the authors' ``dynamic_up``), one whose
       loss rose by ``down`` (0.9, ``dynamic_down``).

    ``L`` is kept in ``FASA.last_loss`` and the probabilities in ``FASA.prob``, both saved with the checkpoint
    (``margin_state``), so a resumed run adapts exactly as an uninterrupted one. Returns the history row's
    ``fasa_val_loss`` (``sum_c L_c``), ``fasa_groups`` (their number), ``fasa_p_mean`` (mean ``p`` after the
    step); ``records`` keeps each epoch's per-class ``loss``, ``sums``, ``counts``, ``groups`` and ``prob``.
    """

    def __init__(self, val, *, batch_size: int = 2, seed: int = 0, up: float = 1.1, down: float = 0.9,
                 log: Callable[[str], Any] = print) -> None:
        if val is None or not hasattr(val, "__len__") or len(val) == 0:
            raise IIFError("FASA's sampling adaptation (model.fasa_adapt) needs a validation set with images: give "
                           "data.val_json / data.val_images, or set model.fasa_adapt=false to keep the starting "
                           "probabilities.")
        self.val, self.batch_size, self.seed, self.up, self.down, self.log = val, int(batch_size), int(seed), \
            float(up), float(down), log
        self.records: list[dict[str, Any]] = []

    def __call__(self, model: nn.Module, epoch: int) -> dict[str, Any]:
        from ..runtime.distributed import all_reduce_sum, current_group

        state = getattr(getattr(model, "roi_heads", None), "fasa", None)
        if not isinstance(state, FASA):
            raise IIFError("FASA's sampling adaptation needs a model with FASA switched on (use_fasa / "
                           "model.fasa=true).")
        dev = state.prob.device
        sums, counts = class_val_losses(model, self.val, batch_size=self.batch_size, device=dev, seed=self.seed)
        both = all_reduce_sum(torch.stack([sums, counts]), current_group())
        sums, counts = both[0], both[1]
        loss = sums / counts.sum().clamp_min(1.0)
        groups = group_classes(state.mean, state.seen)
        state.adapt(loss, up=self.up, down=self.down, groups=groups)
        self.records.append({"epoch": epoch + 1, "loss": loss.cpu().tolist(), "sums": sums.cpu().tolist(),
                             "counts": counts.cpu().tolist(), "groups": groups, "prob": state.prob.cpu().tolist()})
        if current_group().rank == 0:
            self.log(f"FASA adaptation after epoch {epoch + 1}: val class loss {float(loss.sum()):.4f} over "
                     f"{int(counts.sum())} foreground RoIs, {len(groups)} groups, mean p {float(state.prob.mean()):.4g}")
        return {"fasa_val_loss": float(loss.sum()), "fasa_groups": len(groups),
                "fasa_p_mean": float(state.prob.mean())}
