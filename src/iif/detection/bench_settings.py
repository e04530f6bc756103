"""``iif det-bench``'s settings: the preset (a :data:`iif.detection.DETECTION_PRESETS` entry, read from the
packaged ``bench_detection.yaml`` by :mod:`iif.detection.bench_presets`, or a det-train config) with
``KEY=VALUE`` overrides, their checks (one line before any work), the schedule scaled to the data, and what a
generator-2 benchmark changes (:data:`V2_DEFAULTS`). Runs: :mod:`iif.detection.bench`."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..errors import IIFError
from .archs import ARCHS, has_masks, has_resnet_backbone
from .bench_presets import SCHEDULE_KEYS as _SCHEDULE_KEYS
from .bench_presets import config_preset

__all__ = ["DetBenchSettings", "quick_settings", "bench_override_keys", "config_preset", "V2_DEFAULTS",
           "DEFAULT_BOOTSTRAP", "DATA_KEYS"]

#: det-train's four data path keys, which det-bench takes too (split off before the other overrides).
DATA_KEYS = ("data.train_json", "data.train_images", "data.val_json", "data.val_images")


@dataclass
class DetBenchSettings:
    """Everything a det-bench run depends on (written to ``settings.json``)."""

    preset: str = "cpu-quick"
    arch: str = ""
    model: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    max_train_images: int | None = None  # a prefix (json order) of the training set, None: all
    max_val_images: int | None = None
    score_threshold: float = 0.3  # for the false-positive count and the drawn examples
    hflip: bool | None = None  # None: the benchmark's recommendation (off: mirrored digits are other glyphs)
    batch_size_eval: int = 8
    threads: int | None = None  # torch CPU threads (None: torch's default)
    seeds: int = 1
    quick: bool = False
    device: str = "cpu"
    # Paired-bootstrap resamples of the test images for the intervals (0: none). None: 20, or 0 with --quick (its
    # time budget: each resample costs rows x seeds evaluations of AP and TIDE, docs/detection.md "Uncertainty").
    bootstrap: int | None = None
    # The offline benchmark's generator version (1 or 2; issue 15). None: DEFAULT_GENERATOR for the cached
    # benchmark, the folder's own version for --data; resolved (and recorded) before any training. With 2 the
    # reported rows are scored on the test split (val is kept for choosing) and model.backbone_weights
    # defaults to "pretrained".
    generator: int | None = None
    # Seeds trained side by side in this many processes (each with ``threads`` torch threads); 1: one after
    # the other in this process. Results do not depend on it (tested), so it is left out of the resume key.
    workers: int = 1
    # Repeat-factor sampling of the training images (LVIS's RFS, iif.detection.sampling) for every detector of
    # the run: the threshold t (None: plain sampling) and the rounding ("stochastic": detectron2, r copies on
    # average; "ceil": mmdetection / the paper's authors). None: the benchmark's default (V2_DEFAULTS).
    rfs_threshold: float | None = None
    rfs_rounding: str = "stochastic"
    # Epochs of the cached balanced pretraining that ``model.backbone_weights=pretrained`` builds
    # (iif.detection.pretrain); None: PRETRAIN_DEFAULTS (4). The v2 numbers recorded before 2026-12-06 09:30 UTC
    # used 2 (pretrain_epochs=2 reproduces them).
    pretrain_epochs: int | None = None


def quick_settings(preset: str = "cpu-quick", overrides: Sequence[str] = ()) -> DetBenchSettings:
    """The settings of a preset (:data:`iif.detection.DETECTION_PRESETS`) with ``key=value`` overrides
    (``train.epochs=2``, ``model.min_size=96``, ``max_train_images=500``, ``score_threshold=0.5``)."""
    from .models import DETECTION_PRESETS

    p = DETECTION_PRESETS.get(preset) or config_preset(preset)
    s = DetBenchSettings(preset=preset, arch=p["arch"], model=copy.deepcopy(dict(p["model"])),
                         train=copy.deepcopy(dict(p["train"])), threads=p.get("threads"), hflip=p.get("hflip"),
                         batch_size_eval=int(p.get("predict", {}).get("batch_size", 8)))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise IIFError(f"override {item!r} is not KEY=VALUE; write e.g. train.epochs=2.")
        value = _parse_value(raw)
        section, _, name = key.partition(".")
        valid = bench_override_keys()
        if key not in valid:
            import difflib

            every = valid + list(DATA_KEYS)  # the data keys are taken apart before this (split_data_overrides)
            close = difflib.get_close_matches(key, every, n=1, cutoff=0.6)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise IIFError(f"unknown det-bench override {key!r}.{hint} Valid keys: {', '.join(every)}.")
        if name:
            getattr(s, section)[name] = value
        else:
            setattr(s, key, value)
    given = {str(o).partition("=")[0] for o in overrides}
    if (ARCHS.get(s.arch, ("",))[0] == "yolov3" and ARCHS.get(p["arch"], ("",))[0] != "yolov3"
            and "model.anchor_sizes" not in given):
        # An R-CNN preset's anchors (one size per FPN level) are not YOLOv3's (3 levels x 3 sizes): keep its own.
        s.model.pop("anchor_sizes", None)
    _check_settings(s)
    return s


# det-bench's own top-level settings, and the train_detector keywords its ``train.`` keys may set (besides the
# schedule keys of a det-train config).
_TOP_KEYS = ("generator", "arch", "max_train_images", "max_val_images", "score_threshold", "hflip", "batch_size_eval", "threads",
             "bootstrap", "workers", "rfs_threshold", "rfs_rounding", "pretrain_epochs")
_TRAIN_EXTRA = ("amp", "num_workers", "log_every", "warmup_fraction", "milestone_fractions")
# build_detector keywords det-bench does not take as model.KEY: masks follows the arch (maskrcnn_* vs
# fasterrcnn_*), log is the bench's own.
_MODEL_NOT_KEYS = ("masks", "log")


def bench_override_keys() -> list[str]:
    """Every KEY of ``iif det-bench KEY=VALUE``: ``model.<build_detector keyword>``, ``train.<schedule key>``
    (the train_detector keywords of a det-train schedule, plus amp, num_workers, log_every) and the top-level
    settings."""
    import inspect

    from .models import build_detector

    model = [n for n, prm in inspect.signature(build_detector).parameters.items()
             if prm.kind is inspect.Parameter.KEYWORD_ONLY and n not in _MODEL_NOT_KEYS]
    return ([f"model.{n}" for n in model] + [f"train.{n}" for n in _SCHEDULE_KEYS + _TRAIN_EXTRA]
            + list(_TOP_KEYS))


def _check_values(s: DetBenchSettings) -> None:
    """The model and train values range-checked by det-train's rules (:func:`validate_detection_config`), with
    the message naming det-bench's key (``train.lr``, not ``schedule.lr``)."""
    import dataclasses

    from .config import DetectionConfig, validate_detection_config

    cfg = DetectionConfig()
    t = dict(s.train)
    runtime = {"amp": t.pop("amp", cfg.runtime.amp), "workers": t.pop("num_workers", cfg.runtime.workers),
               "log_every": t.pop("log_every", cfg.runtime.log_every)}
    milestones = t.pop("milestones", ())
    try:
        cfg = dataclasses.replace(
            cfg, model=dataclasses.replace(cfg.model, arch=s.arch, **s.model),
            schedule=dataclasses.replace(cfg.schedule, milestones=[], **t),
            runtime=dataclasses.replace(cfg.runtime, **runtime))
        validate_detection_config(cfg)
        if not isinstance(milestones, (list, tuple)) or not all(
                isinstance(m, int) and not isinstance(m, bool) and m >= 1 for m in milestones):
            raise IIFError(f"config key 'schedule.milestones' must list epochs >= 1; got {milestones!r}. Set e.g. "
                           "schedule.milestones=[2].")
    except IIFError as exc:
        text = str(exc).replace("model.arch", "arch").replace("schedule.", "train.").replace(
            "runtime.amp", "train.amp").replace("runtime.workers", "train.num_workers").replace(
            "runtime.log_every", "train.log_every").replace("config key", "det-bench setting")
        raise IIFError(text) from None
    if s.hflip is not None and not isinstance(s.hflip, bool):
        raise IIFError(f"det-bench setting hflip must be true, false or null; got {s.hflip!r}.")


def _scale_schedule(s: DetBenchSettings, num_images: int, log) -> dict[str, Any]:
    """Resolve the preset's schedule on ``num_images`` training images (det-train's rule,
    :func:`iif.detection.config.scaled_schedule`) into ``s.train``; logs the warm-up warning."""
    from .config import scaled_schedule

    t = s.train
    scales = "warmup_fraction" in t or "milestone_fractions" in t
    sched = scaled_schedule(epochs=t["epochs"], batch_size=t.get("batch_size", 2), num_images=num_images,
                            warmup_iters=t.get("warmup_iters", 0), milestones=t.get("milestones", ()),
                            warmup_fraction=t.pop("warmup_fraction", None),
                            milestone_fractions=t.pop("milestone_fractions", None))
    t["warmup_iters"], t["milestones"] = sched["warmup_iters"], tuple(sched["milestones"])
    if sched["warning"]:
        log(f"det-bench: {sched['warning']}")
    if scales:
        log(f"det-bench: schedule scaled to {num_images} training images ({sched['total_iters']} iterations): "
            f"warm-up {sched['warmup_iters']} iterations, milestones {sched['milestones']}")
    return sched


def _parse_value(raw: str) -> Any:
    import yaml

    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    if isinstance(value, list):
        value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
    return value


def _check_settings(s: DetBenchSettings) -> None:
    pe = s.pretrain_epochs
    if pe is not None and (not isinstance(pe, int) or isinstance(pe, bool) or pe < 1):
        raise IIFError(f"pretrain_epochs must be a whole number >= 1 (epochs of the cached balanced pretraining) or "
                       f"null for the default; got {pe!r}.")
    for key in ("max_train_images", "max_val_images"):
        v = getattr(s, key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise IIFError(f"det-bench setting {key} must be a whole number >= 1 or null; got {v!r}.")
    if not isinstance(s.score_threshold, (int, float)) or not 0 <= s.score_threshold <= 1:
        raise IIFError(f"det-bench setting score_threshold must be in [0, 1]; got {s.score_threshold!r}.")
    if not isinstance(s.batch_size_eval, int) or s.batch_size_eval < 1:
        raise IIFError(f"det-bench setting batch_size_eval must be a whole number >= 1; got {s.batch_size_eval!r}.")
    if s.bootstrap is not None and (not isinstance(s.bootstrap, int) or isinstance(s.bootstrap, bool) or s.bootstrap < 0):
        raise IIFError(f"det-bench setting bootstrap (resamples for the intervals) must be a whole number >= 0 "
                       f"(0: no intervals); got {s.bootstrap!r}.")
    if not isinstance(s.seeds, int) or s.seeds < 1:
        raise IIFError(f"--seeds must be >= 1; got {s.seeds!r}.")
    if s.rfs_threshold is not None and (isinstance(s.rfs_threshold, bool) or not isinstance(s.rfs_threshold, (int, float))
                                        or not 0 < s.rfs_threshold <= 1):
        raise IIFError(f"det-bench setting rfs_threshold must be in (0, 1] (LVIS uses 0.001) or null for plain "
                       f"sampling; got {s.rfs_threshold!r}.")
    if s.rfs_rounding not in ("stochastic", "ceil"):
        raise IIFError(f"det-bench setting rfs_rounding must be stochastic (detectron2) or ceil (the paper's "
                       f"authors); got {s.rfs_rounding!r}.")
    if not isinstance(s.workers, int) or isinstance(s.workers, bool) or s.workers < 1:
        raise IIFError(f"det-bench setting workers (seeds run side by side) must be a whole number >= 1; "
                       f"got {s.workers!r}. Write e.g. workers=2 with threads=1.")
    from .synthetic import GENERATORS

    if s.generator is not None and (isinstance(s.generator, bool) or s.generator not in GENERATORS):
        raise IIFError(f"det-bench setting generator (the offline benchmark's version) must be one of "
                       f"{', '.join(map(str, GENERATORS))}; got {s.generator!r}. Write e.g. generator=2.")
    epochs = s.train.get("epochs")
    if not isinstance(epochs, int) or epochs < 1:
        raise IIFError(f"det-bench setting train.epochs must be a whole number >= 1; got {epochs!r}.")
    _check_values(s)


#: Bootstrap resamples of a full det-bench run when ``bootstrap`` is not given (``--quick``: none).
DEFAULT_BOOTSTRAP = 20


# What a generator-2 benchmark changes in the preset unless the command sets the key itself (issue 15; v1 keeps
# the preset as it is, so every number recorded on v1 reproduces). Why each one: docs/detection.md, "The v2
# benchmark in det-bench".
V2_DEFAULTS: dict[str, Any] = {
    # Boxes: the margins act on the box classifier, and the masks of thin digit glyphs at 128 px are too coarse
    # for mask AP to show it (mask AP_r 2.3 vs box AP_r 5.5 on val); no mask head also makes each row cheap.
    "arch": "fasterrcnn_r10_fpn",
    "model.backbone_weights": "pretrained",  # the cached balanced pretraining (iif.detection.pretrain)
    "model.class_agnostic_mask": True,  # only with a maskrcnn_* arch: a rare category's own mask channel is untrained
    "rfs_threshold": 0.2,  # repeat-factor sampling: images of the 1-10-image categories 3-20x per epoch
}


def _apply_v2_defaults(s: DetBenchSettings, given: set[str], log) -> None:
    for key, value in V2_DEFAULTS.items():
        if key in given:
            continue
        if key == "arch" and s.preset != "cpu-quick":  # a preset naming its own detector keeps it
            continue
        if key == "model.class_agnostic_mask" and not has_masks(s.arch):
            continue
        if key == "model.backbone_weights" and not has_resnet_backbone(s.arch):  # SSD, YOLOv3: their own start
            continue
        section, _, name = key.partition(".")
        if name:
            if getattr(s, section).get(name) is not None:
                continue
            getattr(s, section)[name] = value
        else:
            setattr(s, key, value)
        log(f"det-bench: generator-2 benchmark: {key}={value} (the v2 default; set {key}=... to change it)")
