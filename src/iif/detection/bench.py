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
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .._version import __version__
from ..errors import IIFError
from ..outputs import OutputFolder, atomic_write_json, atomic_write_text, json_safe
from ..resources import peak_rss_mb
from .archs import has_masks
from .bench_data import DATA_KEYS, _Data, _load_data, default_benchmark_dir, split_data_overrides
from .bench_presets import RowSpec, bench_rows
from .bench_settings import (DEFAULT_BOOTSTRAP, V2_DEFAULTS, DetBenchSettings, _apply_v2_defaults, _check_settings,
                             _scale_schedule, quick_settings)

# Settings, data and rows live in bench_settings / bench_data / bench_presets; their public names are
# re-exported here.
__all__ = ["RowSpec", "POSTHOC_ROWS", "E2E_ROWS", "TUNE_GRIDS", "DetBenchSettings", "run_det_bench", "default_benchmark_dir",
           "quick_settings", "V2_DEFAULTS", "DATA_KEYS", "split_data_overrides", "DEFAULT_BOOTSTRAP"]


# The rows, in table order, from the packaged bench_detection.yaml (iif.detection.bench_presets; each margin spec
# checked by det-train's validator): post-hoc rows switched on each seed's softmax detector; tuned rows (issue
# 15), per method the candidates the val split chooses among by AP (mask AP; box AP when the detector has no
# mask head), the chosen one then scored once on the reported (test) split, only on data with a val split
# distinct from the reported one (a generator-2 benchmark); a candidate use_margin refuses is left out; end-to-
# end rows, each a det-train config's margin section (det_bench_iif ...), trained with the preset's settings.
POSTHOC_ROWS: tuple[RowSpec, ...]
TUNE_GRIDS: dict[str, tuple[RowSpec, ...]]
E2E_ROWS: tuple[RowSpec, ...]
POSTHOC_ROWS, TUNE_GRIDS, E2E_ROWS = bench_rows()


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


def _freq(train):
    return train.freq


def _category_ids(val) -> list[int]:
    return list(val.category_ids)


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
        extra = {} if s.pretrain_epochs is None else {"epochs": int(s.pretrain_epochs)}
        kw["backbone_weights"] = resolve_backbone_weights(kw["backbone_weights"], arch=s.arch, data_root=root, log=log,
                                                          **extra)
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

    masks = has_masks(s.arch)
    if cache is not None:  # a batch at a time, each kept mask pasted and encoded once for all rows
        return [r for batch in iter_results(model, cache, _category_ids(data.val), masks=masks) for r in batch]
    return predict(model, data.val, device=device, batch_size=s.batch_size_eval)


def _make_cache(model, data: _Data, device: str, s: DetBenchSettings, dataset=None):
    """The RoI cache of ``dataset`` (default: the reported split ``data.val``); None for a one-stage model and for
    a cascade (its scores average three box stages, each on the previous stage's boxes, which the one-stage cache
    cannot replay): their post-hoc rows run full inference."""
    from .data import collate
    from .posthoc import cache_roi_inputs

    if not hasattr(model, "roi_heads") or getattr(model.roi_heads, "extra_stage_predictors", None):
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

    masks = has_masks(s.arch)
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
    from .report import row_label

    if data.tune is None or cache is None:
        return [], [], {}
    masks = has_masks(s.arch)
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
        dets[row_label(rows[-1])] = results  # one label per method whatever was chosen (as the seed-mean row)
        log(f"det-bench: seed {seed}: {_short(spec)}: AP {rows[-1]['AP']:.1f} APr {_fmt(rows[-1]['APr'])}")
    use_margin(model, "softmax")
    return rows, details, dets


def _one_seed(seed: int, s: DetBenchSettings, data: _Data, device: str, log, want_examples: bool,
              store=None) -> dict[str, Any]:
    from .margins import use_margin

    masks = has_masks(s.arch)
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
            log(f"det-bench: seed {seed}: {_short(spec)}: AP {rows[-1]['AP']:.1f} APr {_fmt(rows[-1]['APr'])} "
                f"dAP_FP {_fmt(rows[-1]['dAP_FP'])}")
            if hasattr(m, "roi_heads"):
                norms[_short(spec)] = _classifier_norms(m).tolist()
            if want_examples and spec.method == "iif" and spec.variant == "raw":
                drawn[_short(spec)] = m
    timings["e2e_s"] = e2e_s
    timings["seed_total_s"] = time.perf_counter() - t_start
    examples = _examples(drawn, data, s, device) if want_examples and drawn else None
    return {"rows": rows, "details": details, "timings": timings, "norms": norms, "examples": examples,
            "skipped": skipped, "detections": dets}


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
                        masks=has_masks(s.arch), groups=groups, samples=s.bootstrap, seed=0,
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
    from ..runtime import resolve_device

    dev = str(resolve_device(device))  # None / "auto": cuda when available; an unknown name is one line
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
            "schedule": sched, "wall_s": wall, "peak_rss_mb": peak_rss_mb(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
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
