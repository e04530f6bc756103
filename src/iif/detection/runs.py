"""Train and evaluate a detector from a :class:`~iif.detection.config.DetectionConfig` (``iif det-train``,
``iif det-eval``).

A run folder holds ``config.yaml`` (the resolved config), ``last.pt`` (weights, optimizer, schedule and RNG
after each epoch, written by :func:`iif.detection.train_detector`), ``history.json``, ``detections.json``
(the val result dicts) and ``final_metrics.json``: mask AP (``AP``, ``AP50``, ``AP75``, ``APr``, ``APc``,
``APf``; box AP for box-only models), box AP ``APb``, TIDE's false-positive error ``dAP_FP`` and the count of
``false_positives`` at ``eval.score_threshold``, the same keys as a ``det-bench`` results row, plus ``bbox``
/ ``segm`` / ``tide`` / ``tail`` details. The folder policy is ``iif train``'s
(:func:`iif.outputs.prepare_run_folder`): a non-empty folder is refused, ``--resume`` continues it exactly,
``--force`` builds a replacement beside an earlier iif output and swaps it in when finished.
"""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from ..errors import IIFError
from ..outputs import atomic_write_json, json_safe
from ..readers import read_json
from ..resources import check_threads, set_threads
from .config import (DetectionConfig, detection_config_hash, load_detection_config, margin_kwargs, model_kwargs,
                     scaled_schedule)
from .runs_folder import CONFIG_FILE, _fit, _open_run_folder

__all__ = ["train_from_config", "evaluate_run", "evaluate_detections", "parse_margin_spec", "RESULT_KEYS"]

RESULT_KEYS = ("AP", "AP50", "AP75", "APr", "APc", "APf", "APb", "dAP_FP", "false_positives")
METRICS_FILE = "final_metrics.json"


# ------------------------------------------------------------------------------------------------------- data
def data_paths(cfg: DetectionConfig) -> tuple[Path, Path, Path, Path]:
    """``(train_json, train_images, val_json, val_images)``: the explicit ``data.*`` paths, else those of the
    ``data.root`` folder's layout (:func:`iif.detection.resolve_detection_data`)."""
    from .data import resolve_detection_data

    d = cfg.data
    explicit = (d.train_json, d.train_images, d.val_json, d.val_images)
    if all(v is not None for v in explicit):
        paths = tuple(Path(v) for v in explicit)
    elif d.root is not None:
        found = resolve_detection_data(d.root)
        paths = tuple(Path(v) if v is not None else f for v, f in zip(explicit, found))
    else:
        raise IIFError("no data given; set data.root=FOLDER (an `iif det-data` benchmark, LVIS v1 or COCO 2017 "
                       "layout) or data.train_json/train_images/val_json/val_images.")
    for p, key in zip(paths, ("train_json", "train_images", "val_json", "val_images")):
        if key.endswith("json") and not p.is_file():
            raise IIFError(f"data.{key}: {p} is not a file; give the COCO/LVIS instances json.")
        if key.endswith("images") and not p.is_dir():
            raise IIFError(f"data.{key}: {p} is not a folder; give the image root the json's file names are under.")
    return paths  # type: ignore[return-value]


def _masks(cfg: DetectionConfig) -> bool:
    from .archs import has_masks

    if cfg.data.masks is None:
        return has_masks(cfg.model.arch)
    if cfg.data.masks and not has_masks(cfg.model.arch):
        raise IIFError(f"config key 'data.masks' is true but model.arch {cfg.model.arch} has no mask branch; set "
                       "data.masks=false or use a maskrcnn_* arch.")
    return bool(cfg.data.masks)


def _benchmark_marker(train_json: Path) -> dict | None:
    marker = train_json.parent.parent / "BENCHMARK.json"
    if marker.is_file():
        try:
            return json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
    return None


def load_train_set(cfg: DetectionConfig, paths=None):
    """The training :class:`DetectionDataset` (or det-bench's category-covering prefix of
    ``data.max_train_images`` images, with its own counts as ``freq``)."""
    from .data import covering_subset, load_detection_dataset

    train_json, train_images, _, _ = paths or data_paths(cfg)
    hflip = cfg.data.hflip
    if hflip is None:
        hflip = bool(((_benchmark_marker(train_json) or {}).get("recommended") or {}).get("hflip", True))
    train = load_detection_dataset(train_json, train_images, train=True, masks=_masks(cfg), hflip=hflip)
    n = cfg.data.max_train_images
    if n is not None and n < len(train):
        return covering_subset(train, n)
    return train


def load_val_set(cfg: DetectionConfig, paths=None, *, masks: bool | None = None):
    """``(val dataset, val json dict)``, restricted to the first ``data.max_val_images`` images."""
    from .data import load_detection_dataset, restrict_annotations, validate_annotations

    _, _, val_json, val_images = paths or data_paths(cfg)
    masks = _masks(cfg) if masks is None else masks
    val_ann = read_json(val_json)  # one-line IIFError for a missing, corrupt or too deeply nested file
    if not isinstance(val_ann, dict) or not isinstance(val_ann.get("images"), list):
        raise IIFError(f"{val_json} is not a COCO/LVIS instances json (no 'images' list); give the val annotations.")
    # The whole val json is checked as strictly as the training json (named by its path), once.
    validate_annotations(val_ann, val_images, source=str(val_json), masks=masks)
    n = cfg.data.max_val_images
    if n is not None and n < len(val_ann["images"]):
        val_ann = restrict_annotations(val_ann, {int(im["id"]) for im in val_ann["images"][:n]})
    val = load_detection_dataset(val_ann, val_images, train=False, masks=masks, hflip=False, validate=False)
    return val, val_ann


def load_train_and_val(cfg: DetectionConfig, paths):
    """``(train set, val set, val json dict)``, both jsons validated before anything else: the problems of
    both in one :class:`IIFError` (the val json is checked as strictly as the training json)."""
    problems, train, val = [], None, (None, None)
    for which in ("train", "val"):
        try:
            if which == "train":
                train = load_train_set(cfg, paths)
            else:
                val = load_val_set(cfg, paths)
        except IIFError as exc:
            problems.append(str(exc).rstrip("."))
    if problems:
        raise IIFError(" || ".join(problems))
    return train, val[0], val[1]


def _image_sizes(ds) -> np.ndarray:
    """``(height, width)`` of each image of a detection dataset (or a ``Subset`` of one), from its json."""
    base = ds.dataset if isinstance(ds, torch.utils.data.Subset) else ds
    ids = [base.image_ids[i] for i in ds.indices] if base is not ds else base.image_ids
    imgs = base.coco.imgs
    return np.array([(imgs[i]["height"], imgs[i]["width"]) for i in ids], dtype=np.float64).reshape(-1, 2)


def check_memory(cfg: DetectionConfig, ds, batch_size: int, device: str, what: str, batch_key: str) -> int:
    """:func:`iif.detection.models.check_input_memory` for ``cfg.model`` on the images of ``ds``."""
    from .models import check_input_memory

    m = cfg.model
    return check_input_memory(_image_sizes(ds), arch=m.arch, min_size=m.min_size, max_size=m.max_size,
                              batch_size=batch_size, fpn_channels=m.fpn_channels, returned_layers=m.returned_layers,
                              device=device, what=what, batch_key=batch_key)


def _sampler(cfg: DetectionConfig, train):
    if cfg.data.sampler != "rfs":
        return None
    return rfs_sampler(train, threshold=cfg.data.rfs_threshold, rounding=cfg.data.rfs_rounding, seed=cfg.runtime.seed)


def rfs_sampler(train, *, threshold: float, rounding: str, seed: int):
    """The repeat-factor sampler of a training :class:`DetectionDataset` or a ``Subset`` of one (its factors
    from the subset's own images, as if its json held only them); det-train and det-bench both use it."""
    from .data import restrict_annotations
    from .sampling import RepeatFactorSampler, repeat_factors

    base = train.dataset if isinstance(train, torch.utils.data.Subset) else train
    ann = base.coco.dataset
    if isinstance(train, torch.utils.data.Subset):
        ann = restrict_annotations(ann, {base.image_ids[i] for i in train.indices})
    return RepeatFactorSampler(repeat_factors(ann, threshold=threshold), seed=seed, rounding=rounding)


def _schedule(cfg: DetectionConfig, train, sampler, log) -> dict[str, Any]:
    """The warm-up and milestones this run trains with (:func:`iif.detection.config.scaled_schedule` on the
    training set's size); logs the warm-up warning and, when the config scales, what it scaled to."""
    s = cfg.schedule
    sched = scaled_schedule(epochs=s.epochs, batch_size=s.batch_size, num_images=len(train),
                            warmup_iters=s.warmup_iters, milestones=s.milestones, warmup_fraction=s.warmup_fraction,
                            milestone_fractions=s.milestone_fractions,
                            iters_per_epoch=None if sampler is None else -(-len(sampler) // s.batch_size))
    if sched["warning"]:
        log(sched["warning"])
    if s.warmup_fraction is not None or s.milestone_fractions is not None:
        log(f"schedule scaled to {len(train)} training images ({sched['total_iters']} iterations): warm-up "
            f"{sched['warmup_iters']} iterations, milestones {sched['milestones']}")
    return sched


# ------------------------------------------------------------------------------------------------------ model
def build_from_config(cfg: DetectionConfig, num_classes: int, freq, *, log: Callable[[str], Any] = print,
                      load_checkpoint: bool = True) -> torch.nn.Module:
    """``build_detector`` with ``cfg.model``, the margin of ``cfg.margin`` (and cosine classifier) switched on,
    and for ``model.classifier_only`` every parameter but ``roi_heads.box_predictor.cls_score`` frozen."""
    from .margins import use_margin
    from .models import build_detector

    kw = model_kwargs(cfg)
    kw["masks"] = _masks(cfg)  # data.masks=false on a maskrcnn_* arch: the same detector without its mask branch
    ckpt = cfg.model.checkpoint if load_checkpoint else None
    if ckpt is not None and not Path(ckpt).is_file():
        raise IIFError(f"config key 'model.checkpoint': {ckpt} is not a file; give a torchvision/iif detector "
                       "checkpoint (e.g. a stage-1 run's last.pt) or model.checkpoint=null.")
    if not load_checkpoint and kw.get("norm") is None and cfg.model.checkpoint is not None:
        kw["norm"] = "frozen_bn"  # the norm the trained model was built with
        if kw.get("trainable_layers") is None:
            kw["trainable_layers"] = 3
    kw.update(_backbone_weights(cfg, load_checkpoint, log))
    model = build_detector(cfg.model.arch, num_classes, checkpoint=ckpt, log=log, **kw)
    mk = margin_kwargs(cfg.margin, cfg.model.cosine_scale)
    if cfg.margin.method != "softmax" or mk["cosine_scale"] is not None:
        use_margin(model, cfg.margin.method, freq if cfg.margin.method != "softmax" else None,
                   **{k: v for k, v in mk.items() if cfg.margin.method != "softmax" or k == "cosine_scale"})
    if cfg.model.fasa:  # virtual RoI features in training (iif.detection.fasa), the instance counts' probabilities
        from .fasa import fasa_params, use_fasa

        use_fasa(model, freq, **fasa_params(cfg.model))
    if cfg.model.classifier_only:
        rh = model.roi_heads  # a cascade (iif.detection.cascade) retrains every stage's classifier
        targets = []
        for head in [rh.box_predictor] + [getattr(rh, a) for a in getattr(rh, "extra_stage_predictors", ())]:
            target = getattr(head, "cls_score", None)
            if target is None:  # a margin wrapper keeps the original predictor inside
                target = next((m.cls_score for m in head.modules() if hasattr(m, "cls_score")), None)
            if target is None:
                raise IIFError(f"model.classifier_only: {type(head).__name__} has no cls_score layer to retrain.")
            targets.append(target)
        for p in model.parameters():
            p.requires_grad_(False)
        for p in (p for target in targets for p in target.parameters()):
            p.requires_grad_(True)
    return model


def _backbone_weights(cfg: DetectionConfig, load: bool, log) -> dict[str, Any]:
    """build_detector keywords for ``model.backbone_weights``: the weights to load (``"pretrained"`` resolved
    to the cached pretraining of the data.root benchmark, built on first use) when ``load``; when rebuilding
    a trained model (det-eval: its checkpoint replaces every tensor) nothing is loaded, but the norm and
    trainable stages default as they did in training."""
    from .models import is_from_scratch
    from .pretrain import resolve_backbone_weights

    bw = cfg.model.backbone_weights
    if is_from_scratch(bw):
        return {}
    if not load:
        return {"backbone_weights": None, "norm": cfg.model.norm or "frozen_bn",
                "trainable_layers": 3 if cfg.model.trainable_layers is None else cfg.model.trainable_layers}
    root = None
    if str(bw).strip() == "pretrained":  # the benchmark folder of the training json (ROOT/annotations/train.json)
        train_json = data_paths(cfg)[0]
        root = train_json.parent.parent if _benchmark_marker(train_json) is not None else None
    return {"backbone_weights": resolve_backbone_weights(bw, arch=cfg.model.arch, data_root=root, log=log)}


def _device(cfg: DetectionConfig, override: str | None = None) -> str:
    """The device name det-train uses: ``auto`` resolved by :func:`iif.runtime.resolve_device` (the one rule),
    a ``cuda`` name refused in det-train's words when there is no CUDA device."""
    from ..runtime import resolve_device

    dev = override or cfg.runtime.device
    if dev == "auto":
        return str(resolve_device(dev))
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise IIFError(f"runtime.device is {dev} but CUDA is not available here; set runtime.device=cpu.")
    return dev


def detection_inputs(cfg: DetectionConfig) -> list[tuple[str, str]]:
    """``(config key, path)`` of what a detection config reads: ``data.root``, the four explicit ``data.*``
    paths and ``model.checkpoint`` (for :func:`iif.outputs.refuse_overlap`; image folders and roots are
    folders nothing may be written into)."""
    d = cfg.data
    items = [("data.root", d.root), ("data.train_json", d.train_json), ("data.train_images", d.train_images),
             ("data.val_json", d.val_json), ("data.val_images", d.val_images),
             ("model.checkpoint", cfg.model.checkpoint)]
    if cfg.model.backbone_weights is not None and os.path.isfile(str(cfg.model.backbone_weights)):
        items.append(("model.backbone_weights", cfg.model.backbone_weights))
    return [(k, str(v)) for k, v in items if v is not None and str(v).strip()]


# ------------------------------------------------------------------------------------------------- evaluation
def evaluate_detections(val_json: Mapping[str, Any], results: Sequence[Mapping[str, Any]], *, masks: bool,
                        score_threshold: float, train_counts: np.ndarray | None) -> dict[str, Any]:
    """Metrics of ``results`` on ``val_json``: LVIS rules (evaluate_lvis, 300 detections per image) when the
    json is LVIS, COCO rules otherwise; TIDE ``dAP_FP``, ``false_positives`` above ``score_threshold`` and
    tail-k AP (k = 5, 10, 20 fewest-training-image categories). Top-level keys are det-bench's row keys.
    APr/c/f follow :func:`iif.detection.evaluation.category_groups` (LVIS letters, else ``train_counts``);
    ``groups`` counts the categories of each group (None when no group is known)."""
    from functools import partial

    from .evaluation import (category_groups, count_false_positives, evaluate_coco, evaluate_lvis, is_lvis, tail_k_ap,
                             tide_errors)

    lvis = is_lvis(val_json)
    # r/c/f: LVIS's letters, else LVIS's rule on the training image counts (as `iif stats`), so a COCO json
    # has AP_r/c/f too.
    groups = category_groups(val_json, train_counts)
    evaluate = evaluate_lvis if lvis else partial(evaluate_coco, groups=groups)
    box = evaluate(val_json, list(results), iou_type="bbox")
    seg = evaluate(val_json, list(results), iou_type="segm") if masks else None
    main = seg if seg is not None else box
    tide = tide_errors(val_json, list(results), iou_type="bbox")
    n_cats = len(val_json["categories"])
    ks = tuple(k for k in (5, 10, 20) if k < n_cats)
    tails = (tail_k_ap(val_json, list(results), ks=ks, iou_type="segm" if masks else "bbox", train_counts=train_counts)
             if ks and train_counts is not None else {})
    fp = count_false_positives(val_json, list(results), score_threshold=score_threshold, iou_type="bbox")

    def num(x):
        return None if x is None or (isinstance(x, float) and not np.isfinite(x)) else float(x)

    out: dict[str, Any] = {k: num(main.get(k)) for k in ("AP", "AP50", "AP75", "APr", "APc", "APf")}
    out.update({"APb": num(box["AP"]), "dAP_FP": num(tide.get("dAP_FP")), "false_positives": int(fp)})
    out["groups"] = None if groups is None else {g: sum(v == g for v in groups.values()) for g in "rcf"}
    out.update({"iou_type": "segm" if seg is not None else "bbox", "rules": "lvis" if lvis else "coco",
                "score_threshold": score_threshold, "num_detections": len(results), "bbox": box, "segm": seg,
                "tide": tide, "tail": tails})
    return json_safe(out)


def _predict_and_evaluate(model, val, val_ann: dict, cfg: DetectionConfig, device: str, train_counts, log,
                          masks: bool | None = None) -> tuple[list[dict], dict]:
    from .engine import predict

    has_mask = bool(getattr(getattr(model, "roi_heads", None), "has_mask", lambda: False)())
    use_masks = has_mask and cfg.eval.masks if masks is None else masks
    t0 = time.perf_counter()
    results = predict(model, val, device=device, batch_size=cfg.eval.batch_size, masks=use_masks,
                      amp=cfg.runtime.amp, num_workers=cfg.runtime.workers)
    log(f"predicted {len(val)} val images in {time.perf_counter() - t0:.1f} s ({len(results)} detections)")
    metrics = evaluate_detections(val_ann, results, masks=use_masks, score_threshold=cfg.eval.score_threshold,
                                  train_counts=train_counts)
    return results, metrics


def format_metrics(metrics: Mapping[str, Any]) -> str:
    """One line of the row keys (``AP 12.3 APr 1.0 ... false_positives 40``)."""
    parts = []
    for k in RESULT_KEYS:
        v = metrics.get(k)
        parts.append(f"{k} {'-' if v is None else (v if isinstance(v, int) else f'{v:.2f}')}")
    return "  ".join(parts)


# -------------------------------------------------------------------------------------------------- training
def train_from_config(cfg: DetectionConfig, out: str | os.PathLike, *, resume: bool = False, force: bool = False,
                      log: Callable[[str], Any] = print, device: str | None = None) -> dict[str, Any]:
    """Train ``cfg`` into the run folder ``out`` and evaluate on val; returns ``{"out_dir", "finished",
    "metrics" (None when stopped early), "history"}``.

    Everything that can be checked (config, data paths, annotations, the model and margin on the training
    counts, the output folder) is checked before the first training step. Under ``torchrun`` rank 0 owns the
    folder; every rank trains (``train_detector``'s DDP) and predicts a share of the val images.
    """
    from ..outputs import check_run_folder, finish_run_folder, refuse_overlap
    from ..runtime.distributed import join_process_group

    cfg = load_detection_config(cfg)  # validated copy
    out = Path(out)
    dev = _device(cfg, device)
    dev_t, info = join_process_group(torch.device(dev))  # iif.runtime: under torchrun, this rank's GPU
    dev = dev if dev_t == torch.device(dev) else str(dev_t)
    paths = data_paths(cfg)  # the data paths exist (cheap), then:
    inputs = detection_inputs(cfg)
    if info.is_main:  # before any work: the folder policy, and no output over what the run reads
        refuse_overlap({"--out": out}, inputs)
        check_run_folder(out, "det-train", force=force and not resume, resume=resume)
    set_threads(check_threads(cfg.runtime.threads, "runtime.threads"))  # iif.resources: clamped to the CPUs
    train, val, val_ann = load_train_and_val(cfg, paths)
    if list(val.category_ids) != list(train.category_ids):
        raise IIFError(f"{paths[2]} and {paths[0]} list different categories; train and val must share the "
                       "categories list (same ids).")
    check_memory(cfg, train, cfg.schedule.batch_size // max(info.world_size, 1) or 1, dev, "training",
                 "schedule.batch_size")
    check_memory(cfg, val, cfg.eval.batch_size, dev, "evaluation", "eval.batch_size")
    freq = train.freq
    torch.manual_seed(cfg.runtime.seed)
    model = build_from_config(cfg, len(train.category_ids), freq, log=log)
    sampler = _sampler(cfg, train)
    sched = _schedule(cfg, train, sampler, log if info.is_main else (lambda line: None))
    h = detection_config_hash(cfg)

    work, created = _open_run_folder(cfg, out, info, h, resume=resume, force=force)
    res = _fit(model, train, cfg, sched, sampler, dev, work, created, resume=resume, log=log, info=info,
               epoch_end=_fasa_adaptation(cfg, val, info, log))
    if info.is_main:
        atomic_write_json(work / "history.json", json_safe(res["history"]))
    if not res["finished"]:
        return {"out_dir": str(work), "finished": False, "metrics": None, "history": res["history"]}
    results, metrics = _predict_and_evaluate(model, val, val_ann, cfg, dev, freq.image_counts, log)
    if info.is_main:
        metrics["config"] = cfg.data.root or str(paths[0])
        metrics["peak_rss_mb"] = res.get("peak_rss_mb")
        atomic_write_json(work / "detections.json", json_safe(results), indent=None)
        atomic_write_json(work / METRICS_FILE, metrics)
        finish_run_folder(work, out, inputs=inputs)  # re-checks ``out`` at the moment of the swap
    if info.distributed:
        from ..runtime.distributed import barrier, cleanup_distributed

        barrier(info)
        cleanup_distributed(info)
    return {"out_dir": str(out), "finished": True, "metrics": metrics, "history": res["history"]}


def _fasa_adaptation(cfg: DetectionConfig, val, info, log):
    """FASA's per-epoch sampling adaptation on the val set (:class:`iif.detection.fasa.FASAAdaptation`) when
    ``model.fasa`` and ``model.fasa_adapt`` are on, else None; RoIs sampled with ``runtime.seed``, the per-rank
    training batch."""
    if not (cfg.model.fasa and cfg.model.fasa_adapt):
        return None
    from .fasa import FASAAdaptation

    return FASAAdaptation(val, batch_size=max(cfg.schedule.batch_size // max(info.world_size, 1), 1),
                          seed=cfg.runtime.seed, log=log)


# ------------------------------------------------------------------------------------------------ evaluation
def parse_margin_spec(spec: str) -> list[str]:
    """``METHOD[:VARIANT_OR_TAU[:BY[:WHEN]]]`` as config overrides: ``iif:raw:image`` (post-hoc raw IIF),
    ``iif:base10:object``, ``logit_adjustment:1.0`` (tau), ``norcal:0.5`` (gamma), ``softmax``. Without WHEN it is
    ``test`` (post-hoc), except for ``softmax``."""
    parts = [p.strip() for p in spec.split(":")]
    if not parts[0] or len(parts) > 4:
        raise IIFError(f"--margin {spec!r} is not METHOD[:VARIANT[:BY[:WHEN]]]; e.g. iif:raw:image or "
                       "logit_adjustment:1.0.")
    method = parts[0]
    items = [f"margin.method={method}"]
    if len(parts) > 1 and parts[1]:
        key = {"logit_adjustment": "tau", "norcal": "gamma"}.get(method, "variant")
        items.append(f"margin.{key}={parts[1]}")
    if len(parts) > 2 and parts[2]:
        items.append(f"margin.by={parts[2]}")
    when = parts[3] if len(parts) > 3 and parts[3] else ("test" if method != "softmax" else "train_and_test")
    items.append(f"margin.when={when}")
    return items


def _find_run(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(config.yaml, checkpoint)`` of a run folder or a checkpoint file inside one."""
    p = Path(path)
    if p.is_dir():
        ckpt, cfg = p / "last.pt", p / CONFIG_FILE
    elif p.is_file():
        ckpt, cfg = p, p.parent / CONFIG_FILE
    else:
        raise IIFError(f"{p} is neither a det-train run folder nor a checkpoint file; give the folder `iif det-train` "
                       "wrote (with config.yaml and last.pt).")
    if not cfg.is_file():
        raise IIFError(f"{cfg.parent} has no {CONFIG_FILE}; det-eval rebuilds the model from the config det-train "
                       "saved beside the checkpoint.")
    if not ckpt.is_file():
        raise IIFError(f"{ckpt} does not exist; the run has not finished an epoch (run det-train --resume).")
    return cfg, ckpt


# Model settings det-eval applies to a trained detector: they change only how it predicts, not its weights.
EVAL_MODEL_KEYS = ("min_size", "max_size", "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_test",
                   "box_detections_per_img", "box_score_thresh", "cosine_scale", "box_nms_thresh", "mask_thresh")
# Settings that only shape training: an override of them in det-eval would be silently ignored, so it is refused.
_TRAINING_ONLY = {"data": ("sampler", "rfs_threshold", "rfs_rounding", "hflip", "masks"),
                  "runtime": ("stop_after_epoch",)}


def _evaluation_model_config(trained: DetectionConfig, cfg: DetectionConfig) -> DetectionConfig:
    """The config det-eval builds the detector from: the trained run's, with the prediction-time model keys
    (:data:`EVAL_MODEL_KEYS`) of ``cfg`` (the run's config plus det-eval's overrides) applied. Any other
    override that differs from the trained run's and that evaluation cannot honour (the architecture, the
    training schedule, the training data's sampling) is refused with the keys named."""
    import dataclasses

    refused = []
    for section in ("model", "schedule", "data", "runtime"):
        old, new = getattr(trained, section), getattr(cfg, section)
        for f in dataclasses.fields(old):
            if getattr(old, f.name) == getattr(new, f.name):
                continue
            if section == "model" and f.name not in EVAL_MODEL_KEYS:
                refused.append(f"{section}.{f.name}")
            elif section == "schedule" or f.name in _TRAINING_ONLY.get(section, ()):
                refused.append(f"{section}.{f.name}")
    if refused:
        raise IIFError(f"det-eval cannot apply {', '.join(refused)} to a trained detector (they shape the model's "
                       f"weights or its training); drop them, or train a run with them (iif det-train). det-eval "
                       f"applies model.{', model.'.join(EVAL_MODEL_KEYS)}, the margin, data.*, eval.* and runtime.*.")
    return dataclasses.replace(trained, model=dataclasses.replace(
        trained.model, **{k: getattr(cfg.model, k) for k in EVAL_MODEL_KEYS if k != "cosine_scale"}))


def evaluate_run(run: str | os.PathLike, *, data: str | os.PathLike | None = None, margin: str | None = None,
                 overrides: Sequence[str] = (), out: str | os.PathLike | None = None, device: str | None = None,
                 detections_out: str | os.PathLike | None = None,
                 log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Rebuild the detector of a det-train run (its ``config.yaml``; weights from ``last.pt`` or the given
    checkpoint, loaded with ``weights_only=True``), optionally switch its margin (``margin="iif:raw:image"``:
    post-hoc) or apply ``overrides``, predict the val set (``data``: another data folder) and evaluate.
    Writes ``out`` (the metrics json) and ``detections_out`` (the result dicts) atomically when given; returns
    the metrics (det-bench row keys first)."""
    from ..runtime.checkpoint import load_checkpoint
    from .margins import use_margin

    cfg_path, ckpt_path = _find_run(run)
    trained = load_detection_config(cfg_path)
    extra = list(overrides)
    if data is not None:
        extra = [f"data.root={data}", "data.train_json=null", "data.train_images=null", "data.val_json=null",
                 "data.val_images=null"] + extra
    cfg = load_detection_config(trained, extra + (parse_margin_spec(margin) if margin else []))
    built = _evaluation_model_config(trained, cfg)
    for flag, target in (("--out", out), ("--detections", detections_out)):
        if target is not None and Path(target).is_dir():
            raise IIFError(f"{flag} {target} is a folder; give a file name for the json (e.g. results.json).")
    from ..outputs import refuse_overlap

    # Before any work: neither json may overwrite what this evaluation reads (the run's checkpoint and config,
    # the trained and evaluated data, the init checkpoint); new files inside the run folder are fine.
    refuse_overlap({"--out": out, "--detections": detections_out},
                   [("the checkpoint", ckpt_path), ("the run's config", cfg_path), ("--data", data)]
                   + detection_inputs(trained) + detection_inputs(cfg),
                   run_folders={"the run folder": cfg_path.parent})
    dev = _device(cfg, device)
    set_threads(check_threads(cfg.runtime.threads, "runtime.threads"))  # iif.resources: clamped to the CPUs
    paths = data_paths(cfg)
    problems = []  # the problems of both jsons in one message, as det-train
    try:
        val, val_ann = load_val_set(cfg, paths)
    except IIFError as exc:
        problems.append(str(exc).rstrip("."))
    try:
        train = load_train_set(trained if data is None else cfg, paths)
    except IIFError as exc:
        problems.append(str(exc).rstrip("."))
    if problems:
        raise IIFError(" || ".join(problems))
    if list(val.category_ids) != list(train.category_ids):
        raise IIFError(f"{paths[2]} and {paths[0]} list different categories; train and val must share them.")
    check_memory(built, val, cfg.eval.batch_size, dev, "evaluation", "eval.batch_size")
    freq = train.freq
    model = build_from_config(built, len(val.category_ids), freq, log=log, load_checkpoint=False)
    state = load_checkpoint(ckpt_path, map_location="cpu")
    weights = state.get("model", state) if isinstance(state, dict) else None
    if not isinstance(weights, dict):
        raise IIFError(f"{ckpt_path} holds no model state dict; give det-train's last.pt.")
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise IIFError(f"{ckpt_path} does not fit the model of {cfg_path} ({first}); give the checkpoint of that "
                       "run.") from None
    if cfg.margin != trained.margin or cfg.model.cosine_scale != trained.model.cosine_scale:
        mk = margin_kwargs(cfg.margin, None)
        if cfg.margin.method == "softmax":
            use_margin(model, "softmax")
        else:
            use_margin(model, cfg.margin.method, freq, **mk)
    results, metrics = _predict_and_evaluate(model, val, val_ann, cfg, dev, freq.image_counts, log)
    if detections_out is not None:
        atomic_write_json(detections_out, json_safe(results), indent=None)
    metrics["run"] = str(run)
    metrics["checkpoint"] = str(ckpt_path)
    metrics["margin"] = {k: v for k, v in vars(copy.copy(cfg.margin)).items()}
    if out is not None:
        atomic_write_json(out, metrics)
    return metrics
