"""Training and evaluation for long-tailed classification (the paper's §V-B, Tables V-X).

Programmatic API::

    from iif.train import load_config, fit, extract_features, evaluate_checkpoint
    cfg = load_config("digits_lt_e2e", ["schedule.epochs=2", "loss.name=iif"])
    result = fit(cfg, out_dir="runs/digits")          # TrainResult
    result.final_metrics["raw"]["top1"], result.final_metrics["adjusted"]["few"]
    feats, logits, labels = extract_features(result.model, result.splits.test, "cpu", 256)
    metrics = evaluate_checkpoint("runs/digits/last.pt", adjust=["iif:smooth", "la:1.0"])

``fit(cfg, out_dir=None, resume=False, force=False, device=None, splits=None)`` runs the strategy named
by ``cfg.strategy.name`` (``e2e``, ``decoupled``, ``posthoc``; see :mod:`iif.train.strategies`). Each
stage is scored on the ``val`` split every ``eval.every`` epochs; ``best.pt`` (best ``eval.metric`` on
val) is kept beside ``last.pt``, and the checkpoint ``eval.select`` names is scored once on
``eval.split`` (``test``). ``TrainResult`` has ``model`` (the selected weights), ``splits``, ``history``
(one dict per epoch, ``val_*`` columns), ``final_metrics`` (``{"raw": ..., "adjusted": ...,
"<adjuster>": ...}``, each an :func:`iif.metrics.evaluate_logits` dict plus a ``selection`` entry),
``out_dir``, ``checkpoint`` (the selected file), ``config``, ``criterion``, ``finished`` and
``selection`` (``select``, ``checkpoint``, ``epoch``, ``selected_on``, ``val_score``, ``split``).
``build_splits(cfg)`` builds a config's datasets once (pass them to ``fit(splits=...)`` to train several
methods on one dataset) and ``resolve_device("auto")`` picks cuda when available.
``extract_features(model, dataset, device, batch_size) -> (features, logits, labels)`` runs in eval
mode without augmentation. ``train(cfg)`` is an alias of ``fit``.
"""

from ..runtime import resolve_device
from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig, config_hash, load_config, packaged_configs, save_config
from .decoupled import method_overrides
from .engine import StageSpec, TrainResult, build_model_for, build_splits, fit, retrain_classifier
from .epoch import train_one_epoch
from .evaluation import evaluate, evaluate_checkpoint, extract_features, predict
from .strategies import build_adjuster, parse_adjuster, tau_norm_head

train = fit

__all__ = [
    "TrainConfig",
    "load_config",
    "config_hash",
    "packaged_configs",
    "TrainResult",
    "fit",
    "train",
    "retrain_classifier",
    "method_overrides",
    "tau_norm_head",
    "build_splits",
    "build_model_for",
    "resolve_device",
    "StageSpec",
    "train_one_epoch",
    "evaluate",
    "predict",
    "extract_features",
    "evaluate_checkpoint",
    "build_adjuster",
    "parse_adjuster",
    "load_checkpoint",
    "save_checkpoint",
    "save_config",
]
