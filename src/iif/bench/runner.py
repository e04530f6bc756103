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

The config every row starts from is :mod:`iif.bench.base`; the rows of one (seed, head) block are built in
:mod:`iif.bench.rows`. This module runs the blocks, keeps them for a resumed run and writes the outputs.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..errors import IIFError
from ..metrics import reliability_bins, shot_thresholds
from ..outputs import OutputFolder, atomic_write_json, atomic_write_text, json_safe
from ..resources import peak_rss_mb
from ..weights import VARIANTS
from .base import BASE_CONFIG, BenchBase, _head_overrides, _last_wins, _stage2_label, bench_base, bench_config
from .posthoc import ROW_KEYS, Candidate, evaluate_candidates, valid_variants
from .report import aggregate_seeds, dumps_results, dumps_rows, dumps_summary, printed_report, row_id, summarize
from .rows import (E2E_METHODS, _decoupled_rows, _e2e_rows, _posthoc_rows, _Row, _train, checked_methods,
                   method_e2e_rows, method_posthoc_rows)

__all__ = ["HEADS", "E2E_METHODS", "BenchBase", "bench_base", "bench_config", "check_out_dir", "run_bench"]

HEADS: tuple[str, ...] = ("cosine", "linear")
#: Files the bench writes; an output folder holding any of them is refused unless ``force``.
RESULT_FILES = ("results.json", "report.md")


def check_out_dir(out: Path, force: bool) -> None:
    """Refuse an ``--out`` the bench may not write (see :class:`iif.outputs.OutputFolder`): an existing file,
    a non-empty folder unless ``force``, and with ``force`` any folder iif did not write."""
    OutputFolder(out, command="bench", force=force)


def _seed_loop(seeds, heads, base, splits, dev, threads, counts, total, variants, skipped_variants, stage2, quick,
               y_te, y_va, many, few, store, log, methods=()):
    """Every (seed, head) block of :func:`run_bench`: the backbone, its post-hoc and decoupled rows, the
    end-to-end rows, the rows of ``methods``; blocks kept by an interrupted run of the same settings (``store``)
    are reused."""
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
                    cands += method_posthoc_rows(res.model, f_te, z_te, f_va, z_va, counts, h, bb, methods)
                    post_s = time.perf_counter() - t0
                    t0 = time.perf_counter()
                    dec, extras = _decoupled_rows(base, bb, state, splits, dev, h, seed, variants, stage2, log)
                    dec_s = time.perf_counter() - t0
                extras["norms_before"] = res.model.classifier.weight.detach().norm(dim=1).cpu().double().tolist()
                extras["skipped_variants"] = skipped_variants
                cands += dec
                _save_block(store, seed, h, res.model, cands, extras, (epoch_s, train_s, post_s, dec_s))
            e2e, e2e_s, methods_s = _e2e_blocks(store, seed, h, quick, methods, base, bb, splits, dev, threads, log)
            rows, details = evaluate_candidates(cands, y_te, counts, val_labels=y_va, many=many, few=few)
            if e2e:
                r2, d2 = evaluate_candidates(e2e, y_te, counts, val_labels=y_va, many=many, few=few, reference=cands)
                rows += r2
                details += d2
            timings.append({"seed": seed, "head": h, "backbone_epoch_s": epoch_s, "backbone_train_s": train_s,
                            "epochs": c.schedule.epochs, "post_backbone_s": post_s + dec_s, "post_hoc_s": post_s,
                            "decoupled_s": dec_s,
                            "e2e_baselines_s": e2e_s, **({"methods_e2e_s": methods_s} if methods else {})})
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


def _e2e_blocks(store, seed: int, h: str, quick: bool, methods, base, bb, splits, dev, threads,
                log) -> tuple[list[Candidate], float, float]:
    """The end-to-end rows of one (seed, head): the baselines unless ``quick``, then those of ``methods``
    (each kept in ``store`` as its own block); returns ``(rows, baselines' seconds, methods' seconds)``."""
    out: list[Candidate] = []
    seconds = [0.0, 0.0]
    for i, (name, active) in enumerate(((f"{h}-e2e", not quick), (f"{h}-methods", bool(methods)))):
        if not active:
            continue
        kept = _load_block(store, seed, name)
        if kept is not None:
            log(f"  [seed {seed}, {h}] reusing the kept end-to-end rows of an interrupted run (not retrained)")
            rows, _, (seconds[i],) = kept
        else:
            with _threads(threads):
                rows, seconds[i] = (_e2e_rows(base, bb, splits, dev, h, seed, log) if i == 0 else
                                    method_e2e_rows(base, bb, splits, dev, h, seed, methods, log))
            _save_block(store, seed, name, None, rows, {}, (seconds[i],))
        out += rows
    return out, seconds[0], seconds[1]


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
    methods: Sequence[str] = (),
) -> dict[str, Any]:
    """Run the bench and write its outputs to ``out``; returns ``{"rows", "stds", "details", "meta", "out", "summary"}``.

    ``splits`` (prebuilt :class:`iif.data.DatasetSplits`) skips ``build_datasets``; ``overrides`` are
    ``dotted.key=value`` config overrides of every row (e.g. ``schedule.epochs=2``; ``decoupled.epochs=2``
    shortens stage 2 and is shown in the decoupled rows). ``many``/``few``: shot-group thresholds (default
    :func:`iif.metrics.shot_thresholds`). ``threads``: CPU threads for training (default: 1 for training sets
    under 10k images, else torch's default). ``methods``: rows of named methods (:func:`.rows.checked_methods`).
    """
    from ..resources import training_threads
    from ..train import build_splits, resolve_device

    t_start = time.perf_counter()
    out = Path(out)
    folder = OutputFolder(out, command="bench", force=force)  # refuses a bad --out before any training
    heads = _checked_heads(seeds, heads)
    methods = checked_methods(methods)
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

    key = settings_key({"config": json_safe(_config_dict(cfg)), "threads": threads, "splits": _splits_print(splits),
                        **({"methods": list(methods)} if methods else {})}, ())
    open_staging(folder, key, log)
    store = ResumeStore(folder.staging, key, log)
    with keep_on_failure(folder, store, log):
        means, stds, all_details, timings, plot_data = _seed_loop(
            seeds, heads, base, splits, dev, threads, counts, total, variants, skipped_variants, stage2, quick, y_te,
            y_va, many, few, store, log, methods)
        _attach_commands(means, all_details)
    meta = _bench_meta(cfg, splits, counts, seeds=seeds, heads=heads, quick=quick, dev=dev, many=many, few=few,
                       timings=timings, base=base, total=total, threads=threads, skipped_variants=skipped_variants)
    meta.update({"methods": list(methods)} if methods else {})
    means, stds, summary = summarize(means, stds, all_details, meta)  # ranked on validation, identical rows folded
    text = printed_report(means, stds if seeds > 1 else None, summary)
    log("\n" + text)
    meta["wall_s"] = time.perf_counter() - t_start
    meta["peak_rss_mb"] = peak_rss_mb()
    _write_outputs(folder, means, stds if seeds > 1 else None, all_details, meta, plot_data, plots, summary,
                   base.saved_as is not None, store=store)
    log(f"\nwrote {out}/results.json and {out}/report.md ({meta['wall_s']:.1f}s, peak RSS {peak_rss_mb():.0f} MiB)")  # after the plots, as /usr/bin/time -v
    return {"rows": means, "stds": stds if seeds > 1 else None, "details": all_details, "meta": meta, "out": out,
            "summary": summary}


def _checked_heads(seeds: int, heads: Sequence[str]) -> list[str]:
    """``heads`` without blanks, after refusing ``seeds`` < 1 and any head that is not cosine or linear."""
    if int(seeds) < 1:
        raise IIFError(f"--seeds must be >= 1; got {seeds}.")
    heads = [h.strip() for h in heads if h.strip()]
    bad = [h for h in heads if h not in ("cosine", "linear")]
    if not heads or bad:
        raise IIFError(f"--heads must list cosine and/or linear (comma separated); got {','.join(heads) or 'nothing'}.")
    return heads


def _bench_meta(cfg, splits, counts, *, seeds, heads, quick, dev, many, few, timings, base: BenchBase, total,
                threads, skipped_variants) -> dict[str, Any]:
    """The run's record (``meta`` of ``details.json``): data, settings, timings, the base config and overrides."""
    return {
        "dataset": cfg.data.name, "num_classes": int(splits.num_classes), "train_counts": [int(x) for x in counts],
        "imbalance_ratio": float(counts.max() / max(counts.min(), 1)), "seeds": int(seeds), "heads": list(heads),
        "quick": bool(quick), "device": str(dev), "arch": cfg.model.arch, "epochs": cfg.schedule.epochs,
        "many": many, "few": few, "val_size": None if splits.val is None else len(splits.val.targets),
        "test_size": len(splits.test.targets), "timings": timings, "base_config": base.source,
        "overrides": _last_wins(base.overrides), "head_retraining": _stage2_recipe(cfg),
        "k_total": total, "threads": threads, "skipped_variants": skipped_variants,
    }


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
