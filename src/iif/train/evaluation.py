"""Scoring a trained model: logits and features of a split, metrics with post-hoc adjusters, a checkpoint.

Moved out of :mod:`iif.train.engine` (which keeps the training loop). The forward pass itself
(:func:`predict`, :func:`extract_features`) is :mod:`iif.train.inference`, re-exported here. Public names are
re-exported by :mod:`iif.train`::

    from iif.train import predict, extract_features, evaluate, evaluate_checkpoint
    feats, logits, labels = extract_features(model, splits.test, "cpu", batch_size=256)
    metrics = evaluate_checkpoint("runs/x/last.pt", adjust=["iif:smooth", "la:1.0"])
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import torch
from torch import nn

from ..errors import IIFError
from .build import StageSpec, build_criterion, build_model_for, build_splits, config_inputs, resolve_device
from .checkpoint import load_checkpoint
from .config import load_config
from .decoupled import shape_stage2_model
from .distributed import DistInfo
from .inference import eval_split, extract_features, predict
from .strategies import build_adjuster

__all__ = ["predict", "extract_features", "evaluate", "loss_adjuster", "evaluate_checkpoint", "restore_checkpoint",
           "RestoredCheckpoint", "checkpoint_preprocess", "save_logits", "LOGIT_FILES", "val_counts",
           "metrics_document"]


def val_counts(splits) -> list[int]:
    """Validation images per class, in class order (all zeros when the run has no validation split): what
    ``final_metrics.json`` records as ``val_counts``, so a class the validation split missed (and that
    validation-based choices therefore ignored) can be seen in the run folder."""
    import numpy as np

    c = int(splits.num_classes)
    val = getattr(splits, "val", None)
    if val is None:
        return [0] * c
    t = np.asarray(torch.as_tensor(val.targets).cpu(), dtype=np.int64)
    return [int(x) for x in np.bincount(t, minlength=c)[:c]]


def metrics_document(metrics: dict, splits) -> dict:
    """What ``final_metrics.json`` holds: ``metrics`` (``raw``, ``adjusted``, one entry per adjuster) plus
    ``val_counts`` (:func:`val_counts`). The in-memory ``TrainResult.final_metrics`` stays metrics only."""
    return {**metrics, "val_counts": val_counts(splits)}


def evaluate(model: nn.Module, dataset, train_counts, device: torch.device, *, adjusters: dict[str, Callable] | None = None,
             batch_size: int = 256, many: int | None = None, few: int | None = None, bins: int = 10, amp: str = "none",
             channels_last: bool = False, info: DistInfo | None = None, resident: bool = True,
             num_workers: int = 0) -> dict[str, dict]:
    """Metrics of the raw logits and of every adjusted version, side by side.

    ``adjusters`` maps a name (``adjusted`` for the loss's own decision rule, ``iif:smooth``...) to a
    function ``(features, logits) -> logits``. Returns ``{"raw": metrics, name: metrics, ...}``. ``many`` /
    ``few`` None: the library's one shot-group rule (:func:`iif.metrics.shot_thresholds`).
    """
    f, z, y = predict(model, dataset, device, batch_size, amp=amp, channels_last=channels_last, info=info,
                      resident=resident, num_workers=num_workers)
    return score_predictions(f, z, y, train_counts, adjusters, many, few, bins)


def score_predictions(features: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, train_counts,
                      adjusters: dict[str, Callable] | None = None, many: int | None = None,
                      few: int | None = None, bins: int = 10) -> dict[str, dict]:
    """:func:`iif.metrics.evaluate_logits` of the raw logits (``raw``) and of each adjuster's output."""
    from ..metrics import evaluate_logits

    out = {"raw": evaluate_logits(logits, labels, train_counts, many, few, bins)}
    for name, fn in (adjusters or {}).items():
        with torch.no_grad():
            out[name] = evaluate_logits(fn(features, logits), labels, train_counts, many, few, bins)
    return out


def loss_adjuster(criterion: nn.Module | None) -> Callable | None:
    """The loss's own inference rule (``adjust_logits``), e.g. ``w * z`` for the IIF loss (docs/method.md,
    "IIF loss")."""
    fn = getattr(criterion, "adjust_logits", None)
    if fn is None:
        return None
    from ..losses import LossBase

    if isinstance(criterion, LossBase) and type(criterion).adjust_logits is LossBase.adjust_logits:
        return None  # identity: "adjusted" would repeat "raw"

    def apply(features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return fn(logits)

    return apply


def checkpoint_preprocess(splits) -> dict:
    """How the evaluation split turns an image file into the model's input, as plain data a checkpoint can hold
    (``weights_only=True``): ``{"kind", "image_size", "channels", "mean", "std", "class_names"}``.

    ``kind`` is ``"tensor"`` for in-memory datasets (images kept at ``image_size`` pixels, so a new image is
    resized to that square, then scaled to [0, 1] and normalised) and ``"pil"`` for file-backed datasets
    (resize to ``image_size * 256 / 224`` then centre-crop ``image_size``, as
    :func:`iif.data.transforms.build_transform` does for evaluation). :mod:`iif.predict` rebuilds it.
    """
    from ..data.tensor_dataset import TensorImageDataset

    test = getattr(splits, "test", None)
    kind = "tensor" if isinstance(test, TensorImageDataset) else "pil"
    mean = tuple(getattr(splits, "mean", ()) or getattr(test, "mean", ()) or ())
    std = tuple(getattr(splits, "std", ()) or getattr(test, "std", ()) or ())
    return {"kind": kind, "image_size": int(splits.image_size), "channels": int(splits.in_channels),
            "mean": [float(v) for v in mean], "std": [float(v) for v in std],
            "class_names": [str(n) for n in splits.class_names]}


class RestoredCheckpoint:
    """A checkpoint's model (eval mode, on ``device``), config, data splits (when built) and stored dict."""

    def __init__(self, ckpt: dict, cfg, model: nn.Module, splits, device: torch.device) -> None:
        self.ckpt, self.cfg, self.model, self.splits, self.device = ckpt, cfg, model, splits, device

    @property
    def path(self) -> str:
        return str(self.ckpt["path"])

    def own_adjuster(self) -> Callable | None:
        """The checkpoint's loss's own decision rule (``w * z`` for the IIF loss), or None."""
        stage = self.ckpt.get("stage", "e2e")
        spec = StageSpec.decoupled(self.cfg) if stage == "stage2" else StageSpec.main(self.cfg, stage)
        if self.splits is not None:
            freq = self.splits.freq
        else:
            from ..frequency import ClassFrequency

            freq = ClassFrequency.from_counts([int(c) for c in self.ckpt["class_counts"]])
        try:
            return loss_adjuster(build_criterion(spec, freq))
        except IIFError:
            return None


def _selected_checkpoint(path: str | os.PathLike) -> dict:
    folder = Path(path)
    best = folder / "best.pt"
    if folder.is_dir() and best.is_file():
        ckpt = load_checkpoint(best)
        select = (ckpt.get("config") or {}).get("eval", {}).get("select", "best")
        if select != "last" or not (folder / "last.pt").is_file():
            return ckpt
    return load_checkpoint(path)


def restore_checkpoint(path: str | os.PathLike, device: str | None = None, splits=None,
                       build_data: bool = True) -> RestoredCheckpoint:
    """Load a training checkpoint (``weights_only=True``) and rebuild its model with the stored weights.

    ``build_data`` (default) also rebuilds the dataset from the stored config (needed for metrics and
    logits of its splits) and checks its training counts against the stored ones; without it the model is
    built from the stored ``arch`` and ``preprocess`` records (what :mod:`iif.predict` needs).

    A run folder stands for the checkpoint its final metrics came from: ``best.pt`` (best epoch on
    validation) unless the run's ``eval.select`` is ``last`` or it has no ``best.pt``, then ``last.pt``.
    """
    ckpt = _selected_checkpoint(path)
    if "config" not in ckpt:
        raise IIFError(f"{ckpt['path']} holds only weights (no config); evaluate it with fit(strategy=posthoc, "
                       "posthoc.checkpoint=...) and a config that describes the model.")
    cfg = load_config(ckpt["config"])
    dev = resolve_device(device or cfg.runtime.device)
    pre = ckpt.get("preprocess")
    if splits is None and (build_data or not isinstance(pre, dict)):
        splits = build_splits(cfg)
    if splits is not None:
        model = build_model_for(cfg, splits)
    else:
        shape = SimpleNamespace(num_classes=int(ckpt["arch"]["num_classes"]), in_channels=int(pre["channels"]),
                                image_size=int(pre["image_size"]), class_names=list(pre["class_names"]))
        model = build_model_for(cfg, shape)
    from ..models import load_state

    if ckpt.get("stage") == "stage2":  # a stage-2 LWS checkpoint holds a wrapped classifier (iif.train.decoupled)
        shape_stage2_model(model, cfg.decoupled)
    load_state(model, ckpt["model"])
    model.to(dev).eval()
    if splits is not None:
        counts = splits.freq.image_counts
        stored = ckpt.get("class_counts")
        if stored is not None and [int(c) for c in counts] != [int(c) for c in stored]:
            raise IIFError(f"the dataset rebuilt from {ckpt['path']}'s config has other class counts than at "
                           "training time; check data.root and data.* settings.")
    return RestoredCheckpoint(ckpt, cfg, model, splits, dev)


#: Files :func:`save_logits` writes (beside ``manifest.json``, the iif output marker and, for image-file
#: datasets, ``files_<split>.txt``).
LOGIT_FILES = ("logits_test.npy", "labels_test.npy", "logits_val.npy", "labels_val.npy", "counts.json")


def save_logits(restored: RestoredCheckpoint, out_dir: str | os.PathLike, outputs: dict[str, tuple],
                force: bool = False, inputs=None, run_folders=None) -> Path:
    """Write ``outputs`` (``{"test": (features, logits, labels), "val": ...}``) as ``logits_<split>.npy`` /
    ``labels_<split>.npy``, the training counts as ``counts.json`` (:meth:`iif.ClassFrequency.save`, read
    back by ``iif posthoc --counts`` and ``iif weights``), for file-backed splits ``files_<split>.txt`` (the
    image path of each row, in order) and ``manifest.json``, all at once
    (:class:`iif.outputs.OutputFolder`: a non-empty folder is refused unless it is an earlier
    ``iif eval --save-logits`` output and ``force``). ``inputs``, ``run_folders``: what the evaluation read
    (:func:`iif.outputs.refuse_overlap`), checked again at the final swap."""
    import numpy as np

    from ..outputs import OutputFolder, atomic_write_bytes, atomic_write_json, atomic_write_text

    folder = OutputFolder(out_dir, command="eval-logits", force=force, inputs=inputs, run_folders=run_folders)
    with folder as staging:
        from ..metrics import shot_thresholds

        cfg = restored.cfg
        many, few = shot_thresholds(restored.splits.freq.image_counts, cfg.eval.many, cfg.eval.few)
        manifest = {"checkpoint": restored.path, "dataset": cfg.data.name, "head": cfg.model.head,
                    "stage": restored.ckpt.get("stage", "e2e"), "num_classes": int(restored.splits.num_classes),
                    "class_names": list(restored.splits.class_names), "counts": "counts.json",
                    "many": many, "few": few, "splits": {}}
        for split, (_, z, y) in outputs.items():
            for kind, arr in (("logits", z.float().numpy()), ("labels", y.long().numpy())):
                buf = io.BytesIO()
                np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
                atomic_write_bytes(staging / f"{kind}_{split}.npy", buf.getvalue())
            manifest["splits"][split] = {"logits": f"logits_{split}.npy", "labels": f"labels_{split}.npy",
                                         "num_samples": int(z.shape[0])}
            samples = getattr(getattr(restored.splits, split, None), "samples", None)
            if samples is not None and len(samples) == int(z.shape[0]):  # file-backed: which image each row is
                atomic_write_text(staging / f"files_{split}.txt", "".join(f"{path}\n" for path, _ in samples))
                manifest["splits"][split]["files"] = f"files_{split}.txt"
        restored.splits.freq.save(staging / "counts.json")
        atomic_write_json(staging / "manifest.json", manifest)
    return folder.path


def evaluate_checkpoint(path: str | os.PathLike, adjust: list[str] | tuple = (), split: str = "test",
                        device: str | None = None, batch_size: int | None = None, splits=None,
                        save_logits_to: str | os.PathLike | None = None, force: bool = False,
                        protect: dict | None = None) -> dict[str, dict]:
    """Rebuild the model and data a checkpoint was trained with and score it: raw logits, the loss's own
    adjusted logits (if its loss has one) and each ``adjust`` spec (``iif:smooth``, ``la:1.0``, ``taunorm:1.0``).

    ``save_logits_to``: also write the test and validation logits, labels and training counts there
    (:func:`save_logits`; the folder is checked before any work). ``protect``: ``{option: output path}`` of
    the caller (``iif eval``'s ``--json``), refused like ``save_logits_to`` when it would touch an input: the
    checkpoint, its run's files, or the data its config reads (:func:`iif.outputs.refuse_overlap`).
    """
    from ..outputs import OutputFolder, checkpoint_inputs, refuse_overlap

    if save_logits_to is not None:
        OutputFolder(save_logits_to, command="eval-logits", force=force)  # refuse before the long part
    r = restore_checkpoint(path, device, splits)
    inputs, runs = checkpoint_inputs(path)
    inputs = inputs + config_inputs(r.cfg)
    refuse_overlap({**(protect or {}), "--save-logits": save_logits_to}, inputs, run_folders=runs)
    counts = r.splits.freq.image_counts
    adjusters: dict[str, Callable] = {}
    own = r.own_adjuster()
    if own is not None:
        adjusters["adjusted"] = own
    for a in adjust:
        adjusters[a] = build_adjuster(a, counts, r.model)
    e = r.cfg.eval
    bs = batch_size or e.batch_size
    from ..resources import check_image_memory  # one line with the estimate before a batch is built

    check_image_memory(int(bs), int(r.splits.image_size), int(r.splits.in_channels), what="an evaluation batch",
                       size_key="data.options.image_size in the run's config", batch_key="--batch-size")
    wanted = [split]
    if save_logits_to is not None:
        wanted = ["test"] + (["val"] if r.splits.val is not None else [])
        if split not in wanted:
            wanted.append(split)
    outputs = {name: predict(r.model, eval_split(r.splits, name), r.device, bs, resident=r.cfg.data.resident)
               for name in wanted}
    if save_logits_to is not None:
        save_logits(r, save_logits_to, {k: outputs[k] for k in ("test", "val") if k in outputs}, force=force,
                    inputs=inputs, run_folders=runs)
    f, z, y = outputs[split]
    return score_predictions(f, z, y, counts, adjusters, e.many, e.few, e.bins)
