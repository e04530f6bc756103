"""``iif bench``: train one softmax backbone per head, then compare every strategy on it, one table.

Per seed and per classifier head:

1. train the backbone end to end with plain softmax CE (:func:`iif.train.fit`);
2. post-hoc rows from its validation and test logits: softmax, post-process IIF for every variant, logit
   adjustment, tau-norm (:func:`iif.train.tau_norm_head`), the validation-tuned IIF row, and temperature
   scaling fitted on validation;
3. decoupled rows: the backbone's classifier retrained by :func:`iif.train.retrain_classifier`, the same
   stage ``iif train <dataset>_decoupled`` runs, with the config's ``decoupled:`` recipe (the paper's) for
   IIF (every variant), cRT and LWS (:func:`iif.train.method_overrides`);
4. unless ``quick``: end-to-end training with the IIF loss (smooth), IIF_CSL, Balanced Softmax, the
   logit-adjusted loss and LDAM-DRW.

Every row is a config the user can run: the bench builds each one as ``load_config(base, overrides)`` and
records, per row, the ``iif train`` (and ``iif eval``) command with exactly those overrides
(``reproduce`` in ``summary.json`` and ``details.json``). The base is ``--config`` or the dataset's packaged
``<dataset>_decoupled`` config (its ``decoupled:`` section is the stage-2 recipe). A shorter stage 2 is an
explicit ``decoupled.*`` override (e.g. ``decoupled.epochs=2``); it is then shown in the decoupled rows'
strategy, e.g. ``decoupled [decoupled.epochs=2]``.

Results go to ``results.json`` (the ranked rows with the 9 published keys), ``summary.json`` (the summary, ranks,
deltas and commands, see :mod:`iif.bench.report`), ``results_std.json`` (with several seeds), ``details.json``, ``report.md`` and PNG plots, all written into a staging folder beside the
output folder and swapped into place at the end (:class:`iif.outputs.OutputFolder`), so an interrupted
run never leaves a half-written one, and ``--force`` never leaves the name empty nor removes files
that iif did not write.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..errors import IIFError
from ..metrics import reliability_bins, shot_thresholds
from ..outputs import OutputFolder, atomic_write_json, atomic_write_text, json_safe
from ..weights import VARIANTS
from .posthoc import (
    Candidate,
    evaluate_candidates,
    posthoc_candidates,
    select_by_validation,
    tuned_posthoc_candidate,
    valid_variants,
)
from .posthoc import ROW_KEYS
from .report import aggregate_seeds, dumps_results, dumps_rows, dumps_summary, printed_report, row_id, summarize

__all__ = ["HEADS", "E2E_METHODS", "BenchBase", "bench_base", "bench_config", "check_out_dir", "run_bench"]

HEADS: tuple[str, ...] = ("cosine", "linear")
#: End-to-end rows: (method name in the table, loss name for build_loss, variant shown).
E2E_METHODS: tuple[tuple[str, str, str | None], ...] = (
    ("IIF loss", "iif", "smooth"),
    ("IIF_CSL", "iif_csl", "smooth"),
    ("Balanced Softmax", "balanced_softmax", None),
    ("LA loss", "logit_adjusted", "tau=1"),
    ("LDAM-DRW", "ldam", None),
)
#: tau values tried by tau-norm on validation (Kang et al. 2020 pick tau on a validation set).
TAUS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
#: Files the bench writes; an output folder holding any of them is refused unless ``force``.
RESULT_FILES = ("results.json", "report.md")
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


def check_out_dir(out: Path, force: bool) -> None:
    """Refuse an ``--out`` the bench may not write (see :class:`iif.outputs.OutputFolder`): an existing file,
    a non-empty folder unless ``force``, and with ``force`` any folder iif did not write."""
    OutputFolder(out, command="bench", force=force)


def _np(t) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        return t.detach().cpu().double().numpy()
    return np.asarray(t)


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


@dataclass
class _Row:
    """How one row is reproduced: ``iif train`` with the base's overrides plus ``extra`` into ``run_name``; then
    either ``iif eval run_name/last.pt`` (``via_eval``, with ``--adjust adjust`` when set) or nothing more.
    ``metrics`` is the key of the row's numbers in that command's output (``final_metrics.json`` of the
    training run, or what ``iif eval`` prints): ``raw``, ``adjusted`` (the loss's ``w * z``) or the spec."""

    base: BenchBase
    extra: list[str]
    metrics: str = "raw"
    adjust: str | None = None
    run_name: str = "RUN"
    via_eval: bool = False

    def record(self) -> dict[str, Any]:
        command = self.base.command(*self.extra, out=self.run_name)
        if self.via_eval:
            command += f" && iif eval {self.run_name}/last.pt" + (f" --adjust {self.adjust}" if self.adjust else "")
        return {"command": command, "config": self.base.source, "overrides": _last_wins([*self.base.overrides, *self.extra]),
                "eval_adjust": self.adjust, "metrics": self.metrics}


def _with_reproduce(c: Candidate, row: _Row | None, note: str | None = None) -> Candidate:
    c.info["reproduce"] = row.record() if row is not None else {"command": None, "note": note}
    return c


def _posthoc_rows(model, f_te, z_te, f_va, z_va, y_va, counts, total, h, bb: _Row) -> tuple[list[Candidate], dict]:
    """Softmax, post-process IIF (every valid variant, and tuned on validation), logit adjustment and tau-norm
    from the backbone's logits. Test labels are never used: every choice is made on validation."""
    from ..train import build_adjuster

    has_val = z_va is not None
    cands, skipped = posthoc_candidates(_np(z_te), counts, head=h, val_logits=_np(z_va) if has_val else None, total=total)
    for c in cands:
        if c.method == "softmax":
            _with_reproduce(c, bb)
        elif c.method == "IIF":
            _with_reproduce(c, _Row(bb.base, bb.extra, f"iif:{c.variant}", f"iif:{c.variant}", bb.run_name, True))
        elif c.method == "logit adjustment":
            tau = c.variant.split("=", 1)[1]
            _with_reproduce(c, _Row(bb.base, bb.extra, f"la:{tau}", f"la:{tau}", bb.run_name, True))
    if has_val:
        tuned = tuned_posthoc_candidate(_np(z_te), _np(z_va), _np(y_va), counts, head=h, total=total)
        sel = tuned.info["selection"]
        # iif eval / iif predict --adjust iif:<variant>^<gamma>: the weights to the power chosen on validation
        spec = f"iif:{sel['variant']}" if float(sel["gamma"]) == 1.0 else f"iif:{sel['variant']}^{sel['gamma']:g}"
        _with_reproduce(tuned, _Row(bb.base, bb.extra, spec, spec, bb.run_name, True))
        cands.insert(1 + len(valid_variants(counts, VARIANTS, total)[0]), tuned)

    # tau-norm (Kang et al. 2020): the one implementation, iif eval's --adjust taunorm:tau; tau picked on validation.
    def taunorm(tau: float, f, z):
        return build_adjuster(f"taunorm:{tau:g}", counts, model)(f.to(z.device), z)

    if has_val:
        tau = float(select_by_validation({str(t): _np(taunorm(t, f_va, z_va)) for t in TAUS}, _np(y_va)))
    else:
        tau = 1.0
    c = Candidate("tau-norm", "post-hoc", f"tau={tau:g}", h, _np(taunorm(tau, f_te, z_te)),
                  _np(taunorm(tau, f_va, z_va)) if has_val else None)
    cands.append(_with_reproduce(c, _Row(bb.base, bb.extra, f"taunorm:{tau:g}", f"taunorm:{tau:g}", bb.run_name, True)))
    return cands, skipped


def _logits(result, splits, device, batch_size: int, split: str) -> torch.Tensor | None:
    """A trained run's logits on ``split`` as it predicts: with its loss's ``adjust_logits`` (``w * z`` for IIF)."""
    from ..train import extract_features

    ds = getattr(splits, split, None)
    if ds is None:
        return None
    z = extract_features(result.model, ds, device, batch_size)[1].to(device)
    adjust = getattr(result.criterion, "adjust_logits", None)
    with torch.no_grad():
        return adjust(z) if adjust is not None else z


def _decoupled_rows(base: BenchBase, bb: _Row, state: dict, splits, dev, h: str, seed: int, variants, label: str,
                    log) -> tuple[list[Candidate], dict]:
    """Decoupled IIF (every valid variant, and the one validation picks), cRT and LWS: the backbone's
    classifier retrained by :func:`iif.train.retrain_classifier` with the config's ``decoupled:`` recipe."""
    from ..train import method_overrides, retrain_classifier

    plan = [("IIF", v) for v in variants] + [("cRT", None), ("LWS", None)]
    cands: list[Candidate] = []
    extras: dict[str, Any] = {}
    by_variant: dict[str, Candidate] = {}
    for method, variant in plan:
        extra = [*bb.extra, "strategy.name=decoupled", *method_overrides(method, variant)]
        cfg = base.config(*extra, device=str(dev))
        res = retrain_classifier(cfg, splits, state, device=dev)
        zt = _logits(res, splits, dev, cfg.eval.batch_size, "test")
        zv = _logits(res, splits, dev, cfg.eval.batch_size, "val")
        c = Candidate(method, label, variant, h, _np(zt), None if zv is None else _np(zv))
        run = f"runs/{method.lower()}{'-' + variant if variant else ''}-{h}-s{seed}"
        cands.append(_with_reproduce(c, _Row(base, extra, "adjusted" if method == "IIF" else "raw", None, run)))
        if method == "IIF":
            by_variant[variant] = c
            if variant == "smooth":
                extras["norms_after"] = res.model.classifier.weight.detach().norm(dim=1).cpu().double().tolist()
    if splits.val is not None and by_variant:
        best = select_by_validation({v: c.val_logits for v, c in by_variant.items()}, _np(_val_labels(splits)))
        b = by_variant[best]
        t = Candidate("IIF tuned", label, best, h, b.test_logits, b.val_logits,
                      info={"selection": {"variant": best, "gamma": 1.0}})
        t.info["reproduce"] = dict(b.info["reproduce"])
        cands.insert(len(by_variant), t)
    return cands, extras


def _val_labels(splits) -> torch.Tensor:
    return torch.as_tensor(np.asarray(splits.val.targets), dtype=torch.long)


def _train(cfg, splits, device) -> tuple[Any, float, float]:
    from ..train import fit

    t0 = time.perf_counter()
    res = fit(cfg, out_dir=None, device=device, splits=splits)
    total = time.perf_counter() - t0
    secs = [float(r["seconds"]) for r in res.history if "seconds" in r]
    return res, (statistics.median(secs) if secs else float("nan")), total


def _e2e_rows(base: BenchBase, bb: _Row, splits, device, head: str, seed: int, log) -> tuple[list[Candidate], float]:
    """End-to-end baselines; each predicts with its loss's ``adjust_logits`` (paper Eq. 13 for the IIF loss)."""
    out, seconds = [], 0.0
    for method, loss, variant in E2E_METHODS:
        extra = [*bb.extra, f"loss.name={loss}"]
        if loss in ("iif", "iif_csl"):
            extra.append("loss.variant=smooth")
        if loss == "ldam":
            # Margins live on the cosine scale: with the cosine head (s = 16) the logits are s * cos, so
            # max_margin 0.5 on cosines is 0.5 * s on logits and the loss adds no scale of its own.
            c0 = base.config(*extra)
            s = float(c0.model.kwargs.get("scale", 16.0)) if head == "cosine" else 1.0
            extra.append(_override("loss.kwargs", {"scale": 1.0, "max_margin": 0.5 * s,
                                                   "drw_epoch": max(1, int(0.8 * c0.schedule.epochs))}))
        cfg = base.config(*extra, device=str(device))
        log(f"  [seed {seed}, {head}] end-to-end {method} ...")
        res, _, secs = _train(cfg, splits, device)
        seconds += secs
        zt = _logits(res, splits, device, cfg.eval.batch_size, "test")
        zv = _logits(res, splits, device, cfg.eval.batch_size, "val")
        own = getattr(res.criterion, "adjust_logits", None) is not None and _has_own_rule(res.criterion)
        c = Candidate(method, "end-to-end", variant, head, _np(zt), None if zv is None else _np(zv))
        run = f"runs/{loss}-{head}-s{seed}"
        out.append(_with_reproduce(c, _Row(base, extra, "adjusted" if own else "raw", None, run)))
    return out, seconds


def _seed_loop(seeds, heads, base, splits, dev, threads, counts, total, variants, skipped_variants, stage2, quick,
               y_te, y_va, many, few, store, log):
    """Every (seed, head) block of :func:`run_bench`: the backbone, its post-hoc and decoupled rows, the
    end-to-end rows; blocks kept by an interrupted run of the same settings (``store``) are reused."""
    from ..train import extract_features

    per_seed_rows: list[list[dict]] = []
    all_details: list[dict] = []
    timings: list[dict] = []
    plot_data: dict[str, dict] = {}
    for seed in range(int(seeds)):
        seed_rows: list[dict] = []
        for h in heads:
            bb = _Row(base, [*_head_overrides(base, h), f"runtime.seed={seed}"], run_name=f"runs/softmax-{h}-s{seed}",
                      via_eval=True)
            c = base.config(*bb.extra, device=str(dev))
            kept = _load_block(store, seed, h)
            if kept is not None:
                log(f"  [seed {seed}, {h}] reusing the kept backbone and rows of an interrupted run (not retrained)")
                cands, extras, (epoch_s, train_s, post_s, dec_s) = kept
            else:
                log(f"  [seed {seed}, {h}] backbone: {c.model.arch}, softmax CE, {c.schedule.epochs} epochs ...")
                with _threads(threads):
                    res, epoch_s, train_s = _train(c, splits, dev)
                    state = {k: v.detach().cpu().clone() for k, v in res.model.state_dict().items()}
                    f_te, z_te, _ = (t.to(dev) for t in extract_features(res.model, splits.test, dev, c.eval.batch_size))
                    f_va = z_va = None
                    if splits.val is not None:
                        f_va, z_va, _ = (t.to(dev) for t in extract_features(res.model, splits.val, dev, c.eval.batch_size))
                    t0 = time.perf_counter()
                    cands, _ = _posthoc_rows(res.model, f_te, z_te, f_va, z_va, y_va, counts, total, h, bb)
                    post_s = time.perf_counter() - t0
                    t0 = time.perf_counter()
                    dec, extras = _decoupled_rows(base, bb, state, splits, dev, h, seed, variants, stage2, log)
                    dec_s = time.perf_counter() - t0
                extras["norms_before"] = res.model.classifier.weight.detach().norm(dim=1).cpu().double().tolist()
                extras["skipped_variants"] = skipped_variants
                cands += dec
                _save_block(store, seed, h, res.model, cands, extras, (epoch_s, train_s, post_s, dec_s))
            e2e, e2e_s = None, 0.0
            if not quick:
                kept = _load_block(store, seed, f"{h}-e2e")
                if kept is not None:
                    log(f"  [seed {seed}, {h}] reusing the kept end-to-end rows of an interrupted run (not retrained)")
                    e2e, _, (e2e_s,) = kept
                else:
                    with _threads(threads):
                        e2e, e2e_s = _e2e_rows(base, bb, splits, dev, h, seed, log)
                    _save_block(store, seed, f"{h}-e2e", None, e2e, {}, (e2e_s,))
            rows, details = evaluate_candidates(cands, y_te, counts, val_labels=y_va, many=many, few=few)
            if e2e is not None:
                r2, d2 = evaluate_candidates(e2e, y_te, counts, val_labels=y_va, many=many, few=few, reference=cands)
                rows += r2
                details += d2
            timings.append({"seed": seed, "head": h, "backbone_epoch_s": epoch_s, "backbone_train_s": train_s,
                            "epochs": c.schedule.epochs, "post_backbone_s": post_s + dec_s, "post_hoc_s": post_s,
                            "decoupled_s": dec_s,
                            "e2e_baselines_s": e2e_s})
            log(f"  [seed {seed}, {h}] backbone {train_s:.1f}s ({epoch_s:.2f}s/epoch); post-hoc rows {post_s:.2f}s; "
                f"decoupled rows {dec_s:.1f}s")
            for r, d in zip(rows, details):
                all_details.append({"seed": seed, **r, **d})
            if seed == 0:
                plot_data[h] = _plot_material(cands, rows, details, extras, y_te, y_va, stage2)
            seed_rows += rows
        per_seed_rows.append(seed_rows)

    means, stds = aggregate_seeds(per_seed_rows)
    return means, stds, all_details, timings, plot_data


def _save_block(store, seed: int, name: str, model, cands: list[Candidate], extras: dict, times: tuple) -> None:
    """Keep a finished (seed, head) block in the staging folder (:class:`iif.resume.ResumeStore`): the
    candidates' logits and fields, ``extras`` and the block's timings, and the trained ``model``'s weights."""
    arrays: dict[str, np.ndarray] = {}
    meta = []
    for i, c in enumerate(cands):
        arrays[f"test{i}"] = np.asarray(c.test_logits)
        if c.val_logits is not None:
            arrays[f"val{i}"] = np.asarray(c.val_logits)
        meta.append({"method": c.method, "strategy": c.strategy, "variant": c.variant, "head": c.head, "info": c.info})
    if model is not None:
        from ..outputs import atomic_torch_save

        atomic_torch_save({k: v.detach().cpu() for k, v in model.state_dict().items()},
                          store.root / f"seed{seed}" / f"{name}-model.pt", mkdir=True)
    store.save_arrays(seed, name, {"candidates": meta, "extras": extras, "times": list(times)}, arrays)


def _load_block(store, seed: int, name: str) -> tuple[list[Candidate], dict, tuple] | None:
    """``(candidates, extras, timings)`` of a block :func:`_save_block` kept with these settings, or None."""
    kept = store.load_arrays(seed, name)
    if kept is None:
        return None
    record, arrays = kept
    cands = [Candidate(m["method"], m["strategy"], m["variant"], m["head"], arrays[f"test{i}"],
                       arrays.get(f"val{i}"), m["info"]) for i, m in enumerate(record["candidates"])]
    return cands, record["extras"], tuple(record["times"])


def _config_dict(cfg) -> Any:
    """The base config as plain data (for the settings key of a kept block)."""
    import dataclasses

    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else repr(cfg)


def _splits_print(splits) -> list:
    """What identifies the data of a run: per split, its size and a sha256 of its labels."""
    import hashlib

    out = []
    for name in ("train", "val", "test"):
        part = getattr(splits, name, None)
        y = None if part is None else np.asarray(part.targets, dtype=np.int64)
        out.append(None if y is None else [name, int(y.size), hashlib.sha256(y.tobytes()).hexdigest()])
    return out


def _has_own_rule(criterion) -> bool:
    """Whether ``iif train`` reports this loss's logits under ``adjusted`` (its ``adjust_logits`` is not the identity)."""
    from ..losses import LossBase

    return not (isinstance(criterion, LossBase) and type(criterion).adjust_logits is LossBase.adjust_logits)


def _rss_peak_mb() -> float:
    """This process's peak resident set size so far in MiB (``ru_maxrss``, what ``/usr/bin/time -v`` reports)."""
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 1024.0 if sys.platform != "darwin" else peak / 2**20
    except Exception:  # pragma: no cover - platform without resource
        return float("nan")


@contextlib.contextmanager
def _threads(n: int | None):
    """Temporarily run torch (and numpy's BLAS) with ``n`` intra-op threads.

    The cached-feature work is made of tiny ops where thread hand-offs cost more than the maths; on a
    busy 2-core machine one thread made a digits-LT epoch 10x faster (0.06 s vs 0.6 s, measured).
    """
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: scikit-learn brings it
        threadpool_limits = None
    try:
        if threadpool_limits is not None:
            with threadpool_limits(int(n)):
                yield
        else:
            yield
    finally:
        torch.set_num_threads(old)


#: Training sets smaller than this train with one CPU thread by default (see :func:`_threads`).
SMALL_TRAIN_SET = 10_000


def run_bench(
    dataset: str | None = None,
    config: str | None = None,
    seeds: int = 1,
    out: str | os.PathLike = "bench-out",
    quick: bool = False,
    heads: Sequence[str] = HEADS,
    force: bool = False,
    device: str | None = None,
    overrides: Sequence[str] = (),
    many: int | None = None,
    few: int | None = None,
    splits=None,
    plots: bool = True,
    threads: int | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the bench and write its outputs to ``out``; returns ``{"rows", "stds", "details", "meta", "out", "summary"}``.

    ``splits`` (prebuilt :class:`iif.data.DatasetSplits`) skips ``build_datasets``; ``overrides`` are
    ``dotted.key=value`` config overrides of every row (e.g. ``schedule.epochs=2``; ``decoupled.epochs=2``
    shortens stage 2 and is shown in the decoupled rows). ``many``/``few``: shot-group thresholds (default
    :func:`iif.metrics.shot_thresholds`). ``threads``: CPU threads for training (default: 1 for training sets
    under 10k images, else torch's default).
    """
    from ..resources import training_threads
    from ..train import build_splits, extract_features, resolve_device

    t_start = time.perf_counter()
    out = Path(out)
    folder = OutputFolder(out, command="bench", force=force)  # refuses a bad --out before any training
    if int(seeds) < 1:
        raise IIFError(f"--seeds must be >= 1; got {seeds}.")
    heads = [h.strip() for h in heads if h.strip()]
    bad = [h for h in heads if h not in ("cosine", "linear")]
    if not heads or bad:
        raise IIFError(f"--heads must list cosine and/or linear (comma separated); got {','.join(heads) or 'nothing'}.")
    base = bench_base(dataset, config, overrides)
    if base.source is None:  # no packaged config trains this dataset: the commands name the defaults, written out
        base.saved_as = str(out / BASE_CONFIG)
    cfg = base.config(device=device)
    dev = resolve_device(cfg.runtime.device)
    if splits is None:
        splits = build_splits(cfg)
    freq = splits.freq
    counts = freq.image_counts
    total = float(freq.default_total("image"))
    many, few = shot_thresholds(counts, many, few)
    stage2 = _stage2_label(overrides)
    log(f"iif bench: {cfg.data.name}, {splits.num_classes} classes, {int(counts.sum())} training images "
        f"(largest {int(counts.max())}, smallest {int(counts.min())}); heads {','.join(heads)}; seeds {seeds}; "
        f"{'quick' if quick else 'full'}; device {dev}; base config {base.source or '(defaults)'}")
    # iif.resources, the rule of every command: >= 1, clamped to the usable CPUs; 1 on the CPU for small sets
    threads = training_threads(threads, len(splits.train.targets), dev.type)
    variants, skipped_variants = valid_variants(counts, VARIANTS, total)
    y_te = np.asarray(splits.test.targets, dtype=np.int64)
    y_va = np.asarray(splits.val.targets, dtype=np.int64) if splits.val is not None else None

    # Enter the staging folder now: each finished (seed, head) block is kept there, so a rerun of the same
    # command after a kill or a crash continues where it stopped (iif.resume).
    from ..resume import ResumeStore, keep_on_failure, open_staging, settings_key

    key = settings_key({"config": json_safe(_config_dict(cfg)), "threads": threads, "splits": _splits_print(splits)}, ())
    open_staging(folder, key, log)
    store = ResumeStore(folder.staging, key, log)
    with keep_on_failure(folder, store, log):
        means, stds, all_details, timings, plot_data = _seed_loop(
            seeds, heads, base, splits, dev, threads, counts, total, variants, skipped_variants, stage2, quick, y_te,
            y_va, many, few, store, log)
        _attach_commands(means, all_details)
    meta = {
        "dataset": cfg.data.name, "num_classes": int(splits.num_classes), "train_counts": [int(x) for x in counts],
        "imbalance_ratio": float(counts.max() / max(counts.min(), 1)), "seeds": int(seeds), "heads": list(heads),
        "quick": bool(quick), "device": str(dev), "arch": cfg.model.arch, "epochs": cfg.schedule.epochs,
        "many": many, "few": few, "val_size": None if splits.val is None else len(splits.val.targets),
        "test_size": len(splits.test.targets), "timings": timings, "base_config": base.source,
        "overrides": _last_wins(base.overrides), "head_retraining": _stage2_recipe(cfg),
        "k_total": total, "threads": threads, "skipped_variants": skipped_variants,
    }
    means, stds, summary = summarize(means, stds, all_details, meta)  # ranked on validation, identical rows folded
    text = printed_report(means, stds if seeds > 1 else None, summary)
    log("\n" + text)
    meta["wall_s"] = time.perf_counter() - t_start
    meta["peak_rss_mb"] = _rss_peak_mb()
    _write_outputs(folder, means, stds if seeds > 1 else None, all_details, meta, plot_data, plots, summary,
                   base.saved_as is not None, store=store)
    log(f"\nwrote {out}/results.json and {out}/report.md ({meta['wall_s']:.1f}s, peak RSS {_rss_peak_mb():.0f} MiB)")  # after the plots, as /usr/bin/time -v
    return {"rows": means, "stds": stds if seeds > 1 else None, "details": all_details, "meta": meta, "out": out,
            "summary": summary}


def _stage2_recipe(cfg) -> dict[str, Any]:
    """The decoupled rows' schedule (the config's ``decoupled:`` section, the paper's recipe by default)."""
    d = cfg.decoupled
    return {"epochs": d.epochs, "lr": d.lr, "momentum": d.momentum, "weight_decay": d.weight_decay,
            "batch_size": d.batch_size or cfg.optim.batch_size, "schedule": d.schedule, "legacy": d.legacy}


def _attach_commands(rows: list[dict], details: Sequence[dict]) -> None:
    """Each mean row gets ``reproduce``: the command of its first seed (``runtime.seed=N`` for seed N)."""
    first: dict[tuple, str | None] = {}
    for d in details:
        rec = d.get("reproduce")
        if rec is not None:
            first.setdefault(row_id(d), rec.get("command") or f"(not reproducible: {rec.get('note')})")
    for r in rows:
        r["reproduce"] = first.get(row_id(r))


def _plot_material(cands, rows, details, extras, y_te, y_va, stage2: str = "decoupled") -> dict:
    """Per-class accuracy of softmax and the validation-chosen IIF rows, reliability bins, weight norms."""
    by = {(r["method"], r["strategy"]): (c, r, d) for c, r, d in zip(cands, rows, details)}
    per_class = {}
    for key, label in ((("softmax", "end-to-end"), "softmax"),
                       (("IIF tuned", "post-process"), "post-process IIF (chosen on val)"),
                       (("IIF tuned", stage2), "decoupled IIF (chosen on val)")):
        if key in by:
            c, r, d = by[key]
            per_class[f"{label}: {r['variant']}" if r["variant"] and "tuned" in r["method"] else label] = d["per_class"]
    if "IIF tuned" not in {k[0] for k in by}:  # no validation split: the paper's default, smooth
        for c, r, d in zip(cands, rows, details):
            if r["method"] == "IIF" and r["variant"] == "smooth":
                per_class[f"{r['strategy']} IIF smooth"] = d["per_class"]
    out: dict[str, Any] = {"per_class": per_class, "norms_before": extras.get("norms_before"),
                           "norms_after": extras.get("norms_after")}
    c, r, d = by[("softmax", "end-to-end")]
    if "temperature" in d:
        out["reliability"] = {"before": reliability_bins(c.test_logits, y_te), "after": reliability_bins(c.test_logits / d["temperature"], y_te),
                              "ece_before": r["ece"], "ece_after": d["ece_ts"], "temperature": d["temperature"]}
    return out


def _write_outputs(folder: OutputFolder, rows, stds, details, meta, plot_data, plots: bool, summary,
                   write_base: bool = False, store=None) -> None:
    """Write everything into a staging folder beside the output folder, then swap it into place atomically."""
    from ..train import load_config, save_config
    from .report import write_report

    from ..resume import keep_on_failure

    # With a store, the staging folder was entered before training (run_bench) and holds the kept blocks.
    with (keep_on_failure(folder, store, print, finish=True) if store is not None else folder) as tmp:
        if write_base:
            save_config(load_config(None), tmp / BASE_CONFIG)
        atomic_write_text(tmp / "results.json", dumps_results(rows))  # the published 9-key rows
        atomic_write_text(tmp / "summary.json", dumps_summary(rows, summary))
        if stds is not None:
            atomic_write_text(tmp / "results_std.json", dumps_rows(stds, ROW_KEYS))
        atomic_write_json(tmp / "details.json", json_safe({"meta": meta, "rows": details}), default=str)
        write_report(tmp, rows, stds, details, meta, plot_data if plots else None, summary=summary)
