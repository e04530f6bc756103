"""``iif det-bench``: IIF against the additive margins on one long-tailed instance-segmentation set.

One softmax Mask R-CNN is trained per seed; the post-hoc rows switch its box classifier with
``use_margin(..., when="test")`` and are scored from one cached backbone/RPN pass (:mod:`.posthoc`);
unless ``quick``, end-to-end IIF (raw IIF, base10 IOF), Balanced Softmax and the LA loss each train a
detector of their own with the same schedule and seed. Every row is scored LVIS-style (mask and box AP,
AP_r/c/f), with TIDE's ΔAP_FP and a false-positive count (:mod:`.evaluation`).

The data is the user's (``--data``: benchmark, COCO or LVIS layout, and/or det-train's keys
``data.train_json=... data.train_images=... data.val_json=... data.val_images=...`` for any other file names)
or, by default, the offline benchmark of
:func:`iif.detection.make_benchmark`, generated once into the cache folder (``$IIF_CACHE_DIR`` or
``~/.cache/iif``) and reused.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .._version import __version__
from ..errors import IIFError
from ..outputs import OutputFolder, atomic_write_json, atomic_write_text, json_safe

__all__ = ["RowSpec", "POSTHOC_ROWS", "E2E_ROWS", "DetBenchSettings", "run_det_bench", "default_benchmark_dir",
           "quick_settings"]


@dataclass(frozen=True)
class RowSpec:
    """One table row: a margin method, how it is applied, and with which weights."""

    method: str
    strategy: str  # "posthoc" (switched on the softmax detector at test time) or "e2e" (trained with it)
    variant: str | None = None
    by: str | None = None
    when: str = "test"
    background_margin: bool = False
    tau: float | None = None  # logit adjustment's temperature (tuned rows; None: use_margin's default)
    gamma: float | None = None  # NorCal's exponent (tuned rows; None: use_margin's default)

    def margin_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"when": self.when}
        if self.tau is not None:
            kw["tau"] = self.tau
        if self.gamma is not None:
            kw["gamma"] = self.gamma
        if self.variant is not None and self.method == "iif":
            kw["variant"] = self.variant
        if self.by is not None:
            kw["by"] = self.by
        if self.background_margin:
            kw["background_margin"] = True
        return kw

    def table_variant(self) -> str | None:
        """``variant`` as it appears in ``results.json``: the IIF variant, or for the additive methods
        whether they got a background prior."""
        if self.method == "iif":
            return self.variant
        if self.strategy == "posthoc_tuned":  # the value chosen on val, so the table shows it
            if self.tau is not None:
                return f"tau={self.tau:g}"
            if self.gamma is not None:
                return f"gamma={self.gamma:g}"
        if self.method in ("logit_adjustment", "balanced_softmax"):
            return "background_margin" if self.background_margin else None
        return None


POSTHOC_ROWS: tuple[RowSpec, ...] = (
    RowSpec("softmax", "posthoc"),
    *(RowSpec("iif", "posthoc", v, by) for by in ("image", "object") for v in ("raw", "smooth", "base10")),
    RowSpec("logit_adjustment", "posthoc"),
    RowSpec("logit_adjustment", "posthoc", background_margin=True),
)

def _tune_grids() -> dict[str, tuple[RowSpec, ...]]:
    from ..weights import VARIANTS

    return {
        "logit_adjustment": tuple(RowSpec("logit_adjustment", "posthoc_tuned", tau=t)
                                  for t in (0.25, 0.5, 0.75, 1.0, 1.25, 1.5)),
        "norcal": tuple(RowSpec("norcal", "posthoc_tuned", gamma=g) for g in (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)),
        "iif": tuple(RowSpec("iif", "posthoc_tuned", v, by) for by in ("image", "object") for v in VARIANTS),
    }


# Tuned rows (issue 15): per method, the candidates the val split chooses among by AP (mask AP; box AP when the
# detector has no mask head), the chosen one then scored once on the reported (test) split. Only on data with a
# val split distinct from the reported one (a generator-2 benchmark). use_margin has no IIF exponent, so IIF's
# grid is its variant (Table III) and count (image / object); a candidate use_margin refuses is left out.
TUNE_GRIDS: dict[str, tuple[RowSpec, ...]] = _tune_grids()


E2E_ROWS: tuple[RowSpec, ...] = (
    RowSpec("iif", "e2e", "raw", "image", when="train_and_test"),
    RowSpec("iif", "e2e", "base10", "object", when="train_and_test"),
    RowSpec("balanced_softmax", "e2e", when="train"),
    RowSpec("logit_adjustment", "e2e", when="train"),
    RowSpec("seesaw", "e2e", when="train"),  # Table XVI's strongest peer (Wang et al. 2021), a training loss
)


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
    _check_settings(s)
    return s


# det-bench's own top-level settings, and the train_detector keywords its ``train.`` keys may set (besides the
# schedule keys of a det-train config).
_TOP_KEYS = ("generator", "arch", "max_train_images", "max_val_images", "score_threshold", "hflip", "batch_size_eval", "threads",
             "bootstrap", "workers", "rfs_threshold", "rfs_rounding")
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


def _check_memory(s: DetBenchSettings, d, device: str) -> None:
    """Refuse model sizes whose batch cannot fit in memory (:func:`iif.detection.models.check_input_memory`),
    for training and evaluation, before any detector is built."""
    from .models import check_input_memory
    from .runs import _image_sizes

    m = s.model
    kw = {k: m[k] for k in ("fpn_channels", "returned_layers") if k in m}
    for ds, batch, what, key in ((d.train, s.train.get("batch_size", 2), "training", "train.batch_size"),
                                 (d.val, s.batch_size_eval, "evaluation", "batch_size_eval")):
        check_input_memory(_image_sizes(ds), arch=s.arch, min_size=m.get("min_size", 800),
                           max_size=m.get("max_size", 1333), batch_size=int(batch), device=device, what=what,
                           batch_key=key, **kw)


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


# A det-train config's schedule keys that train_detector takes as they are.
_SCHEDULE_KEYS = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "warmup_iters", "warmup_factor",
                  "milestones", "gamma", "clip_grad_norm")


def config_preset(name: str) -> dict[str, Any]:
    """A det-train config (packaged short name such as ``det_folder``, or a YAML path) as a det-bench preset:
    its ``model`` section, its ``schedule`` (with ``warmup_fraction`` / ``milestone_fractions``, resolved on the
    data by :func:`iif.detection.config.scaled_schedule`), ``data.hflip``, ``runtime.threads``/``amp`` and
    ``eval.batch_size``.
    Its margin and sampler are not used: det-bench trains its own rows with the random sampler."""
    from .config import load_detection_config, model_kwargs
    from .models import DETECTION_PRESETS

    try:
        cfg = load_detection_config(name)
    except IIFError as exc:
        raise IIFError(f"unknown det-bench preset {name!r} ({exc}); choose one of {sorted(DETECTION_PRESETS)} or a "
                       "det-train config such as det_folder (`iif det-train --list`).") from None
    sc = cfg.schedule
    train = {k: getattr(sc, k) for k in _SCHEDULE_KEYS}
    train["milestones"] = tuple(train["milestones"])
    train["amp"] = cfg.runtime.amp
    for key in ("warmup_fraction", "milestone_fractions"):
        if getattr(sc, key) is not None:
            train[key] = getattr(sc, key)
    return {"arch": cfg.model.arch, "threads": cfg.runtime.threads, "model": model_kwargs(cfg), "train": train,
            "hflip": cfg.data.hflip, "predict": {"batch_size": cfg.eval.batch_size}}


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


def default_benchmark_dir(seed: int = 0, generator: int | None = None) -> Path:
    """Where the default offline benchmark of generator version ``generator`` (None:
    :data:`iif.detection.synthetic.DEFAULT_GENERATOR`) is generated once and reused: ``det-data/v1-seed0``,
    ``det-data/v2-seed0`` under the cache (the v1 path is the one every recorded run used)."""
    from .synthetic import DEFAULT_GENERATOR

    version = DEFAULT_GENERATOR if generator is None else int(generator)
    root = Path(os.environ.get("IIF_CACHE_DIR") or Path.home() / ".cache" / "iif")
    return root / "det-data" / f"v{version}-seed{seed}"


def _default_data(log: Callable[[str], Any], generator: int | None = None) -> Path:
    from .synthetic import DEFAULT_GENERATOR, make_benchmark, validate_benchmark

    generator = DEFAULT_GENERATOR if generator is None else generator
    path = default_benchmark_dir(generator=generator)
    if (path / "BENCHMARK.json").is_file():
        try:
            validate_benchmark(path, generator=generator)
            return path
        except IIFError as exc:
            log(f"det-bench: regenerating the cached benchmark at {path} ({exc})")
    log(f"det-bench: generating the offline benchmark (generator {generator}) into {path} (once; about 15 s for "
        "version 1, longer for version 2)")
    path.parent.mkdir(parents=True, exist_ok=True)
    make_benchmark(path, seed=0, force=path.exists(), generator=generator)
    return path


@dataclass
class _Data:
    root: Path
    train: Any
    val: Any
    val_json: dict
    benchmark: dict | None
    paths: tuple = ()  # (train_json, train_images, val_json, val_images) as read
    # The split ``val``/``val_json`` hold, which the rows are scored on: "test" for a generator-2 benchmark
    # (its val split is for choosing), else "val". ``tune_paths``: (val_json, val_images) of a generator-2
    # benchmark, kept for rows tuned on val and reported on test; () otherwise.
    eval_split: str = "val"
    tune_paths: tuple = ()
    # The val split of ``tune_paths`` as (dataset, annotation json), for the tuned rows; None without one.
    tune: Any = None


DATA_KEYS = ("data.train_json", "data.train_images", "data.val_json", "data.val_images")


def split_data_overrides(overrides: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """``(paths, rest)``: the ``data.train_json=...``-style overrides (det-train's config keys, so one set of
    paths serves both commands) as ``{"train_json": ...}``, and every other override in its order."""
    paths: dict[str, str] = {}
    rest: list[str] = []
    for item in overrides:
        key, sep, value = str(item).partition("=")
        if sep and key.startswith("data."):
            if key not in DATA_KEYS:
                raise IIFError(f"unknown det-bench override {key!r}; the data keys are {', '.join(DATA_KEYS)} "
                               "(or --data FOLDER).")
            paths[key[len("data."):]] = value
        else:
            rest.append(item)
    return paths, rest


def _data_paths(data: str | os.PathLike | None, paths: dict[str, str], log,
                generator: int | None = None) -> tuple[Path | None, tuple[Path, ...]]:
    """``(root, (train_json, train_images, val_json, val_images))``: det-train's rules
    (:func:`iif.detection.runs.data_paths`): the explicit ``data.*`` paths, any missing one from the ``--data``
    folder's layout; without either, the offline benchmark of generator version ``generator``."""
    from .config import load_detection_config
    from .runs import data_paths

    if data is None and not paths:
        root = _default_data(log, generator)
    else:
        root = Path(data) if data is not None else None
    cfg = load_detection_config({"data": {"root": None if root is None else str(root), **paths}})
    return root, data_paths(cfg)


def _benchmark_version(bench: dict | None, train_json: Path, generator: int | None) -> int | None:
    """The generator version of the benchmark the data belongs to (None: not an ``iif det-data`` folder).
    ``generator`` given and different (or given for data that is no benchmark) is refused in one line naming
    the fix (:func:`iif.detection.synthetic.validate_benchmark`'s message), before anything is trained."""
    from .synthetic import validate_benchmark

    root = Path(train_json).parent.parent
    if bench is None:
        if generator is not None:
            raise IIFError(f"det-bench setting generator={generator} names a version of the offline benchmark, but "
                           f"the data ({train_json}) is not an `iif det-data` folder; leave generator out for "
                           "other data, or write one with `iif det-data --generator "
                           f"{generator} --out DIR` and pass --data DIR.")
        return None
    version = bench.get("generator_version")
    if generator is not None and version != generator:
        validate_benchmark(root, generator=generator)  # raises: the version check comes before any other
        raise IIFError(f"{root} was written by benchmark generator version {version}, version {generator} is "
                       f"needed here; write one with `iif det-data --generator {generator} --out NEW_DIR`.")
    return version if isinstance(version, int) and not isinstance(version, bool) else None


def _load_data(data: str | os.PathLike | None, s: DetBenchSettings, log, paths: dict[str, str] | None = None) -> _Data:
    from .data import covering_subset, load_detection_dataset, restrict_annotations
    from .runs import _benchmark_marker

    paths = dict(paths or {})
    root, (train_json, train_images, val_json, val_images) = _data_paths(data, paths, log, s.generator)
    bench = _benchmark_marker(train_json)  # ROOT/BENCHMARK.json of an `iif det-data` folder
    version = _benchmark_version(bench, train_json, s.generator)
    if s.generator is None:
        s.generator = version  # recorded in settings.json (None: not a benchmark)
    eval_split, tune_paths = "val", ()
    if version == 2 and not ({"val_json", "val_images"} & set(paths)):
        # A v2 benchmark is reported on its test split; val stays available for choosing (tuned rows).
        from .data import resolve_detection_data

        tune_paths = (val_json, val_images)
        _, _, val_json, val_images = resolve_detection_data(Path(train_json).parent.parent, eval_split="test")
        eval_split = "test"
        log(f"det-bench: generator-2 benchmark: rows scored on the test split ({val_json}); val kept for choosing")
    if root is None:
        root = Path(train_json)  # what settings.json and report.md name as the data
    hflip = s.hflip
    if hflip is None:
        hflip = bool((bench or {}).get("recommended", {}).get("hflip", True))
    masks = not s.arch.startswith("fasterrcnn")
    train = load_detection_dataset(train_json, train_images, train=True, masks=masks, hflip=hflip)
    val = load_detection_dataset(val_json, val_images, train=False, masks=masks, hflip=False)
    val_ann = json.loads(Path(val_json).read_text())
    if s.max_train_images is not None and s.max_train_images < len(train):
        train = covering_subset(train, s.max_train_images)
    if s.max_val_images is not None and s.max_val_images < len(val):
        keep = set(val.image_ids[: s.max_val_images])
        val_ann = restrict_annotations(val_ann, keep)
        val = load_detection_dataset(val_ann, val_images, train=False, masks=masks, hflip=False)
    tune = None
    if tune_paths:  # the val split the tuned rows choose on (max_val_images caps it too)
        tune_ann = json.loads(Path(tune_paths[0]).read_text())
        if s.max_val_images is not None:
            keep = {im["id"] for im in tune_ann["images"][: s.max_val_images]}
            tune_ann = restrict_annotations(tune_ann, keep)
        tune = (load_detection_dataset(tune_ann, tune_paths[1], train=False, masks=masks, hflip=False), tune_ann)
    return _Data(root, train, val, val_ann, bench, (train_json, train_images, val_json, val_images), eval_split,
                 tune_paths, tune)


def _freq(train):
    return train.freq


def _category_ids(val) -> list[int]:
    return list(val.category_ids)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _evaluate(val_json: dict, results: list[dict], masks: bool, score_threshold: float,
              train_counts: np.ndarray) -> dict[str, Any]:
    """det-train's evaluation (LVIS rules for LVIS json, COCO rules otherwise), plus false positives by
    LVIS frequency group where the json has groups."""
    from .evaluation import category_groups, false_positives_by_group
    from .runs import evaluate_detections

    ev = evaluate_detections(val_json, results, masks=masks, score_threshold=score_threshold,
                             train_counts=train_counts)
    groups = category_groups(val_json, train_counts)  # LVIS letters, else LVIS's rule on the training counts
    ev["false_positives_by_group"] = (false_positives_by_group(val_json, results, score_threshold=score_threshold,
                                                               iou_type="bbox", groups=groups) if groups else {})
    return ev


def _row(spec: RowSpec, ev: dict) -> dict[str, Any]:
    return {"method": spec.method, "strategy": spec.strategy, "variant": spec.table_variant(), "by": spec.by,
            **{k: ev[k] for k in ("AP", "AP50", "AP75", "APr", "APc", "APf", "APb", "dAP_FP", "false_positives")}}


def _classifier_norms(model) -> np.ndarray:
    """L2 norm of each foreground category's row of the box classifier (background row dropped)."""
    w = model.roi_heads.box_predictor.cls_score.weight.detach().float().cpu()
    return w.norm(dim=1).numpy()[1:]


class _SkipRow(Exception):
    """A row whose margin cannot be built from these counts (e.g. raw IIF with an empty category)."""


def _model_kwargs(s: DetBenchSettings, data: _Data, log) -> dict[str, Any]:
    """``s.model`` for build_detector, with ``backbone_weights: pretrained`` resolved to the cached pretraining
    of the benchmark being run (:func:`iif.detection.pretrain.resolve_backbone_weights`; built on first use)."""
    kw = dict(s.model)
    if kw.get("backbone_weights") is not None:
        from .pretrain import resolve_backbone_weights

        root = Path(data.paths[0]).parent.parent if data.benchmark is not None and data.paths else None
        kw["backbone_weights"] = resolve_backbone_weights(kw["backbone_weights"], arch=s.arch, data_root=root, log=log)
    return kw


def _train(s: DetBenchSettings, data: _Data, spec: RowSpec | None, seed: int, device: str, log,
           store=None) -> tuple[Any, dict]:
    """Build and train one detector; with a :class:`iif.resume.ResumeStore`, a detector an
    interrupted run of the same settings kept is loaded instead of trained, and a new one is kept."""
    from .engine import train_detector
    from .margins import use_margin
    from .models import build_detector

    torch.manual_seed(seed)
    model = build_detector(s.arch, len(data.val.category_ids), **_model_kwargs(s, data, log))
    if spec is not None and spec.method != "softmax":
        try:
            use_margin(model, spec.method, _freq(data.train), **spec.margin_kwargs())
        except IIFError as exc:  # checked before any training: the row cannot run on these counts
            raise _SkipRow(str(exc)) from None
    name = "softmax" if spec is None else f"{spec.method} {spec.table_variant() or ''} {spec.by or ''}".strip()
    key = "softmax" if spec is None else _short(spec)
    kept = store.load_model(model, seed, key) if store is not None else None
    if kept is not None:
        log(f"det-bench: seed {seed}: reusing the kept {name} detector (not retrained)")
        return model, kept
    sampler = None
    if s.rfs_threshold is not None:
        from .runs import rfs_sampler

        sampler = rfs_sampler(data.train, threshold=s.rfs_threshold, rounding=s.rfs_rounding, seed=seed)
    log(f"det-bench: seed {seed}: training {name} detector ({len(data.train)} images, {s.train['epochs']} epochs"
        + (f", RFS t={s.rfs_threshold:g} {s.rfs_rounding})" if sampler is not None else ")"))
    t0 = time.perf_counter()
    res = train_detector(model, data.train, device=device, seed=seed, log=log, sampler=sampler, **s.train)
    res["train_s"] = time.perf_counter() - t0
    if store is not None:
        store.save_model(model, seed, key, {"train_s": res["train_s"], "history": res.get("history", [])})
    return model, res


def _detections(model, data: _Data, cache, device: str, s: DetBenchSettings) -> list[dict]:
    from .engine import predict
    from .posthoc import iter_results

    masks = not s.arch.startswith("fasterrcnn")
    if cache is not None:  # a batch at a time, each kept mask pasted and encoded once for all rows
        return [r for batch in iter_results(model, cache, _category_ids(data.val), masks=masks) for r in batch]
    return predict(model, data.val, device=device, batch_size=s.batch_size_eval)


def _make_cache(model, data: _Data, device: str, s: DetBenchSettings, dataset=None):
    """The RoI cache of ``dataset`` (default: the reported split ``data.val``); None for a one-stage model."""
    from .data import collate
    from .posthoc import cache_roi_inputs

    if not hasattr(model, "roi_heads"):
        return None
    loader = torch.utils.data.DataLoader(data.val if dataset is None else dataset, batch_size=s.batch_size_eval,
                                         shuffle=False, collate_fn=collate)
    return cache_roi_inputs(model, loader, device)


def _examples(model_rows: dict[str, Any], data: _Data, s: DetBenchSettings, device: str, n: int = 4):
    """Up to ``n`` validation images holding rare categories, with the ground truth and each drawn model's
    detections (for report.md)."""
    from .data import collate

    from .evaluation import category_groups

    cats = data.val_json["categories"]
    id_to_label = {c["id"]: i + 1 for i, c in enumerate(sorted(cats, key=lambda c: c["id"]))}
    groups = category_groups(data.val_json, _freq(data.train).image_counts) or {}
    rare = {id_to_label[c["id"]] for c in cats if groups.get(c["id"]) == "r"}
    picks = []
    for i in range(len(data.val)):
        img_id = data.val.image_ids[i]
        labels = {id_to_label[a["category_id"]] for a in data.val.coco.imgToAnns.get(img_id, [])}
        if labels & rare:
            picks.append(i)
        if len(picks) == n:
            break
    if not picks:
        return None
    images, targets = collate([data.val[i] for i in picks])
    panels: dict[str, list] = {"ground truth": targets}
    for label, model in model_rows.items():
        model.eval()
        with torch.no_grad():
            outs = model([im.to(device) for im in images])
        panels[label] = [{k: v.cpu() for k, v in o.items()} for o in outs]
    return images, panels, [rare] * len(picks)


def _tune_score(val_json: dict, results: list[dict], masks: bool) -> float | None:
    """The AP the tuned rows choose by (mask AP; box AP without masks), by the table's own evaluation
    (LVIS rules for an LVIS json, else COCO's) but without its TIDE, tail-k and false-positive passes."""
    from .evaluation import evaluate_coco, evaluate_lvis, is_lvis

    iou = "segm" if masks else "bbox"
    ev = evaluate_lvis(val_json, results, iou_type=iou) if is_lvis(val_json) else evaluate_coco(val_json, results, iou_type=iou)
    ap = ev.get("AP")
    return None if ap is None or not np.isfinite(ap) else float(ap)


def _choose_tuned(model, data: _Data, tune_cache, device: str, s: DetBenchSettings, log) -> dict[str, dict]:
    """For each method of :data:`TUNE_GRIDS`: the candidate with the highest AP on the val split (ties: the
    first in grid order), from ``tune_cache`` (the val split's RoI cache). Only val detections and val
    annotations are read here. Returns ``{method: {"spec": RowSpec, "grid": [(label, val AP)], "val_AP": ...}}``
    (methods with no usable candidate are left out); the model is left with its last candidate's margin."""
    from .margins import use_margin

    masks = not s.arch.startswith("fasterrcnn")
    counts = _freq(data.train).image_counts
    tune_ds, tune_json = data.tune
    chosen: dict[str, dict] = {}
    for method, grid in TUNE_GRIDS.items():
        scored = []
        for spec in grid:
            try:
                use_margin(model, spec.method, _freq(data.train), **spec.margin_kwargs())
            except IIFError as exc:  # e.g. raw IIF with an empty category, normit's negative weights
                log(f"det-bench: tuning {method}: leaving out {spec.table_variant()} {spec.by or ''}: {exc}")
                continue
            results = _detections(model, data, tune_cache, device, s)
            scored.append((spec, _tune_score(tune_json, results, masks)))
        if not scored:
            continue
        aps = np.array([np.nan if ap is None else ap for _, ap in scored], dtype=float)
        best = int(np.nanargmax(aps)) if np.isfinite(aps).any() else 0
        spec = scored[best][0]
        chosen[method] = {"spec": spec, "val_AP": scored[best][1],
                          "grid": [(f"{sp.table_variant()}{' ' + sp.by if sp.by else ''}", ap) for sp, ap in scored]}
        log(f"det-bench: tuned {method} on val: {_short(spec)} (val AP {_fmt(scored[best][1])})")
    return chosen


def _tuned_rows(model, data: _Data, cache, device: str, s: DetBenchSettings, seed: int, log
                ) -> tuple[list[dict], list[dict], dict[str, list]]:
    """The ``posthoc_tuned`` rows: choose on val (:func:`_choose_tuned`, its RoI cache built here), then score
    each choice once on the reported split's ``cache``. ``([], [], {})`` without a distinct val split."""
    from .margins import use_margin

    if data.tune is None or cache is None:
        return [], [], {}
    masks = not s.arch.startswith("fasterrcnn")
    counts = _freq(data.train).image_counts
    tune_cache = _make_cache(model, data, device, s, dataset=data.tune[0])
    chosen = _choose_tuned(model, data, tune_cache, device, s, log)
    del tune_cache
    rows, details, dets = [], [], {}
    for method, c in chosen.items():
        spec = c["spec"]
        use_margin(model, spec.method, _freq(data.train), **spec.margin_kwargs())
        results = _detections(model, data, cache, device, s)
        ev = _evaluate(data.val_json, results, masks, s.score_threshold, counts)
        rows.append(_row(spec, ev))
        details.append({"seed": seed, **asdict(spec), **ev, "tuned_on": "val", "tune_metric": "mask AP" if masks
                        else "box AP", "val_AP": c["val_AP"], "tune_grid": c["grid"]})
        dets[_short(spec)] = results
        log(f"det-bench: seed {seed}: {_short(spec)}: AP {rows[-1]['AP']:.1f} APr {_fmt(rows[-1]['APr'])}")
    use_margin(model, "softmax")
    return rows, details, dets


def _one_seed(seed: int, s: DetBenchSettings, data: _Data, device: str, log, want_examples: bool,
              store=None) -> dict[str, Any]:
    from .margins import use_margin

    masks = not s.arch.startswith("fasterrcnn")
    counts = _freq(data.train).image_counts
    t_start = time.perf_counter()
    model, res = _train(s, data, None, seed, device, log, store)
    timings = {"softmax_train_s": res["train_s"], "history": res.get("history", [])}
    t0 = time.perf_counter()
    from .posthoc import RoICache

    kept = store.load_cache(seed) if store is not None else None
    cache = None if kept is None else RoICache(*kept)
    if cache is not None:
        log(f"det-bench: seed {seed}: reusing the kept RoI cache")
    else:
        cache = _make_cache(model, data, device, s)
        if cache is not None and store is not None:
            store.save_cache(seed, cache)
    timings["cache_s"] = time.perf_counter() - t0
    rows, details = [], []
    dets: dict[str, list] = {}  # row label -> detections, for the bootstrap intervals
    norms = {"softmax": _classifier_norms(model).tolist()} if hasattr(model, "roi_heads") else {}
    drawn: dict[str, Any] = {}
    t0 = time.perf_counter()
    skipped: dict[str, str] = {}
    for spec in POSTHOC_ROWS:
        try:
            use_margin(model, spec.method, _freq(data.train), **spec.margin_kwargs())
        except IIFError as exc:  # e.g. raw IIF with a category that has no training image
            skipped[_short(spec)] = str(exc)
            log(f"det-bench: skipping {_short(spec)}: {exc}")
            continue
        results = _detections(model, data, cache, device, s)
        ev = _evaluate(data.val_json, results, masks, s.score_threshold, counts)
        rows.append(_row(spec, ev))
        details.append({"seed": seed, **asdict(spec), **ev})
        dets[_short(spec)] = results
        log(f"det-bench: seed {seed}: {spec.method} {spec.table_variant() or ''} {spec.by or ''}: "
            f"AP {rows[-1]['AP']:.1f} APr {_fmt(rows[-1]['APr'])} dAP_FP {_fmt(rows[-1]['dAP_FP'])}")
        if want_examples and spec in (POSTHOC_ROWS[0], POSTHOC_ROWS[1], POSTHOC_ROWS[-2]):
            drawn[_short(spec)] = copy.deepcopy(model)
    use_margin(model, "softmax")
    timings["posthoc_rows_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    t_rows, t_details, t_dets = _tuned_rows(model, data, cache, device, s, seed, log)
    rows += t_rows
    details += t_details
    dets.update(t_dets)
    timings["tuned_rows_s"] = time.perf_counter() - t0
    del cache
    e2e_s = 0.0
    if not s.quick:
        for spec in E2E_ROWS:
            try:
                m, r = _train(s, data, spec, seed, device, log, store)
            except _SkipRow as exc:
                skipped[_short(spec)] = str(exc)
                log(f"det-bench: skipping {_short(spec)}: {exc}")
                continue
            e2e_s += r["train_s"]
            results = _detections(m, data, None, device, s)
            ev = _evaluate(data.val_json, results, masks, s.score_threshold, counts)
            rows.append(_row(spec, ev))
            details.append({"seed": seed, **asdict(spec), **ev, "train_s": r["train_s"]})
            dets[_short(spec)] = results
            if hasattr(m, "roi_heads"):
                norms[_short(spec)] = _classifier_norms(m).tolist()
            if want_examples and spec.method == "iif" and spec.variant == "raw":
                drawn[_short(spec)] = m
    timings["e2e_s"] = e2e_s
    timings["seed_total_s"] = time.perf_counter() - t_start
    examples = _examples(drawn, data, s, device) if want_examples and drawn else None
    return {"rows": rows, "details": details, "timings": timings, "norms": norms, "examples": examples,
            "skipped": skipped, "detections": dets}


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
        if key == "model.class_agnostic_mask" and not s.arch.startswith("maskrcnn"):
            continue
        section, _, name = key.partition(".")
        if name:
            if getattr(s, section).get(name) is not None:
                continue
            getattr(s, section)[name] = value
        else:
            setattr(s, key, value)
        log(f"det-bench: generator-2 benchmark: {key}={value} (the v2 default; set {key}=... to change it)")


def _run_seeds(s: DetBenchSettings, d: _Data, dev: str, log, plots: bool, store) -> list[dict[str, Any]]:
    """:func:`_one_seed` for seeds 0..seeds-1, in order; with ``workers > 1`` in that many spawned processes
    (each sets its own torch threads; the detectors and RoI caches go to the same resume store, one file per
    seed and row, so a killed parallel run continues like a serial one)."""
    workers = min(int(s.workers), s.seeds)
    if workers <= 1:
        return [_one_seed(seed, s, d, dev, log, want_examples=plots and seed == 0, store=store)
                for seed in range(s.seeds)]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    log(f"det-bench: seeds 0..{s.seeds - 1} in {workers} processes side by side "
        f"({s.threads or torch.get_num_threads()} torch thread(s) each)")
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        jobs = [pool.submit(_seed_in_worker, seed, s, d, dev, plots and seed == 0, store) for seed in range(s.seeds)]
        return [job.result() for job in jobs]


def _seed_in_worker(seed: int, s: DetBenchSettings, d: _Data, dev: str, want_examples: bool, store) -> dict:
    """One seed in a worker process: its log lines go to stdout prefixed with the seed."""
    if s.threads is not None:
        torch.set_num_threads(s.threads)

    def log(msg: str) -> None:
        print(f"[seed {seed}] {msg}", flush=True)

    return _one_seed(seed, s, d, dev, log, want_examples=want_examples, store=store)


def _short(spec: RowSpec) -> str:
    parts = [spec.method] + [p for p in (spec.table_variant(), {"image": "IIF", "object": "IOF"}.get(spec.by or "")) if p]
    return " ".join(parts) + f" ({spec.strategy})"


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.1f}"


def _intervals(means: list[dict], per_seed: list[dict], d: _Data, s: DetBenchSettings, log) -> dict | None:
    """The paired-bootstrap intervals of summary.json (:func:`iif.detection.uncertainty.row_intervals`) over
    ``s.bootstrap`` resamples of the test images; None with ``bootstrap=0``."""
    from .evaluation import category_groups
    from .report import row_label
    from .uncertainty import row_intervals

    if not s.bootstrap:
        return None
    labels = set.intersection(*(set(p["detections"]) for p in per_seed))
    rows = [r for r in means if row_label(r) in labels]
    if not rows:
        return None
    groups = category_groups(d.val_json, _freq(d.train).image_counts)
    log(f"det-bench: paired bootstrap, {s.bootstrap} resamples of the {len(d.val)} test images "
        f"({len(rows)} rows x {s.seeds} seeds evaluations each)")
    res = row_intervals(d.val_json, rows, [p["detections"] for p in per_seed],
                        masks=not s.arch.startswith("fasterrcnn"), groups=groups, samples=s.bootstrap, seed=0,
                        label=row_label)
    log(f"det-bench: bootstrap took {res['cost_s']:.1f} s ({res['evaluations']} evaluations)")
    return res


def run_det_bench(data: str | os.PathLike | None = None, *, quick: bool = False, out: str | os.PathLike = "det-bench-out",
                  seeds: int = 1, force: bool = False, device: str | None = None, preset: str | None = None,
                  overrides: Sequence[str] = (), plots: bool = True, threads: int | None = None,
                  log: Callable[[str], Any] = print) -> list[dict]:
    """Run the detection benchmark and write ``out`` (results.json, details.json, settings.json, report.md,
    plots). Returns the (mean) rows. See the module docstring and docs/detection.md."""
    from . import report as R

    folder = OutputFolder(out, command="det-bench", force=force)  # refuses a used --out before any work
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if preset is None:
        preset = "gpu" if dev.startswith("cuda") else "cpu-quick"
    paths, overrides = split_data_overrides(overrides)  # data.* keys: det-train's, read by _load_data
    s = quick_settings(preset, overrides)
    given = {str(o).partition("=")[0] for o in overrides}
    s.seeds, s.quick, s.device = int(seeds), bool(quick), dev
    _check_settings(s)
    if s.bootstrap is None:
        s.bootstrap = 0 if s.quick else DEFAULT_BOOTSTRAP
    if threads is not None:
        s.threads = threads
    if s.threads is not None:
        if not isinstance(s.threads, int) or s.threads < 1:
            raise IIFError(f"--threads must be a whole number >= 1; got {s.threads!r}.")
        torch.set_num_threads(s.threads)
    t_all = time.perf_counter()
    d = _load_data(data, s, log, paths)
    if s.generator == 2:
        _apply_v2_defaults(s, given, log)
        _check_settings(s)
    _check_memory(s, d, dev)
    sched = _scale_schedule(s, len(d.train), log)
    # The staging folder is entered now, not at the end: it keeps the trained detectors and RoI caches, so a
    # rerun after a kill or a crash continues there (iif.resume).
    from ..resume import ResumeStore, open_staging, settings_key

    key = settings_key({k: v for k, v in asdict(s).items() if k != "workers"}, d.paths)
    staging, _adopted = open_staging(folder, key, log)
    store = ResumeStore(staging, key, log)
    try:
        per_seed = _run_seeds(s, d, dev, log, plots, store)
        means, stds = R.aggregate_seeds([p["rows"] for p in per_seed])
        intervals = _intervals(means, per_seed, d, s, log)
    except BaseException:
        if store.root.is_dir():  # trained work is kept for a rerun of the same command
            log(f"det-bench: stopped; the trained detectors stay in {staging}: rerun the same command to continue")
        else:
            folder.__exit__(*sys.exc_info())
        raise
    wall = time.perf_counter() - t_all
    table = R.format_table(means, stds if s.seeds > 1 else None)
    meta = {"version": __version__, "data": str(d.root), "data_paths": {k: str(v) for k, v in zip(DATA_KEYS, d.paths)},
            "benchmark": d.benchmark is not None, "eval_split": d.eval_split,
            "tune_paths": [str(p) for p in d.tune_paths],
            "num_train_images": len(d.train), "num_val_images": len(d.val), "device": dev,
            "torch": torch.__version__, "platform": platform.platform(), "cpu_threads": torch.get_num_threads(),
            "schedule": sched, "wall_s": wall, "peak_rss_mb": _peak_rss_mb(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    try:
        atomic_write_text(staging / "results.json", R.dumps_rows(means))
        if s.seeds > 1:
            atomic_write_text(staging / "results_std.json", R.dumps_rows(stds))
        atomic_write_json(staging / "details.json", json_safe([x for p in per_seed for x in p["details"]]))
        atomic_write_json(staging / "settings.json", json_safe({"settings": asdict(s), "meta": meta,
                                                                "timings": [p["timings"] for p in per_seed]}))
        atomic_write_json(staging / "summary.json", json_safe({"rows": means, "std": stds if s.seeds > 1 else None,
                                                               "intervals": intervals}))
        R.write_report(staging, means, stds if s.seeds > 1 else None, per_seed, d, s, meta, plots=plots,
                       intervals=intervals)
    except BaseException:
        log(f"det-bench: stopped while writing; the trained detectors stay in {staging}: rerun the same command")
        raise
    store.discard()
    folder.__exit__(None, None, None)
    log(table)
    log(f"det-bench: {wall:.0f} s, peak RSS {meta['peak_rss_mb']:.0f} MB; wrote {out}")
    return means
