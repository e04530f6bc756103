"""Detection training configuration (``iif det-train``): a typed dataclass of sections loaded from YAML.

A :class:`DetectionConfig` has the sections ``data``, ``model``, ``margin``, ``schedule``, ``eval`` and
``runtime``. It is loaded with :func:`load_detection_config` from a packaged config's short name
(``det_bench_iif``; packaged detection configs start with ``det_``), a YAML path or a dict, then
``section.key=value`` overrides. Loading, ``base:`` inheritance, override parsing, type coercion and the
nearest-key suggestions are the classification machinery (:func:`iif.train.config.load_sections`); only the
schema and :func:`validate_detection_config` are detection-specific. Every value is range-checked, with the
dotted key named, before any data is read or a model built.

The margin section is the argument list of :func:`iif.detection.use_margin`: IIF multiplies the RoI logits
by the per-class weights (paper Eq. 1, the variants of Table III with K = number of training images for
``by="image"`` and of instances for ``by="object"``), the additive methods add ``ln n_c`` (Balanced Softmax)
or ``-tau ln p_c`` (logit adjustment).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from ..errors import IIFError
from ..validation import MAX_SEED, at_least, check, is_finite, method_spelling, momentum, nonnegative, one_of, positive

__all__ = ["DetectionDataConfig", "DetectionModelConfig", "MarginConfig", "DetectionScheduleConfig",
           "DetectionEvalConfig", "DetectionRuntimeConfig", "DetectionConfig", "load_detection_config",
           "validate_detection_config", "detection_configs", "config_description", "model_kwargs", "margin_kwargs",
           "detection_config_hash", "scaled_schedule"]


@dataclass
class DetectionDataConfig:
    """Where the COCO / LVIS v1 instances are, and how training images are drawn."""

    # A folder in one of the layouts of iif.detection.resolve_detection_data (iif det-data output, LVIS v1,
    # COCO 2017); the four paths below, when set, take precedence over it.
    root: str | None = None
    train_json: str | None = None
    train_images: str | None = None
    val_json: str | None = None
    val_images: str | None = None
    # Instance masks (Mask R-CNN); null: masks for maskrcnn_* archs, none for fasterrcnn_* / ssd300_vgg16.
    masks: bool | None = None
    # Random horizontal flip in training; null: the benchmark's recommendation (BENCHMARK.json), else on.
    hflip: bool | None = None
    # "random" (every image once per epoch) or "rfs" (repeat-factor sampling, LVIS paper; threshold t).
    sampler: str = "random"
    rfs_threshold: float = 0.001
    # RFS copies per epoch: "stochastic" (detectron2: r on average) or "ceil" (mmdetection, the paper's authors).
    rfs_rounding: str = "stochastic"
    # Train on the first N images that cover the most categories (json order; as det-bench); null: all.
    max_train_images: int | None = None
    # Evaluate on the first N val images (json order); null: all.
    max_val_images: int | None = None


@dataclass
class DetectionModelConfig:
    """Arguments of :func:`iif.detection.build_detector` (see its docstring for each one)."""

    arch: str = "maskrcnn_r50_fpn"
    norm: str | None = None
    trainable_layers: int | None = None
    min_size: int = 800
    max_size: int = 1333
    rpn_pre_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_test: int = 1000
    rpn_batch_size_per_image: int = 256
    box_batch_size_per_image: int = 512
    box_detections_per_img: int = 300
    box_score_thresh: float = 1e-4
    anchor_sizes: list | None = None
    aspect_ratios: list = field(default_factory=lambda: [0.5, 1.0, 2.0])
    returned_layers: list = field(default_factory=lambda: [1, 2, 3, 4])
    fpn_channels: int = 256
    representation_size: int = 1024
    mask_layers: list | None = None
    mask_roi_size: int = 14
    # One mask channel for every category (build_detector's class_agnostic_mask; the v2 benchmark's setting).
    class_agnostic_mask: bool = False
    # Table XV's components (iif.detection.components): the mask predictor (standard, or normalised: the Seesaw
    # paper's normalised mask), the final NMS IoU threshold (null: the arch's, 0.5 for R-CNN) and the evaluated
    # masks' probability threshold (null: 0.5); the paper's last Table XV row uses 0.3 and 0.4.
    mask_predictor: str = "standard"
    box_nms_thresh: float | None = None
    mask_thresh: float | None = None
    # A local torchvision / iif checkpoint to start from (weights_only load); null: from scratch.
    checkpoint: str | None = None
    # The backbone's pretrained start (build_detector's backbone_weights): a torchvision-format ResNet state dict
    # file, a torchvision weights name (ResNet50_Weights.IMAGENET1K_V1; downloaded), "pretrained" (the cached
    # balanced pretraining of the data.root iif det-data benchmark, iif.detection.pretrain) or null / "none" /
    # "from_scratch" (random init). With weights, norm and trainable_layers default to frozen_bn and 3.
    backbone_weights: str | None = None
    # Cosine box classifier with this temperature (paper's "Cos. Cls."; the authors' IIF/IOF configs use 8,
    # their softmax ones 20); null: linear.
    cosine_scale: float | None = None
    # Decoupled stage 2 (paper Tables XI/XII "12/12"): train only roi_heads.box_predictor.cls_score, starting
    # from model.checkpoint (stage 1, normally softmax); everything else is frozen.
    classifier_only: bool = False
    # FASA (iif.detection.fasa; Zang et al. 2021, the paper's Table XV component): virtual RoI features of the
    # class-wise running Gaussians in training, for fasterrcnn_* / maskrcnn_*; the authors' parameters below.
    fasa: bool = False
    fasa_momentum: float = 0.1
    fasa_loss_weight: float = 0.1
    fasa_prob_scale: float = 1.0
    fasa_prob_power: float = 1.0
    fasa_start_iter: int = 0
    # FASA's sampling adaptation (Sec. 3.3, the paper's rule, so on by default; only with fasa: true): after each
    # epoch the per-class validation loss of the real RoIs moves each class group's probability (x1.1 when its
    # loss fell, x0.9 when it rose); false keeps the starting inverse-frequency probabilities throughout.
    fasa_adapt: bool = True


@dataclass
class MarginConfig:
    """Arguments of :func:`iif.detection.use_margin`."""

    # softmax, iif, balanced_softmax, logit_adjustment, norcal (post-hoc), seesaw (training loss).
    method: str = "softmax"
    # IIF variant (paper Table III): raw, smooth, relative, base2, base10, gombit, normit.
    variant: str = "smooth"
    # image (IIF: image counts, K = training images) or object (IOF: instance counts, K = instances).
    by: str = "image"
    # train_and_test (end-to-end), train (loss only) or test (post-hoc); null: train_and_test for iif and
    # softmax, train for the additive methods (a training loss by definition).
    when: str | None = None
    tau: float = 1.0
    background_margin: bool = False
    background_fraction: float | None = None
    # IIF's K: a number, "images", "instances" or "sum"; null: the detection convention above.
    total: Any = None
    # Logit adjustment's offset: bayes (background 0, -tau ln p_c - ln sum_j p_j^(1-tau)) or prior (-tau ln p_c);
    # null: bayes (prior with background_margin).
    la_form: str | None = None
    # NorCal's exponent on the class counts (post-hoc), >= 0.
    gamma: float = 1.0
    # Seesaw's mitigation and compensation exponents (paper: 0.8, 2.0).
    seesaw_p: float = 0.8
    seesaw_q: float = 2.0
    # Let IIF use negative weights (the authors' COCO relative / normit weights, negative for person).
    allow_negative: bool = False


@dataclass
class DetectionScheduleConfig:
    """SGD schedule of :func:`iif.detection.train_detector`; ``batch_size`` is global (split over ranks)."""

    epochs: int = 12
    batch_size: int = 16
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 500
    warmup_factor: float = 1e-3
    milestones: list = field(default_factory=lambda: [8, 11])
    gamma: float = 0.1
    clip_grad_norm: float | None = None
    # Scaling to the data size (det_folder): warm-up = min(warmup_iters, this fraction of the run's iterations);
    # null: warmup_iters as given.
    warmup_fraction: float | None = None
    # Milestones as fractions of schedule.epochs (rounded, at least epoch 1), replacing schedule.milestones;
    # null: schedule.milestones as given.
    milestone_fractions: list | None = None


@dataclass
class DetectionEvalConfig:
    """Evaluation after training (and the defaults of ``iif det-eval``)."""

    batch_size: int = 4
    # Score above which an unmatched detection counts as a false positive (count_false_positives).
    score_threshold: float = 0.3
    # Evaluate masks (segm AP) too when the model has a mask branch; false: boxes only (much faster on CPU).
    masks: bool = True


@dataclass
class DetectionRuntimeConfig:
    """Where and how to run; only ``seed`` and ``amp`` change the result."""

    device: str = "auto"
    amp: str = "none"
    seed: int = 0
    workers: int = 2
    # torch CPU threads (null: torch's default); det-bench's cpu-quick preset uses 1.
    threads: int | None = None
    log_every: int = 0
    # Stop (as if killed) after this many completed epochs; for tests and time-limited runs.
    stop_after_epoch: int | None = None


@dataclass
class DetectionConfig:
    data: DetectionDataConfig = field(default_factory=DetectionDataConfig)
    model: DetectionModelConfig = field(default_factory=DetectionModelConfig)
    margin: MarginConfig = field(default_factory=MarginConfig)
    schedule: DetectionScheduleConfig = field(default_factory=DetectionScheduleConfig)
    eval: DetectionEvalConfig = field(default_factory=DetectionEvalConfig)
    runtime: DetectionRuntimeConfig = field(default_factory=DetectionRuntimeConfig)


# Settings that do not change what training computes (left out of the resume fingerprint).
_HASH_EXCLUDE = {("runtime", "device"), ("runtime", "workers"), ("runtime", "threads"), ("runtime", "log_every"),
                 ("runtime", "stop_after_epoch"), ("eval", "batch_size"), ("eval", "score_threshold"),
                 ("eval", "masks"), ("data", "max_val_images"), ("data", "root"), ("data", "train_images"),
                 ("data", "val_images"), ("data", "val_json")}


# Keys added after the first detection runs were written (2026-12-06). At their defaults they are left out of
# the fingerprint, so a run started before they existed still resumes; the one exception is ``margin.la_form``
# of a logit-adjustment run, whose default changed the method's meaning (Bayes form instead of the prior form):
# such a run is refused rather than continued with another offset.
_ADDED_KEYS = {("data", "rfs_rounding"): "stochastic", ("margin", "la_form"): None, ("margin", "gamma"): 1.0,
               ("margin", "seesaw_p"): 0.8, ("margin", "seesaw_q"): 2.0, ("margin", "allow_negative"): False,
               ("schedule", "warmup_fraction"): None, ("schedule", "milestone_fractions"): None,
               ("model", "backbone_weights"): None, ("model", "class_agnostic_mask"): False,
               ("model", "mask_predictor"): "standard", ("model", "box_nms_thresh"): None, ("model", "mask_thresh"): None,
               ("model", "fasa"): False, ("model", "fasa_momentum"): 0.1, ("model", "fasa_loss_weight"): 0.1,
               ("model", "fasa_prob_scale"): 1.0, ("model", "fasa_prob_power"): 1.0, ("model", "fasa_start_iter"): 0,
               ("model", "fasa_adapt"): True}


def scaled_schedule(*, epochs: int, batch_size: int, num_images: int, warmup_iters: int, milestones: Sequence[int],
                    warmup_fraction: float | None = None, milestone_fractions: Sequence[float] | None = None,
                    iters_per_epoch: int | None = None) -> dict[str, Any]:
    """The schedule a run actually gets on ``num_images`` training images: ``{"warmup_iters", "milestones",
    "total_iters", "warning"}``.

    ``total_iters = iters_per_epoch * epochs`` with ``iters_per_epoch = ceil(num_images / batch_size)`` unless
    given (the loader keeps the last partial batch). ``warmup_fraction`` caps the warm-up at
    ``floor(warmup_fraction * total_iters)`` (at least 1 when warm-up is on), so a small dataset is not warmed up
    for longer than it trains; ``milestone_fractions`` puts the step decays at ``round(f * epochs)`` (clamped to
    1..epochs, duplicates merged). ``warning`` is one line when the warm-up is not shorter than the whole run
    (the learning rate would never reach ``lr``), else None.
    """
    import math

    per_epoch = int(iters_per_epoch) if iters_per_epoch is not None else math.ceil(int(num_images) / int(batch_size))
    total = max(per_epoch, 1) * int(epochs)
    warm = int(warmup_iters)
    if warmup_fraction is not None and warm > 0:
        warm = min(warm, max(1, math.floor(float(warmup_fraction) * total)))
    ms = [int(m) for m in milestones]
    if milestone_fractions is not None:
        ms = sorted({min(int(epochs), max(1, math.floor(float(f) * int(epochs) + 0.5))) for f in milestone_fractions})
    warning = None
    if warm > 0 and warm >= total:
        warning = (f"warning: the warm-up ({warm} iterations) is not shorter than the whole run ({total} iterations: "
                   f"{num_images} images / batch {batch_size} = {per_epoch} per epoch x {epochs} epochs), so the "
                   f"learning rate never reaches schedule.lr; set schedule.warmup_fraction=0.1 (as det_folder) or "
                   f"schedule.warmup_iters below {total}.")
    return {"warmup_iters": warm, "milestones": ms, "total_iters": total, "warning": warning}


def detection_config_hash(cfg: DetectionConfig) -> str:
    """Fingerprint of every setting that changes training (``--resume`` refuses a different one)."""
    from ..train.config import config_hash, config_to_dict

    d = config_to_dict(cfg)
    for (section, key), default in _ADDED_KEYS.items():
        if d[section].get(key) == default and not (key == "la_form" and d["margin"]["method"] == "logit_adjustment"):
            d[section].pop(key)
    return config_hash(d, exclude=_HASH_EXCLUDE)


def detection_configs() -> list[str]:
    """Short names of the packaged detection configs (``det_*``)."""
    from ..train.config import packaged_configs

    return packaged_configs("detection")


def config_description(name: str) -> str:
    """The first comment line of a packaged detection config (``--list`` shows it)."""
    from ..train.config import resolve_config_path

    for line in resolve_config_path(name, "detection").read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
        if line.strip():
            break
    return ""


def load_detection_config(source: str | os.PathLike | Mapping | DetectionConfig | None = None,
                          overrides: Iterable[str] = ()) -> DetectionConfig:
    """Defaults, then ``source`` (packaged short name, YAML path with optional ``base:``, dict or config), then
    ``section.key=value`` overrides; validated (:func:`validate_detection_config`)."""
    from ..train.config import load_sections

    return load_sections(DetectionConfig, source, overrides, validate_detection_config, kind="detection")


def model_kwargs(cfg: DetectionConfig) -> dict[str, Any]:
    """``build_detector`` keyword arguments of ``cfg.model`` (lists as tuples; arch and the iif-only keys out)."""
    m = dataclasses.asdict(cfg.model)
    for key in ("arch", "cosine_scale", "classifier_only", "checkpoint", "fasa", "fasa_momentum", "fasa_loss_weight",
                "fasa_prob_scale", "fasa_prob_power", "fasa_start_iter", "fasa_adapt"):
        m.pop(key)
    if m["backbone_weights"] is None:  # absent unless set, so det-bench's recorded settings stay as they were
        m.pop("backbone_weights")
    if not m["class_agnostic_mask"]:  # likewise
        m.pop("class_agnostic_mask")
    for key, default in (("mask_predictor", "standard"), ("box_nms_thresh", None), ("mask_thresh", None)):
        if m[key] == default:  # likewise
            m.pop(key)
    if m["anchor_sizes"] is not None:
        m["anchor_sizes"] = tuple(tuple(a) if isinstance(a, (list, tuple)) else (a,) for a in m["anchor_sizes"])
    for key in ("aspect_ratios", "returned_layers", "mask_layers"):
        if m[key] is not None:
            m[key] = tuple(m[key])
    return m


def default_when(method: str) -> str:
    if method == "norcal":
        return "test"
    return "train" if method in ("balanced_softmax", "logit_adjustment", "seesaw", "eqlv2") else "train_and_test"


def margin_kwargs(mc: MarginConfig, cosine_scale: float | None = None) -> dict[str, Any]:
    """``use_margin`` keyword arguments (without ``method`` and ``freq``) of a margin section."""
    kw: dict[str, Any] = {"variant": mc.variant, "by": mc.by, "tau": mc.tau, "when": mc.when or default_when(mc.method),
                          "background_margin": mc.background_margin, "background_fraction": mc.background_fraction,
                          "total": mc.total, "cosine_scale": cosine_scale}
    # The options of the newer methods only when they apply (use_margin refuses them elsewhere).
    if mc.method == "logit_adjustment" and mc.la_form is not None:
        kw["la_form"] = mc.la_form
    if mc.method == "norcal":
        kw["gamma"] = mc.gamma
    if mc.method == "seesaw":
        kw.update(seesaw_p=mc.seesaw_p, seesaw_q=mc.seesaw_q)
    if mc.method == "iif" and mc.allow_negative:
        kw["allow_negative"] = True
    return kw


def validate_detection_config(cfg: DetectionConfig) -> DetectionConfig:
    """Range-check every value; :class:`IIFError` names the first bad dotted key, what it must be and a fix.

    The sections are checked in the order data, model, margin, schedule, eval, runtime (one function each),
    so the first bad key reported is the same whatever else is wrong."""
    _check_data(cfg.data)
    _check_model(cfg.model)
    _check_margin(cfg.margin)
    _check_schedule(cfg.schedule)
    _check_eval_and_runtime(cfg.eval, cfg.runtime)
    return cfg


def _check_data(d: DetectionDataConfig) -> None:
    """``data.*``: paths (all four explicit ones, or a root), the sampler and the image caps."""
    for key in ("root", "train_json", "train_images", "val_json", "val_images"):
        v = getattr(d, key)
        check(v is None or (isinstance(v, str) and bool(v.strip())), f"data.{key}", v, "a path or null", "/data/lvis")
    explicit = [d.train_json, d.train_images, d.val_json, d.val_images]
    if any(v is not None for v in explicit) and not all(v is not None for v in explicit) and d.root is None:
        miss = [k for k, v in zip(("train_json", "train_images", "val_json", "val_images"), explicit) if v is None]
        raise IIFError(f"config keys data.{', data.'.join(miss)} are not set; give all four of data.train_json, "
                       "data.train_images, data.val_json, data.val_images, or data.root=FOLDER.")
    one_of("data.sampler", d.sampler, ("random", "rfs"))
    check(is_finite(d.rfs_threshold) and 0 < d.rfs_threshold <= 1, "data.rfs_threshold", d.rfs_threshold,
          "in (0, 1] (fraction of training images; LVIS uses 0.001)", "0.001")
    one_of("data.rfs_rounding", d.rfs_rounding, ("stochastic", "ceil"))
    for key in ("max_train_images", "max_val_images"):
        if getattr(d, key) is not None:
            at_least(f"data.{key}", getattr(d, key), 1, "500")


def _check_model(m: DetectionModelConfig) -> None:
    """``model.*``: arch and norm, sizes and RPN/RoI numbers, anchors, layers, weights, cosine and mask options."""
    from .archs import ARCHS, NORMS, has_masks
    from .components import check_components

    one_of("model.arch", m.arch, ARCHS)
    if m.norm is not None:
        one_of("model.norm", m.norm, NORMS)
    if m.trainable_layers is not None:
        at_least("model.trainable_layers", m.trainable_layers, 0, "5", 5)
    for key in ("min_size", "max_size", "rpn_pre_nms_top_n_train", "rpn_post_nms_top_n_train", "rpn_pre_nms_top_n_test",
                "rpn_post_nms_top_n_test", "rpn_batch_size_per_image", "box_batch_size_per_image",
                "box_detections_per_img", "fpn_channels", "representation_size", "mask_roi_size"):
        at_least(f"model.{key}", getattr(m, key), 1, "100", 100_000)
    if m.min_size > m.max_size:
        raise IIFError(f"config key 'model.min_size' ({m.min_size}) exceeds model.max_size ({m.max_size}); the short "
                       "side cannot be longer than the long side limit (e.g. model.min_size=800 model.max_size=1333).")
    check(is_finite(m.box_score_thresh) and 0 <= m.box_score_thresh < 1, "model.box_score_thresh", m.box_score_thresh,
          "in [0, 1)", "0.0001")
    if m.anchor_sizes is not None:
        flat = [a for level in m.anchor_sizes for a in (level if isinstance(level, (list, tuple)) else [level])]
        check(bool(flat) and all(is_finite(a) and a > 0 for a in flat), "model.anchor_sizes", m.anchor_sizes,
              "a list of positive sizes per FPN level", "[[32],[64],[128],[256],[512]]")
    check(bool(m.aspect_ratios) and all(is_finite(a) and a > 0 for a in m.aspect_ratios), "model.aspect_ratios",
          m.aspect_ratios, "a list of positive ratios", "[0.5,1.0,2.0]")
    check(bool(m.returned_layers) and all(isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= 4
                                          for x in m.returned_layers)
          and len(set(m.returned_layers)) == len(m.returned_layers), "model.returned_layers", m.returned_layers,
          "distinct ResNet stages in 1..4", "[1,2,3,4]")
    if m.mask_layers is not None:
        check(bool(m.mask_layers) and all(isinstance(x, int) and not isinstance(x, bool) and x >= 1
                                          for x in m.mask_layers), "model.mask_layers", m.mask_layers,
              "a list of channel counts >= 1", "[256,256,256,256]")
    if m.backbone_weights is not None:
        from .archs import is_from_scratch

        check(isinstance(m.backbone_weights, str) and bool(m.backbone_weights.strip()), "model.backbone_weights",
              m.backbone_weights, "a weights file, a torchvision weights name, pretrained or null",
              "pretrained")
        if ARCHS[m.arch][0] == "ssd" and not is_from_scratch(m.backbone_weights):
            raise IIFError("config key 'model.backbone_weights' is set but model.arch is ssd300_vgg16 (a VGG16 "
                           "backbone); backbone weights are for the ResNet-FPN archs: set model.backbone_weights=null.")
        if ARCHS[m.arch][0] == "yolov3" and not is_from_scratch(m.backbone_weights) and (
                m.backbone_weights.strip() == "pretrained" or "_Weights." in m.backbone_weights):
            raise IIFError(f"config key 'model.backbone_weights' is {m.backbone_weights!r}, ResNet weights, but "
                           f"model.arch is {m.arch} (a Darknet); give a file holding a Darknet state dict or null.")
    if m.cosine_scale is not None:
        positive("model.cosine_scale", m.cosine_scale, "20")
        if ARCHS[m.arch][0] in ("ssd", "yolov3"):
            raise IIFError(f"config key 'model.cosine_scale' is set but model.arch is {m.arch}, whose head is "
                           "convolutional; the cosine classifier is for R-CNN archs (set model.cosine_scale=null).")
    check_components(m.arch, mask_predictor=m.mask_predictor, box_nms_thresh=m.box_nms_thresh,
                     mask_thresh=m.mask_thresh, class_agnostic_mask=m.class_agnostic_mask is True, config=True)
    if not isinstance(m.class_agnostic_mask, bool):
        raise IIFError(f"config key 'model.class_agnostic_mask' must be true or false; got {m.class_agnostic_mask!r}.")
    if m.class_agnostic_mask and not has_masks(m.arch):
        raise IIFError(f"config key 'model.class_agnostic_mask' is true but model.arch {m.arch} has no mask head; "
                       "use a maskrcnn_* arch or set model.class_agnostic_mask=false.")
    if m.fasa is not False:
        from .fasa import check_fasa_config

        check_fasa_config(m)
    if m.classifier_only:
        if m.checkpoint is None:
            raise IIFError("config key 'model.classifier_only' is true but model.checkpoint is not set; decoupled "
                           "stage 2 starts from a trained detector (set model.checkpoint=RUN/last.pt).")
        if ARCHS[m.arch][0] in ("ssd", "yolov3"):
            raise IIFError("config key 'model.classifier_only' needs an R-CNN arch (roi_heads.box_predictor.cls_score); "
                           f"model.arch is {m.arch}.")


def _check_margin(mg: MarginConfig) -> None:
    """``margin.*``: method, variant, by, when (and the methods' allowed phases), tau, la_form, gamma, Seesaw's
    exponents, background fraction and IIF's K."""
    from ..weights import VARIANTS, canonical_variant
    from .margins import METHODS, WHEN

    mg.method = method_spelling(mg.method, "detection")  # aliases too: la, logit_adjusted, ce (iif.methods)
    one_of("margin.method", mg.method, METHODS)
    try:
        canonical_variant(mg.variant)
    except (IIFError, TypeError, AttributeError):
        one_of("margin.variant", mg.variant, VARIANTS)
    one_of("margin.by", mg.by, ("image", "object"))
    if mg.when is not None:
        one_of("margin.when", mg.when, WHEN)
    when = mg.when or default_when(mg.method)
    if mg.method == "balanced_softmax" and when != "train":
        raise IIFError(f"config key 'margin.when' is {when!r} but balanced_softmax is a training loss; set "
                       "margin.when=train (or null).")
    if mg.method == "logit_adjustment" and when == "train_and_test":
        raise IIFError("config key 'margin.when' is 'train_and_test', which logit_adjustment does not support (the "
                       "margin would cancel its own effect); set margin.when=train (LA loss) or test (post-hoc).")
    check(is_finite(mg.tau) and mg.tau > 0, "margin.tau", mg.tau, "a positive finite number", "1.0")
    if mg.method == "norcal" and when != "test":
        raise IIFError(f"config key 'margin.when' is {when!r} but norcal is post-hoc; set margin.when=test (or null).")
    if mg.method in ("seesaw", "eqlv2") and when != "train":
        raise IIFError(f"config key 'margin.when' is {when!r} but {mg.method} is a training loss; set "
                       "margin.when=train (or null).")
    if mg.la_form is not None:
        one_of("margin.la_form", mg.la_form, ("bayes", "prior"))
    check(is_finite(mg.gamma) and mg.gamma >= 0, "margin.gamma", mg.gamma, "a finite number >= 0", "1.0")
    for key in ("seesaw_p", "seesaw_q"):
        check(is_finite(getattr(mg, key)) and getattr(mg, key) >= 0, f"margin.{key}", getattr(mg, key),
              "a finite number >= 0", "0.8" if key == "seesaw_p" else "2.0")
    if mg.background_fraction is not None:
        check(is_finite(mg.background_fraction) and 0 < mg.background_fraction < 1, "margin.background_fraction",
              mg.background_fraction, "in (0, 1)", "0.75")
    if mg.total is not None and not (mg.total in ("images", "instances", "sum") or (is_finite(mg.total) and mg.total > 0)):
        raise IIFError(f"config key 'margin.total' is {mg.total!r}; use a positive number, images, instances, sum or "
                       "null (the detection convention).")


def _check_schedule(s: DetectionScheduleConfig) -> None:
    """``schedule.*``: epochs, batch, SGD numbers, warm-up, milestones (or their fractions), gamma, clipping."""
    at_least("schedule.epochs", s.epochs, 1, "12", 100_000)
    at_least("schedule.batch_size", s.batch_size, 1, "16", 1_000_000)
    positive("schedule.lr", s.lr, "0.02")
    momentum("schedule.momentum", s.momentum)
    nonnegative("schedule.weight_decay", s.weight_decay, "1e-4")
    at_least("schedule.warmup_iters", s.warmup_iters, 0, "500")
    check(is_finite(s.warmup_factor) and 0 < s.warmup_factor <= 1, "schedule.warmup_factor", s.warmup_factor,
          "in (0, 1]", "0.001")
    for i, ms in enumerate(s.milestones if s.milestone_fractions is None else []):  # fractions replace them
        if not (isinstance(ms, int) and not isinstance(ms, bool) and 1 <= ms <= s.epochs):
            raise IIFError(f"config key 'schedule.milestones' must list epochs in 1..schedule.epochs={s.epochs}; "
                           f"entry {i} is {ms!r}. Set e.g. schedule.milestones=[8,11].")
    check(is_finite(s.gamma) and s.gamma > 0, "schedule.gamma", s.gamma, "a positive finite number", "0.1")
    if s.warmup_fraction is not None:
        check(is_finite(s.warmup_fraction) and 0 < s.warmup_fraction <= 1, "schedule.warmup_fraction",
               s.warmup_fraction, "in (0, 1] (a fraction of the run's iterations) or null", "0.1")
    if s.milestone_fractions is not None:
        check(all(is_finite(f) and 0 < f <= 1 for f in s.milestone_fractions), "schedule.milestone_fractions",
               s.milestone_fractions, "a list of fractions of schedule.epochs in (0, 1] or null", "[0.67,0.92]")
    if s.clip_grad_norm is not None:
        positive("schedule.clip_grad_norm", s.clip_grad_norm, "10.0")


def _check_eval_and_runtime(ev: DetectionEvalConfig, rt: DetectionRuntimeConfig) -> None:
    """``eval.*`` (batch size, FP score threshold), then ``runtime.*`` (device, amp, seed, workers, threads, logs)."""
    at_least("eval.batch_size", ev.batch_size, 1, "4")
    check(is_finite(ev.score_threshold) and 0 <= ev.score_threshold < 1, "eval.score_threshold", ev.score_threshold,
          "in [0, 1)", "0.3")
    # runtime
    dev = str(rt.device)
    base, _, index = dev.partition(":")
    if base not in ("auto", "cpu", "cuda") or (index and (base != "cuda" or not index.isdigit())):
        raise IIFError(f"config key 'runtime.device' is {rt.device!r}; use auto, cpu, cuda or cuda:N (e.g. cuda:1).")
    one_of("runtime.amp", rt.amp, ("none", "bf16", "fp16"))
    at_least("runtime.seed", rt.seed, 0, "0", MAX_SEED)
    at_least("runtime.workers", rt.workers, 0, "2")
    if rt.threads is not None:
        at_least("runtime.threads", rt.threads, 1, "1")  # above the usable CPUs: clamped (iif.resources)
    at_least("runtime.log_every", rt.log_every, 0, "20")
    if rt.stop_after_epoch is not None:
        at_least("runtime.stop_after_epoch", rt.stop_after_epoch, 1, "1")
