"""The config every bench row starts from (:class:`BenchBase`): a packaged config of the dataset or the
library's defaults, the backbone recipe the bench sets (:data:`BACKBONE_OVERRIDES`) and the user's overrides;
each row's ``iif train`` command is built from it."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..errors import IIFError


#: The library's default config, written to --out when no packaged config trains the dataset (rows' commands name it).
BASE_CONFIG = "base_config.yaml"
#: What the bench sets on every row's config: a softmax backbone trained end to end, scored once at the end.
BACKBONE_OVERRIDES: tuple[str, ...] = ("strategy.name=e2e", "loss.name=ce", "loss.kwargs={}", "eval.every=0")


def _override(key: str, value: Any) -> str:
    """``key=value`` with the value written so that the config loader (YAML) reads it back unchanged."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (dict, list)):
        text = json.dumps(value)  # JSON is YAML
    else:
        text = str(value)
    return f"{key}={text}"


def _last_wins(overrides: Sequence[str]) -> list[str]:
    """``overrides`` without the earlier settings of a key set again later (the same config, a shorter command:
    overrides apply in order, so a later ``key=...`` replaces an earlier one of the same key)."""
    keys = [o.split("=", 1)[0].strip() for o in overrides]
    return [o for i, o in enumerate(overrides) if keys[i] not in keys[i + 1:]]


@dataclass
class BenchBase:
    """The config every row starts from: ``source`` (packaged name or YAML path; None for the library's
    defaults) and the overrides the bench and the user add. ``config(*extra)`` is the row's config and
    ``command(*extra)`` the ``iif train`` command that trains exactly it."""

    source: str | None
    overrides: list[str] = field(default_factory=list)
    #: Without a packaged config: where the bench writes the library's defaults (``base_config.yaml`` in --out).
    saved_as: str | None = None

    def config(self, *extra: str, device: str | None = None):
        from ..train import load_config

        cfg = load_config(self.source, _last_wins([*self.overrides, *extra]))
        # Not part of the result: nothing written, no progress bars; the device the bench was given.
        cfg.runtime.out_dir = None
        cfg.runtime.progress = False
        cfg.runtime.tensorboard = False
        if device is not None:
            cfg.runtime.device = device
        return cfg

    def train_argv(self, *extra: str) -> list[str]:
        return [self.source or self.saved_as or "<config>", *_last_wins([*self.overrides, *extra])]

    def command(self, *extra: str, out: str = "RUN") -> str:
        return "iif train " + " ".join(shlex.quote(a) for a in self.train_argv(*extra)) + f" --out {out}"


def bench_base(dataset: str | None = None, config: str | None = None, overrides: Sequence[str] = ()) -> BenchBase:
    """The bench's base: ``config`` if given, else the packaged ``<dataset>_decoupled`` config (stage 1 is its
    end-to-end recipe, stage 2 its ``decoupled:`` section), else ``<dataset>_e2e``, else the defaults with
    ``data.name = dataset``; plus :data:`BACKBONE_OVERRIDES` and then the user's ``overrides``."""
    from ..data import DATASETS
    from ..train import load_config, packaged_configs

    fixed = list(BACKBONE_OVERRIDES)
    if config is not None:
        cfg = load_config(config)
        if dataset is not None and dataset != cfg.data.name:
            raise IIFError(f"--dataset {dataset!r} and --config (data.name={cfg.data.name!r}) disagree; pass one of them.")
        source = str(config)
    else:
        name = dataset or "digits-lt"
        if name not in DATASETS:
            raise IIFError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}.")
        source = _packaged_base(name, packaged_configs())
        if source is None:
            fixed = [f"data.name={name}", *fixed]
    base = BenchBase(source, [*fixed, *overrides])
    base.config()  # refuses a bad override before any work
    return base


def _packaged_base(name: str, packaged: Sequence[str]) -> str | None:
    """The packaged config the bench starts from for dataset ``name``: ``<name>_decoupled`` if there is one, else
    another packaged decoupled config of that dataset (e.g. ``imagenet_lt_r50_decoupled``), else any of its
    configs (``<name>_e2e``...); None when no packaged config trains it."""
    from ..train import load_config

    stem = name.replace("-", "_")
    mine = sorted((c for c in packaged if c == stem or c.startswith(stem + "_")),
                  key=lambda c: (c != f"{stem}_decoupled", c != f"{stem}_e2e", c))
    found = []
    for c in mine:
        try:
            cfg = load_config(c)
        except IIFError:
            continue
        if cfg.data.name == name:
            found.append((cfg.strategy.name != "decoupled", len(found), c))
    return min(found)[2] if found else None


def bench_config(dataset: str | None = None, config: str | None = None, overrides: Sequence[str] = ()):
    """The backbone recipe (:func:`bench_base`'s config): trained with plain CE, end to end, writing nothing."""
    return bench_base(dataset, config, overrides).config()


def _head_overrides(base: BenchBase, head: str) -> list[str]:
    """The classifier head of a row: cosine with scale 16 (the paper's) unless the config sets its own."""
    kwargs = base.config().model.kwargs
    if head == "cosine":
        kw = {"scale": 16.0, **{k: v for k, v in kwargs.items() if k in ("scale", "learnable_scale")}}
    else:
        kw = {k: v for k, v in kwargs.items() if k == "bias"}
    return [f"model.head={head}", _override("model.kwargs", kw)]


def _stage2_label(overrides: Sequence[str]) -> str:
    """The decoupled rows' strategy: ``decoupled``, or with the ``decoupled.*`` overrides the user gave (a
    stage 2 that departs from the config's recipe, e.g. a shorter schedule)."""
    own = [o for o in overrides if o.startswith("decoupled.")]
    return "decoupled" + (f" [{' '.join(own)}]" if own else "")
