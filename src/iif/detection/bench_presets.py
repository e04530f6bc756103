"""``iif det-bench``'s presets and rows, read from packaged YAML (issue 16 part 3: one configuration system).

``bench_detection.yaml`` (a packaged suite, read by :func:`iif.train.config.load_sections`, the loader behind
every config) names each preset's det-train config (``cpu-quick``: ``det_bench_softmax``, ``gpu``:
``det_bench_gpu``) and lists the rows: post-hoc rows and tuning grids as margin specs, end-to-end rows as
det-train configs whose ``margin`` section is the row. Every margin spec is checked by det-train's own loader
and validator (:func:`iif.detection.config.load_detection_config`), so a row det-train would refuse is refused
here too, with the row named.

A preset config is read **as written**: the preset holds the ``model.*`` and ``schedule.*`` keys the config
(with its ``base:`` chain) sets, ``runtime.threads``, ``runtime.amp`` if set, ``eval.batch_size`` and
``data.hflip`` if not null; unset keys stay the defaults of ``build_detector`` / ``train_detector``. Any other
det-train config given as ``--preset`` is read whole (:func:`config_preset`), as before. The margins act as in
the paper: IIF multiplies the RoI logits by the per-class weights (Eq. 1, variants of Table III), the additive
methods add ``ln n_c`` or ``-tau ln p_c``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import IIFError

__all__ = ["RowSpec", "BENCH_SUITE", "load_bench_suite", "detection_presets", "bench_rows", "config_preset",
           "SCHEDULE_KEYS"]

#: The packaged suite iif det-bench iterates (src/iif/configs/bench_detection.yaml).
BENCH_SUITE = "bench_detection"

#: A det-train config's schedule keys that train_detector takes as they are (det-bench's ``train.`` keys).
SCHEDULE_KEYS = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "warmup_iters", "warmup_factor",
                 "milestones", "gamma", "clip_grad_norm")
_SCALING_KEYS = ("warmup_fraction", "milestone_fractions")


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


# ------------------------------------------------------------------------------------------ the suite schema
@dataclass
class PresetsSection:
    """``presets:``: preset name -> det-train config (``configs``), and which presets were measured."""

    configs: dict = field(default_factory=dict)
    measured: list = field(default_factory=list)


@dataclass
class RowsSection:
    """``rows:``: post-hoc margin specs (a list value is a grid), tuning grids per method, end-to-end configs."""

    posthoc: list = field(default_factory=list)
    tune: dict = field(default_factory=dict)
    e2e: list = field(default_factory=list)


@dataclass
class BenchSuiteConfig:
    presets: PresetsSection = field(default_factory=PresetsSection)
    rows: RowsSection = field(default_factory=RowsSection)


# A post-hoc or tuned row may set these (use_margin's arguments a RowSpec carries; ``when`` is always "test").
_POSTHOC_KEYS = ("method", "variant", "by", "tau", "gamma", "background_margin")
# The margin keys an end-to-end row carries (any other key of the config's margin section is refused).
_E2E_KEYS = ("method", "variant", "by", "when", "tau", "gamma", "background_margin")


def _expand(spec: Any, where: str) -> list[dict[str, Any]]:
    """A row mapping with list values -> one mapping per combination (the first listed key varies slowest)."""
    if not isinstance(spec, Mapping) or not spec:
        raise IIFError(f"{where} must be a mapping of margin keys, e.g. {{method: iif, variant: raw}}; got {spec!r}.")
    keys = list(spec)
    choices = [list(v) if isinstance(v, (list, tuple)) else [v] for v in spec.values()]
    if any(not c for c in choices):
        raise IIFError(f"{where} has an empty list; give each grid key at least one value.")
    return [dict(zip(keys, combo)) for combo in itertools.product(*choices)]


def _margin(values: Mapping[str, Any], where: str):
    """``values`` as a det-train margin section, through det-train's loader and validator."""
    from .config import load_detection_config

    try:
        return load_detection_config({"margin": dict(values)}).margin
    except IIFError as exc:
        raise IIFError(f"{where}: {exc}") from None


def _posthoc_row(values: Mapping[str, Any], strategy: str, where: str) -> RowSpec:
    unknown = [k for k in values if k not in _POSTHOC_KEYS]
    if unknown:
        raise IIFError(f"{where}: {unknown[0]!r} is not a row key; a {strategy} row sets {', '.join(_POSTHOC_KEYS)}.")
    mc = _margin({**values, "when": "test"}, where)
    kw = {k: getattr(mc, k) for k in values if k != "method"}  # as written, with the loader's types
    return RowSpec(mc.method, strategy, **kw)


def _e2e_row(name: Any, where: str) -> RowSpec:
    """The row of a det-train config: its margin section (IIF's variant and count only for IIF)."""
    from ..train.config import read_config_yaml, resolve_config_path
    from .config import default_when, load_detection_config

    if not isinstance(name, str):
        raise IIFError(f"{where} must name a det-train config (e.g. det_bench_iif); got {name!r}.")
    try:
        mc = load_detection_config(name).margin
        raw = read_config_yaml(resolve_config_path(name, "detection")).get("margin") or {}
    except IIFError as exc:
        raise IIFError(f"{where}: {exc}") from None
    extra = [k for k in raw if k not in _E2E_KEYS]
    if extra:
        raise IIFError(f"{where}: config {name!r} sets margin.{extra[0]}, which a det-bench row does not carry; "
                       f"a row takes margin.{', margin.'.join(_E2E_KEYS)}.")
    iif = mc.method == "iif"
    if not iif and (mc.variant, mc.by) != ("smooth", "image"):
        raise IIFError(f"{where}: config {name!r} sets margin.variant/by for {mc.method}; they are IIF's (leave "
                       "them at smooth/image or out).")
    return RowSpec(mc.method, "e2e", mc.variant if iif else None, mc.by if iif else None,
                   when=mc.when or default_when(mc.method), background_margin=mc.background_margin,
                   tau=mc.tau if "tau" in raw else None, gamma=mc.gamma if "gamma" in raw else None)


def _check_suite(cfg: BenchSuiteConfig) -> BenchSuiteConfig:
    """Preset names and config names are strings, ``measured`` names presets; rows are checked when built."""
    p = cfg.presets
    for name, config in p.configs.items():
        if not isinstance(name, str) or not isinstance(config, str) or not name or not config:
            raise IIFError(f"presets.configs maps a preset name to a det-train config name; got {name!r}: {config!r}.")
    unknown = [m for m in p.measured if m not in p.configs]
    if unknown:
        raise IIFError(f"presets.measured names {unknown[0]!r}, which is not in presets.configs; use one of "
                       f"{', '.join(map(str, p.configs))}.")
    if not isinstance(cfg.rows.tune, Mapping) or not all(isinstance(m, str) for m in cfg.rows.tune):
        raise IIFError("rows.tune maps a method name to its grid, e.g. {norcal: {gamma: [0.5, 1.0]}}.")
    return cfg


def load_bench_suite(source: Any = BENCH_SUITE) -> BenchSuiteConfig:
    """The suite ``source`` (packaged short name, YAML path or dict), loaded and checked like every config."""
    from ..train.config import load_sections

    return load_sections(BenchSuiteConfig, source, (), _check_suite, kind="bench")


def bench_rows(source: Any = BENCH_SUITE) -> tuple[tuple[RowSpec, ...], dict[str, tuple[RowSpec, ...]],
                                                  tuple[RowSpec, ...]]:
    """``(POSTHOC_ROWS, TUNE_GRIDS, E2E_ROWS)`` of the suite, each margin spec checked by det-train's validator."""
    rows = load_bench_suite(source).rows
    posthoc = tuple(_posthoc_row(v, "posthoc", f"rows.posthoc[{i}]")
                    for i, spec in enumerate(rows.posthoc) for v in _expand(spec, f"rows.posthoc[{i}]"))
    tune = {method: tuple(_posthoc_row({"method": method, **v}, "posthoc_tuned", f"rows.tune.{method}")
                          for v in _expand(grid, f"rows.tune.{method}"))
            for method, grid in rows.tune.items()}
    e2e = tuple(_e2e_row(name, f"rows.e2e[{i}]") for i, name in enumerate(rows.e2e))
    return posthoc, tune, e2e


def detection_presets(source: Any = BENCH_SUITE) -> dict[str, dict[str, Any]]:
    """The suite's presets (:data:`iif.detection.DETECTION_PRESETS`): each preset config read as written, with
    ``measured`` from the suite."""
    p = load_bench_suite(source).presets
    out = {}
    for name, config in p.configs.items():
        try:
            out[name] = {**config_preset(config, as_written=True), "measured": name in p.measured}
        except IIFError as exc:
            raise IIFError(f"presets.configs.{name}: {exc}") from None
    return out


def config_preset(name: Any, *, as_written: bool = False) -> dict[str, Any]:
    """A det-train config (packaged short name such as ``det_folder``, or a YAML path) as a det-bench preset:
    its ``model`` section, its ``schedule`` (with ``warmup_fraction`` / ``milestone_fractions``, resolved on the
    data by :func:`iif.detection.config.scaled_schedule`), ``data.hflip``, ``runtime.threads``/``amp`` and
    ``eval.batch_size``. ``as_written``: only the model and schedule keys the config sets (a packaged preset;
    see the module docstring). Its margin and sampler are not used: det-bench trains its own rows with the
    random sampler."""
    from .config import load_detection_config, model_kwargs

    try:
        cfg = load_detection_config(name)
    except IIFError as exc:
        raise IIFError(f"unknown det-bench preset {name!r} ({exc}); choose a preset of {BENCH_SUITE}.yaml "
                       "(cpu-quick, gpu) or a det-train config such as det_folder (`iif det-train --list`).") from None
    raw = _written(name) if as_written else None
    sc = cfg.schedule
    if raw is None:
        train = {k: getattr(sc, k) for k in SCHEDULE_KEYS}
        train["amp"] = cfg.runtime.amp
        model = model_kwargs(cfg)
    else:
        every = model_kwargs(cfg)  # in the file's key order (det-bench's settings.json keeps it)
        model = {k: every[k] for k in raw.get("model") or {} if k in every}
        train = {k: getattr(sc, k) for k in raw.get("schedule") or {} if k in SCHEDULE_KEYS}
        if "amp" in (raw.get("runtime") or {}):
            train["amp"] = cfg.runtime.amp
    if "milestones" in train:
        train["milestones"] = tuple(train["milestones"])
    for key in _SCALING_KEYS:
        if getattr(sc, key) is not None:
            train[key] = getattr(sc, key)
    preset = {"arch": cfg.model.arch, "threads": cfg.runtime.threads, "model": model, "train": train,
              "hflip": cfg.data.hflip, "predict": {"batch_size": cfg.eval.batch_size}}
    if raw is not None and preset["hflip"] is None:
        del preset["hflip"]
    return preset


def _written(name: Any) -> dict[str, Any]:
    """The sections a config file sets (its ``base:`` chain merged), before defaults fill them."""
    from ..train.config import read_config_yaml, resolve_config_path

    return read_config_yaml(resolve_config_path(name, "detection"))
