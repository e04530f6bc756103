"""``iif bench``: train one softmax backbone per head, cache its outputs, compare every strategy in seconds.

Per seed and per classifier head:

1. train the backbone end to end with plain softmax CE (:func:`iif.train.fit`);
2. cache features and logits of the train, validation and test splits (:func:`iif.train.extract_features`);
3. from the cache alone (timed as "post-backbone"): softmax, post-process IIF for every variant,
   logit adjustment (post-hoc), tau-norm, decoupled IIF for every variant, cRT, LWS, the validation-tuned
   rows, and temperature scaling fitted on validation;
4. unless ``quick``: end-to-end training with the IIF loss (smooth), IIF_CSL, Balanced Softmax, the
   logit-adjusted loss and LDAM-DRW.

Results go to ``results.json`` (the summary and the ranked rows, see :mod:`iif.bench.report`), ``results_std.json`` (with several
seeds), ``details.json``, ``report.md`` and PNG plots, all written into a staging folder beside the
output folder and swapped into place at the end (:class:`iif.outputs.OutputFolder`), so an interrupted
run never leaves a half-written one, and ``--force`` never leaves the name empty nor removes files
that iif did not write.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..errors import IIFError
from ..metrics import reliability_bins
from ..outputs import OutputFolder, atomic_write_text
from ..weights import VARIANTS
from . import decoupled as dec
from .posthoc import (
    Candidate,
    evaluate_candidates,
    posthoc_candidates,
    select_by_validation,
    tuned_posthoc_candidate,
    valid_variants,
)
from .report import RESULT_KEYS, aggregate_seeds, dumps_results, dumps_rows, printed_report, summarize

__all__ = ["HEADS", "E2E_METHODS", "bench_config", "check_out_dir", "evaluate_cached", "run_bench", "CachedRun"]

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
#: Shot-group thresholds used when the dataset's largest class has <= 100 training images (digits-LT),
#: where SPEC's many > 100 would leave the many-shot group empty.
SMALL_DATASET_SHOTS = (50, 15)
#: Files the bench writes; an output folder holding any of them is refused unless ``force``.
RESULT_FILES = ("results.json", "report.md")


def _packaged_name(dataset: str) -> str:
    return dataset.replace("-", "_") + "_e2e"


def bench_config(dataset: str | None = None, config: str | None = None, overrides: Sequence[str] = ()):
    """The backbone recipe: ``config`` if given, else the packaged ``<dataset>_e2e`` config (or the
    defaults with ``data.name = dataset``); always trained with plain CE, end to end, writing nothing."""
    from ..data import DATASETS
    from ..train import load_config, packaged_configs

    if config is not None:
        cfg = load_config(config)
        if dataset is not None and dataset != cfg.data.name:
            raise IIFError(f"--dataset {dataset!r} and --config (data.name={cfg.data.name!r}) disagree; pass one of them.")
    else:
        name = dataset or "digits-lt"
        if name not in DATASETS:
            raise IIFError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}.")
        packaged = _packaged_name(name)
        cfg = load_config(packaged if packaged in packaged_configs() else {"data": {"name": name}})
        cfg.data.name = name
    cfg.loss.name = "ce"
    cfg.loss.kwargs = {}
    cfg.strategy.name = "e2e"
    cfg.runtime.out_dir = None
    cfg.runtime.progress = False
    cfg.runtime.tensorboard = False
    cfg.eval.every = 0  # only the final evaluation: the bench scores cached logits itself
    from ..train.config import apply_overrides

    apply_overrides(cfg, list(overrides))
    return cfg


def check_out_dir(out: Path, force: bool) -> None:
    """Refuse an ``--out`` the bench may not write (see :class:`iif.outputs.OutputFolder`): an existing file,
    a non-empty folder unless ``force``, and with ``force`` any folder iif did not write."""
    OutputFolder(out, command="bench", force=force)


@dataclass
class CachedRun:
    """What one trained backbone leaves behind: its head and the cached features/logits of each split."""

    head_name: str
    head: torch.nn.Module
    train: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None
    test: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    epoch_seconds: float = float("nan")
    train_seconds: float = float("nan")


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def evaluate_cached(run: CachedRun, freq, *, many: int, few: int, head_cfg: dec.HeadTrainConfig | None = None,
                    variants: Sequence[str] = VARIANTS) -> tuple[list[Candidate], dict[str, Any]]:
    """Every post-backbone method of one cached backbone, as candidates to score; plus plot material.

    Test labels are not used here at all: candidates hold logits only, and every choice (tuned IIF,
    tuned decoupled IIF, tau of tau-norm) is made with :func:`select_posthoc_iif` /
    :func:`select_by_validation` on validation logits and labels.
    """
    counts = freq.image_counts.astype(np.float64)
    total = float(freq.default_total("image"))
    h = run.head_name
    f_tr, _, y_tr = run.train
    f_te, z_te, _ = run.test
    has_val = run.val is not None
    f_va, z_va, y_va = run.val if has_val else (None, None, None)
    dev = f_tr.device
    y_tr = y_tr.to(dev).long()

    cands, skipped = posthoc_candidates(_np(z_te), counts, head=h, val_logits=_np(z_va) if has_val else None, total=total)
    extras: dict[str, Any] = {"skipped_variants": skipped}
    if has_val:
        cands.insert(1 + len(valid_variants(counts, variants, total)[0]),
                     tuned_posthoc_candidate(_np(z_te), _np(z_va), _np(y_va), counts, head=h, total=total))

    # tau-norm: no training; tau picked on validation when there is one (Kang et al. 2020).
    if has_val:
        by_tau = {t: dec.tau_norm_logits(run.head, f_va, t) for t in TAUS}
        tau = float(select_by_validation({str(t): _np(v) for t, v in by_tau.items()}, _np(y_va)))
    else:
        tau = 1.0
    cands.append(Candidate("tau-norm", "post-hoc", f"tau={tau:g}", h, _np(dec.tau_norm_logits(run.head, f_te, tau)),
                           _np(dec.tau_norm_logits(run.head, f_va, tau)) if has_val else None))

    # Decoupled IIF for every valid variant: retrain the head on cached train features (Eq. 15).
    ok, _ = valid_variants(counts, variants, total)
    decoupled_val: dict[str, np.ndarray] = {}
    decoupled_cands: dict[str, Candidate] = {}
    for v in ok:
        head, adjust = dec.iif_decoupled(run.head, f_tr, y_tr, freq, v, head_cfg)
        with torch.no_grad():
            zt = adjust(dec.head_logits(head, f_te))
            zv = adjust(dec.head_logits(head, f_va)) if has_val else None
        c = Candidate("IIF", "decoupled", v, h, _np(zt), None if zv is None else _np(zv))
        cands.append(c)
        decoupled_cands[v] = c
        if zv is not None:
            decoupled_val[v] = _np(zv)
        if v == "smooth":
            extras["norms_before"] = dec.head_weight_norms(run.head).tolist()
            extras["norms_after"] = dec.head_weight_norms(head).tolist()
    if decoupled_val:
        best = select_by_validation(decoupled_val, _np(y_va))
        b = decoupled_cands[best]
        cands.append(Candidate("IIF tuned", "decoupled", best, h, b.test_logits, b.val_logits,
                               info={"selection": {"variant": best, "gamma": 1.0}}))

    crt_head = dec.crt(run.head, f_tr, y_tr, head_cfg)
    lws_head = dec.lws(run.head, f_tr, y_tr, head_cfg)
    for name, module in (("cRT", crt_head), ("LWS", lws_head)):
        cands.append(Candidate(name, "decoupled", None, h, _np(dec.head_logits(module, f_te)),
                               _np(dec.head_logits(module, f_va)) if has_val else None))
    return cands, extras


def _train_backbone(cfg, splits, device, log) -> tuple[Any, float, float]:
    from ..train import fit

    t0 = time.perf_counter()
    res = fit(cfg, out_dir=None, device=device, splits=splits)
    total = time.perf_counter() - t0
    secs = [float(r["seconds"]) for r in res.history if "seconds" in r]
    return res, (statistics.median(secs) if secs else float("nan")), total


def _cache(res, splits, device, batch_size: int) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None]:
    from ..train import extract_features

    out = {}
    for name in ("train", "val", "test"):
        ds = getattr(splits, name, None)
        out[name] = None if ds is None else extract_features(res.model, ds, device, batch_size)
    return out


def _e2e_candidates(cfg, splits, device, head: str, seed: int, log) -> tuple[list[Candidate], float]:
    """End-to-end baselines; each predicts with its loss's ``adjust_logits`` (SPEC section 3)."""
    from ..train import extract_features

    out, seconds = [], 0.0
    for method, loss, variant in E2E_METHODS:
        c = copy.deepcopy(cfg)
        c.loss.name = loss
        c.loss.kwargs = {}
        if loss in ("iif", "iif_csl"):
            c.loss.variant = "smooth"
        if loss == "ldam":
            # Margins live on the cosine scale: with the cosine head (s = 16) the logits are s * cos, so
            # max_margin 0.5 on cosines is 0.5 * s on logits and the loss adds no scale of its own.
            s = float(c.model.kwargs.get("scale", 16.0)) if head == "cosine" else 1.0
            c.loss.kwargs = {"scale": 1.0, "max_margin": 0.5 * s, "drw_epoch": max(1, int(0.8 * c.schedule.epochs))}
        log(f"  [seed {seed}, {head}] end-to-end {method} ...")
        res, _, secs = _train_backbone(c, splits, device, log)
        seconds += secs
        adjust = res.criterion.adjust_logits if res.criterion is not None else (lambda z: z)
        with torch.no_grad():
            zt = adjust(extract_features(res.model, splits.test, device, cfg.eval.batch_size)[1].to(device))
            zv = adjust(extract_features(res.model, splits.val, device, cfg.eval.batch_size)[1].to(device)) if splits.val is not None else None
        out.append(Candidate(method, "end-to-end", variant, head, _np(zt), None if zv is None else _np(zv)))
    return out, seconds


def _rss_peak_mb() -> float:
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
    head_cfg: dec.HeadTrainConfig | None = None,
    splits=None,
    plots: bool = True,
    threads: int | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the bench and write its outputs to ``out``; returns ``{"rows", "stds", "details", "meta", "out"}``.

    ``splits`` (prebuilt :class:`iif.data.DatasetSplits`) skips ``build_datasets``; ``overrides`` are
    ``dotted.key=value`` config overrides of the backbone recipe (e.g. ``schedule.epochs=2``).
    ``threads``: CPU threads for training (default: 1 for training sets under 10k images, else torch's
    default); the cached-feature part always runs on one thread.
    """
    t_start = time.perf_counter()
    out = Path(out)
    folder = OutputFolder(out, command="bench", force=force)  # refuses a bad --out before any training
    if int(seeds) < 1:
        raise IIFError(f"--seeds must be >= 1; got {seeds}.")
    heads = [h.strip() for h in heads if h.strip()]
    bad = [h for h in heads if h not in ("cosine", "linear")]
    if not heads or bad:
        raise IIFError(f"--heads must list cosine and/or linear (comma separated); got {','.join(heads) or 'nothing'}.")
    cfg = bench_config(dataset, config, overrides)
    if device is not None:
        cfg.runtime.device = device
    from ..train.engine import build_splits, resolve_device

    dev = resolve_device(cfg.runtime.device)
    if splits is None:
        splits = build_splits(cfg)
    freq = splits.freq
    counts = freq.image_counts
    if many is None or few is None:
        dm, df = SMALL_DATASET_SHOTS if counts.max() <= 100 else (100, 20)
        many = dm if many is None else many
        few = df if few is None else few
    log(f"iif bench: {cfg.data.name}, {splits.num_classes} classes, {int(counts.sum())} training images "
        f"(largest {int(counts.max())}, smallest {int(counts.min())}); heads {','.join(heads)}; seeds {seeds}; "
        f"{'quick' if quick else 'full'}; device {dev}")
    head_cfg = head_cfg or dec.HeadTrainConfig()
    if threads is None and dev.type == "cpu" and len(splits.train.targets) < SMALL_TRAIN_SET:
        threads = 1
    train_threads = threads

    per_seed_rows: list[list[dict]] = []
    all_details: list[dict] = []
    timings: list[dict] = []
    plot_data: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    for seed in range(int(seeds)):
        seed_rows: list[dict] = []
        for h in heads:
            c = copy.deepcopy(cfg)
            c.model.head = h
            if h == "cosine":
                c.model.kwargs = {**{"scale": 16.0}, **{k: v for k, v in c.model.kwargs.items() if k in ("scale", "learnable_scale")}}
            else:
                c.model.kwargs = {k: v for k, v in c.model.kwargs.items() if k == "bias"}
            c.runtime.seed = seed
            log(f"  [seed {seed}, {h}] backbone: {c.model.arch}, softmax CE, {c.schedule.epochs} epochs ...")
            with _threads(train_threads):
                res, epoch_s, train_s = _train_backbone(c, splits, dev, log)
                # extract_features returns CPU tensors; the head lives on ``dev``, so keep the cache there too.
                cache = {k: None if v is None else tuple(t.to(dev) for t in v)
                         for k, v in _cache(res, splits, dev, c.eval.batch_size).items()}
            run = CachedRun(h, res.model.classifier, cache["train"], cache["val"], cache["test"], epoch_s, train_s)
            t0 = time.perf_counter()
            hc = dec.HeadTrainConfig(**{**head_cfg.__dict__, "seed": seed})
            with _threads(1 if dev.type == "cpu" else None):
                cands, extras = evaluate_cached(run, freq, many=many, few=few, head_cfg=hc)
                y_te = _np(run.test[2]).astype(np.int64)
                y_va = _np(run.val[2]).astype(np.int64) if run.val is not None else None
                rows, details = evaluate_candidates(cands, y_te, counts, val_labels=y_va, many=many, few=few)
            post_s = time.perf_counter() - t0
            skipped.update(extras["skipped_variants"])
            e2e_s = 0.0
            if not quick:
                with _threads(train_threads):
                    e2e, e2e_s = _e2e_candidates(c, splits, dev, h, seed, log)
                r2, d2 = evaluate_candidates(e2e, y_te, counts, val_labels=y_va, many=many, few=few, reference=cands)
                rows += r2
                details += d2
            timings.append({"seed": seed, "head": h, "backbone_epoch_s": epoch_s, "backbone_train_s": train_s,
                            "epochs": c.schedule.epochs, "post_backbone_s": post_s, "e2e_baselines_s": e2e_s})
            log(f"  [seed {seed}, {h}] backbone {train_s:.1f}s ({epoch_s:.2f}s/epoch); all post-backbone rows {post_s:.2f}s")
            for r, d in zip(rows, details):
                d = {k: v for k, v in d.items()}
                all_details.append({"seed": seed, **r, **d})
            if seed == 0:
                plot_data[h] = _plot_material(cands, rows, details, extras, y_te, y_va)
            seed_rows += rows
        per_seed_rows.append(seed_rows)

    means, stds = aggregate_seeds(per_seed_rows)
    meta = {
        "dataset": cfg.data.name, "num_classes": int(splits.num_classes), "train_counts": [int(x) for x in counts],
        "imbalance_ratio": float(counts.max() / max(counts.min(), 1)), "seeds": int(seeds), "heads": list(heads),
        "quick": bool(quick), "device": str(dev), "arch": cfg.model.arch, "epochs": cfg.schedule.epochs,
        "many": many, "few": few, "val_size": None if splits.val is None else len(splits.val.targets),
        "test_size": len(splits.test.targets), "timings": timings, "head_retraining": head_cfg.__dict__,
        "k_total": float(freq.default_total("image")), "threads": threads, "skipped_variants": skipped,
    }
    means, stds, summary = summarize(means, stds, all_details, meta)  # ranked on validation, identical rows folded
    text = printed_report(means, stds if seeds > 1 else None, summary)
    log("\n" + text)
    meta["wall_s"] = time.perf_counter() - t_start
    meta["peak_rss_mb"] = _rss_peak_mb()
    _write_outputs(folder, means, stds if seeds > 1 else None, all_details, meta, plot_data, plots, summary)
    log(f"\nwrote {out}/results.json and {out}/report.md ({meta['wall_s']:.1f}s, peak RSS {meta['peak_rss_mb']:.0f} MB)")
    return {"rows": means, "stds": stds if seeds > 1 else None, "details": all_details, "meta": meta, "out": out,
            "summary": summary}


def _plot_material(cands, rows, details, extras, y_te, y_va) -> dict:
    """Per-class accuracy of softmax and the validation-chosen IIF rows, reliability bins, weight norms."""
    by = {(r["method"], r["strategy"]): (c, r, d) for c, r, d in zip(cands, rows, details)}
    per_class = {}
    for key, label in ((("softmax", "end-to-end"), "softmax"),
                       (("IIF tuned", "post-process"), "post-process IIF (chosen on val)"),
                       (("IIF tuned", "decoupled"), "decoupled IIF (chosen on val)")):
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


def _write_outputs(folder: OutputFolder, rows, stds, details, meta, plot_data, plots: bool, summary) -> None:
    """Write everything into a staging folder beside the output folder, then swap it into place atomically."""
    from .report import write_report

    with folder as tmp:
        atomic_write_text(tmp / "results.json", dumps_results(rows, summary))
        if stds is not None:
            atomic_write_text(tmp / "results_std.json", dumps_rows(stds, RESULT_KEYS))
        atomic_write_text(tmp / "details.json",
                          json.dumps({"meta": meta, "rows": details}, indent=1, default=_json_default) + "\n")
        write_report(tmp, rows, stds, details, meta, plot_data if plots else None, summary=summary)


def _json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)
