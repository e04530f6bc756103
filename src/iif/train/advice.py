"""Advice printed before and after training: settings that work but are likely to mislead.

Each piece of advice is one line on stderr starting ``iif: warning:``, printed once per process (rank 0
under torchrun) and also returned so a caller can put it in a report; it is given for runs that write their
own folder (``iif train``), not for the rows a bench trains. Nothing here changes what is trained. The
thresholds are named constants, so the trainer and the bench summary (:data:`UNDERFIT_MARGIN`) apply the
same rule.

* :func:`loader_workers`: DataLoader workers actually used: ``data.num_workers`` capped by the CPU count,
  and 0 for small training sets (starting worker processes costs more than decoding a few hundred images).
* :func:`e2e_on_small_set`: end-to-end IIF chosen for a small training set. The paper recommends a softmax
  backbone with decoupled (or post-process) IIF for classification (§V-B3, Table V); on small sets the
  IIF loss's class weights (several times larger on the tail than on the head, Eq. 15) often make
  end-to-end training unstable.
* :func:`underfit_warning`: the softmax backbone's validation (or test) accuracy is too low for a
  comparison between methods on top of it to mean anything.
"""

from __future__ import annotations

import os
import sys

__all__ = [
    "SMALL_TRAIN_SET",
    "WORKERLESS_TRAIN_SET",
    "UNDERFIT_MARGIN",
    "advise",
    "loader_workers",
    "e2e_on_small_set",
    "underfit_warning",
    "check_config_advice",
    "check_backbone_advice",
    "note",
]

#: Training sets with fewer images than this count as small for :func:`e2e_on_small_set`.
SMALL_TRAIN_SET = 5000
#: Training sets with fewer images than this load in the main process (``num_workers=0``).
WORKERLESS_TRAIN_SET = 2000
#: A backbone counts as underfit below chance plus this fraction of the way from chance to 100% top-1
#: (:func:`underfit_warning`): 32.5% for 10 classes, 25.8% for 100, 25.1% for 1,000.
UNDERFIT_MARGIN = 0.25

_said: set[str] = set()


def _say(line: str, key: str) -> None:
    # once per process, and under torchrun only on rank 0 (every rank computes the same advice)
    if key not in _said:
        _said.add(key)
        if os.environ.get("RANK", "0") in ("", "0"):
            print(line, file=sys.stderr, flush=True)


def advise(message: str) -> str:
    """Print ``iif: warning: <message>`` to stderr once per process (rank 0 only); return the message."""
    _say(f"iif: warning: {message}", message)
    return message


def loader_workers(requested: int, num_images: int, cpus: int | None = None) -> int:
    """DataLoader worker processes to use: 0 for fewer than :data:`WORKERLESS_TRAIN_SET` images, else
    ``requested`` capped at the number of CPUs (``os.cpu_count()`` unless ``cpus`` is given)."""
    if int(num_images) < WORKERLESS_TRAIN_SET:
        return 0
    cpus = int(cpus if cpus is not None else (os.cpu_count() or 1))
    return max(0, min(int(requested), cpus))


def e2e_on_small_set(strategy: str, loss: str, num_train_images: int, norm=None) -> str | None:
    """The warning for end-to-end IIF (``loss`` ``iif`` or ``iif_csl``) on fewer than
    :data:`SMALL_TRAIN_SET` training images, else None. With the paper's weights (``norm`` None) it also
    says that they raise the logit scale by their mean (docs/results.md, "End-to-end IIF stability")."""
    if strategy != "e2e" or loss not in ("iif", "iif_csl") or int(num_train_images) >= SMALL_TRAIN_SET:
        return None
    scale = ("; the paper's weights also multiply the logit scale by their mean, set loss.norm=mean to keep it"
             if norm is None and loss == "iif" else "")
    return (f"end-to-end IIF on a small training set ({int(num_train_images)} images < {SMALL_TRAIN_SET}) is often "
            f"unstable{scale}; the paper's classification recipe is a softmax backbone with decoupled or post-process "
            "IIF (strategy.name=decoupled or posthoc; for an ImageFolder tree, iif train folder).")


def underfit_warning(top1: float | None, num_classes: int, split: str = "validation",
                     metric: str = "top-1") -> str | None:
    """The warning for a softmax backbone whose ``top1`` (percent; ``metric`` names it, e.g. class-average
    accuracy, which equals top-1 on a class-balanced split) on ``split`` is below chance plus
    :data:`UNDERFIT_MARGIN` of the way from chance (``100 / num_classes``) to 100%; None otherwise.

    Example: 10 classes give a threshold of 10 + 0.25 * 90 = 32.5%. Below it the raw and adjusted rows differ
    mostly by noise and by how much the adjustment favours the tail, not by a better decision rule.
    """
    if top1 is None or int(num_classes) < 2:
        return None
    chance = 100.0 / int(num_classes)
    need = chance + UNDERFIT_MARGIN * (100.0 - chance)
    if float(top1) >= need:
        return None
    return (f"the backbone reaches only {float(top1):.1f}% {metric} on {split} (chance {chance:.1f}%, "
            f"advised at least {need:.1f}%): comparisons between methods on top of it mean little; train longer, "
            "use a larger model or more data.")


def note(message: str) -> str:
    """Print ``iif: <message>`` to stderr once per process (information, not a warning); return it."""
    _say(f"iif: {message}", message)
    return message


def check_config_advice(cfg, splits, recipe: bool = True) -> list[str]:
    """Before a run: print (once) the dataset's notes (e.g. the image size a ``folder`` tree trains at) and,
    with ``recipe`` (a run that writes its own folder, as ``iif train`` does; the bench's rows do not), the
    advice for ``cfg`` on ``splits``; return the warnings."""
    for line in getattr(splits.train, "notes", None) or ():
        note(line)
    num_train_images = len(splits.train.targets)
    out = []
    if not recipe:
        return out
    d = cfg.decoupled if cfg.strategy.name == "decoupled" else None
    msg = e2e_on_small_set(cfg.strategy.name, cfg.loss.name, num_train_images, cfg.loss.norm)
    if msg is None and d is not None and cfg.loss.name in ("iif", "iif_csl"):
        # decoupled with an IIF stage 1 is end-to-end IIF for the backbone
        msg = e2e_on_small_set("e2e", cfg.loss.name, num_train_images)
    if msg:
        out.append(advise(msg))
    return out


def check_backbone_advice(metrics: dict, num_classes: int, loss: str = "ce", recipe: bool = True) -> list[str]:
    """After a stage that trains a softmax (``loss`` ``ce``) backbone (end-to-end, decoupled stage 1,
    post-hoc): print (once) and return :func:`underfit_warning` for its validation score (the one model
    selection used), or for the raw test top-1 when there was no validation split. Other losses, and
    ``recipe=False`` (a run without its own folder: the bench, whose summary gives the same warning): nothing."""
    raw = metrics.get("raw") if isinstance(metrics, dict) and loss == "ce" and recipe else None
    if not isinstance(raw, dict):
        return []
    sel = raw.get("selection") or {}
    if sel.get("val_score") is not None:
        how = str(sel.get("selected_on", "val class_avg")).replace("val ", "").replace("class_avg", "class-average accuracy")
        msg = underfit_warning(float(sel["val_score"]), num_classes, "validation", how)
    else:
        msg = underfit_warning(raw.get("top1"), num_classes, str(sel.get("split", "test")))
    return [advise(msg)] if msg else []
