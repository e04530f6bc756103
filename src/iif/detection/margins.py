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
| ``"eqlv2"`` | ``"train"`` (EQLv2, Tan et al. 2021; :mod:`iif.detection.eqlv2`) | its own sigmoid loss | ``sigmoid(z_c)`` |

A method defined by its transforms (:mod:`iif.methods`; e.g. added with :func:`iif.register_method`) has no
special adjuster: its ``train`` transform is the loss's logits and its ``infer`` transform the inference
softmax's, on the ``C`` foreground columns (background untouched), in the phases ``when`` picks among those its
definition allows; its parameters come as ``params={...}``.

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

import copy
from typing import Any, Mapping, Optional, Union

from torch import nn

from ..errors import IIFError
from ..logit_transforms import resolve
from ..methods import get_method
from ..weights import canonical_variant
from .eqlv2 import EQLv2Adjuster, hook_eqlv2, unhook_eqlv2
from .margins_adjusters import _transform_adjuster
from .margins_checks import _check_arguments, _locate
from .margins_predictor import (  # noqa: F401  (re-exported: the public path of these names stays here)
    CosineBoxClassifier,
    MarginBoxPredictor,
    _AddOffset,
    _SeesawOffset,
    _tap_labels,
    _untap_labels,
)
from .margins_table import _BY, METHODS, WHEN, FreqLike, _check_choice, _check_method  # noqa: F401

__all__ = ["use_margin", "MarginBoxPredictor", "CosineBoxClassifier", "METHODS", "WHEN"]


def use_margin(model: nn.Module, method: str, freq: Optional[FreqLike] = None, *, variant: str = "smooth",
               by: str = "image", total: Optional[Union[float, str]] = None, tau: float = 1.0,
               background_margin: bool = False, background_fraction: Optional[float] = None,
               when: str = "train_and_test", cosine_scale: Optional[float] = None, la_form: Optional[str] = None,
               gamma: float = 1.0, seesaw_p: float = 0.8, seesaw_q: float = 2.0,
               allow_negative: bool = False, params: Optional[Mapping[str, Any]] = None) -> nn.Module:
    """Switch ``model``'s box classifier to a margin method, in place; returns ``model``.

    See the module docstring for the table of what the loss and the inference softmax see for each
    ``method`` and ``when``. Calling it again replaces the margin (it never stacks); ``method="softmax"``
    puts the original predictor back.

    Args:
        model: a torchvision ``FasterRCNN`` / ``MaskRCNN`` (box predictor with an ``nn.Linear`` ``cls_score``)
            or ``SSD`` (e.g. ``ssd300_vgg16``), built for ``C + 1`` classes. On a Cascade Mask R-CNN
            (:mod:`iif.detection.cascade`) every stage's classifier is switched the same way.
        method: ``"softmax"``, ``"iif"``, ``"balanced_softmax"``, ``"logit_adjustment"``, ``"norcal"`` or
            ``"seesaw"`` or ``"eqlv2"`` (:data:`METHODS`), or a method added with :func:`iif.register_method`; the aliases of :mod:`iif.methods` are accepted too (``"la"`` and
            ``"logit_adjusted"`` for ``"logit_adjustment"``, ``"ce"`` for ``"softmax"``).
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
        params: the parameters of a method defined by its transforms (:mod:`iif.methods`, e.g. added with
            :func:`iif.register_method`), which acts on the ``C`` foreground logits (background untouched):
            its ``train`` transform in the loss, its ``infer`` transform at inference, as ``when`` picks; and
            EQLv2's ``gamma``, ``mu``, ``alpha`` (default 12, 0.8, 4, the published values).

    Raises:
        IIFError: an unsupported model, a head whose number of logits is not ``len(counts) + 1``, an unknown
            method / when / variant / by, a combination the table does not list, counts the variant cannot
            use (zero counts with raw IIF, ...), or a ``background_fraction`` outside (0, 1).
    """
    method = _check_method(method)  # an alias (la, logit_adjusted) resolves to its canonical name
    when = _check_choice(when, WHEN, "when")
    by = _check_choice(by, _BY, "by ('image' for IIF, 'object' for IOF)")
    variant = canonical_variant(variant)
    kind, parent, attr, base, num_logits = _locate(model)
    la_form, cosine_scale, tau_f = _check_arguments(
        method, when, kind, background_margin=background_margin, background_fraction=background_fraction,
        la_form=la_form, allow_negative=allow_negative, gamma=gamma, seesaw_p=seesaw_p, seesaw_q=seesaw_q,
        total=total, cosine_scale=cosine_scale, tau=tau)
    builder, extra = _builder(method, params)  # the definition picks the builder
    adjuster, config = _transform_adjuster(model, kind, num_logits, method, freq, by=by, params=params) \
        if builder is None else builder(
            model, kind, num_logits, method, freq, by=by, variant=variant, total=total, allow_negative=allow_negative,
            gamma=gamma, seesaw_p=seesaw_p, seesaw_q=seesaw_q, background_margin=background_margin,
            background_fraction=background_fraction, la_form=la_form, tau=tau_f, when=when,
            **extra)
    # Everything is validated: now change the model.
    _install(kind, parent, attr, base, num_logits, adjuster, config, method=method, when=when,
             cosine_scale=cosine_scale)
    _install_stages(kind, parent, num_logits, adjuster, config, method=method, when=when, cosine_scale=cosine_scale)
    return model


def _install_stages(kind: str, parent: nn.Module, num_logits: int, adjuster: Optional[nn.Module],
                    config: dict[str, Any], *, method: str, when: str, cosine_scale: Optional[float]) -> None:
    """A cascade's other stages (``parent.extra_stage_predictors``, :mod:`iif.detection.cascade`): each stage's
    predictor gets the margin :func:`_install` put on ``box_predictor`` (its own copy of the adjuster: Seesaw's
    counts and RoI labels are per stage) and the same cosine classifier."""
    for stage_attr in getattr(parent, "extra_stage_predictors", ()) if kind == "rcnn" else ():
        stage = getattr(parent, stage_attr)
        _install(kind, parent, stage_attr, stage.predictor if isinstance(stage, MarginBoxPredictor) else stage,
                 num_logits, copy.deepcopy(adjuster), dict(config), method=method, when=when,
                 cosine_scale=cosine_scale)


def _builder(method: str, params: Optional[Mapping[str, Any]]) -> tuple[Any, dict[str, Any]]:
    """The detection builder ``method``'s definition names (None: the generic adjuster of a method defined by its
    transforms) and the keywords only some builders take: ``params`` for one marked ``takes_params`` (eqlv2)."""
    impl = get_method(method, "detection").implementation("detection")
    if impl is None:
        return None, {}
    builder = resolve(impl)
    if getattr(builder, "takes_params", False):
        return builder, {"params": params}
    if params:
        raise IIFError(f"params= sets the parameters of a method defined by its transforms; {method!r} takes its "
                       "own keywords (variant, tau, gamma, seesaw_p, ...). Drop params.")
    return builder, {}


def _install(kind: str, parent: nn.Module, attr: str, base: nn.Module, num_logits: int,
             adjuster: Optional[nn.Module], config: dict[str, Any], *, method: str, when: str,
             cosine_scale: Optional[float]) -> None:
    """Put ``adjuster`` on the detector (``parent.<attr>``, the predictor ``base``) after every check passed:
    the cosine classifier first (with ``cosine_scale``), then the :class:`MarginBoxPredictor` (or ``base`` back
    for no adjuster), and for Seesaw the RoI-label tap (any earlier tap is removed first)."""
    if cosine_scale is not None:
        if isinstance(base.cls_score, CosineBoxClassifier):
            base.cls_score.scale = cosine_scale
        else:
            base.cls_score = CosineBoxClassifier.from_linear(base.cls_score, cosine_scale)
        config["cosine_scale"] = cosine_scale
    if kind == "rcnn":
        _untap_labels(parent)
        unhook_eqlv2(parent)
    if adjuster is None:
        setattr(parent, attr, base)
        return
    param = next(base.parameters(), None)
    if param is not None:
        adjuster.to(device=param.device)
    wrapper = MarginBoxPredictor(base, adjuster, when=when, num_logits=num_logits, method=method)
    wrapper.train(base.training)
    wrapper.config = config
    setattr(parent, attr, wrapper)
    if isinstance(adjuster, _SeesawOffset):
        _tap_labels(parent)
    if isinstance(adjuster, EQLv2Adjuster):
        hook_eqlv2(parent)
