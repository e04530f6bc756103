"""One method vocabulary (issue 16, part 2): every method ``iif`` knows, under one canonical name.

The same methods used to be spelt differently in each place: the classification losses
(:data:`iif.losses.registry.LOSSES`: ``ce``, ``logit_adjusted``, ...), the post-hoc adjusters of ``--adjust`` /
``posthoc.adjusters`` (:data:`iif.train.strategies.ADJUSTER_KINDS`: ``la``, ``none``, ...) and the detection
box-predictor margins (:func:`iif.detection.use_margin`: ``softmax``, ``logit_adjustment``, ...). :data:`METHODS`
is the one table: each :class:`Method` has its canonical name (the detection spelling), the aliases it is also
known by, the paper it comes from, the tasks that have it, the spelling each task's own table uses and, for a
detection margin, the phases (``when``) it accepts. :func:`canonical_method` resolves any accepted spelling.

Tasks (:data:`TASKS`):

* ``"loss"``: a classification training loss (:func:`iif.losses.build_loss`);
* ``"posthoc"``: a classification post-hoc adjuster (``iif:<variant>``, ``la:<tau>``, ``taunorm:<tau>``, ``none``);
* ``"detection"``: a detection margin (:func:`iif.detection.use_margin`).

Detection phases (:data:`WHEN`, stated only here): IIF multiplies the logits (paper Eq. 13-15) and keeps its
meaning in either phase, so it takes all three; Balanced Softmax (``z + ln n`` in the loss) and Seesaw are
training losses (``train``); logit adjustment adds ``tau ln p`` in the loss *or* subtracts it at inference
(``train`` or ``test``: the same offset in both phases cancels through the classifier bias); NorCal is an
inference-time recalibration (``test``).

This module imports only :mod:`iif.errors`, so ``import iif`` stays torch-free.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Optional

from .errors import IIFError

__all__ = ["TASKS", "WHEN", "Method", "METHODS", "canonical_method", "method_names", "spelling", "get_method"]

#: The tasks a method can belong to (see the module docstring).
TASKS: tuple[str, ...] = ("loss", "posthoc", "detection")
_TASK_LABELS = {"loss": "classification losses", "posthoc": "classification post-hoc adjusters",
                "detection": "detection margins"}

#: The phases of a detection margin: in the training loss and at inference, only in the loss, only at inference.
WHEN: tuple[str, ...] = ("train_and_test", "train", "test")


@dataclass(frozen=True)
class Method:
    """One method of the vocabulary.

    Attributes:
        name: canonical name (the detection spelling, e.g. ``"logit_adjustment"``).
        aliases: other accepted spellings in every task (e.g. ``"la"``, ``"logit_adjusted"``).
        reference: the paper (and equation) it comes from.
        tasks: the :data:`TASKS` that have it.
        spellings: ``(task, spelling)`` pairs where a task's own table uses another key than ``name`` (the
            loss registry's ``"ce"``, the adjuster kind ``"la"``); that spelling is accepted in that task only
            unless it is also an alias.
        when: the detection phases it accepts (empty unless ``"detection"`` is in ``tasks``).
    """

    name: str
    aliases: tuple[str, ...]
    reference: str
    tasks: tuple[str, ...]
    spellings: tuple[tuple[str, str], ...] = ()
    when: tuple[str, ...] = ()

    def spelling(self, task: str) -> str:
        """The key ``task``'s own table uses for this method (``name`` unless :attr:`spellings` says otherwise)."""
        return dict(self.spellings).get(task, self.name)

    def accepts(self, task: str) -> tuple[str, ...]:
        """Every spelling that resolves to this method in ``task``: name, aliases, the task's own key."""
        own = self.spelling(task)
        return (self.name, *self.aliases, *(() if own == self.name else (own,)))


_CB = "Cui et al., 'Class-Balanced Loss Based on Effective Number of Samples', CVPR 2019"
_L, _P, _D = "loss", "posthoc", "detection"

#: The one table, in the order each task lists its methods.
METHODS: tuple[Method, ...] = (
    Method("softmax", ("ce",), "plain softmax cross-entropy, no adjustment (the baseline)",
           (_L, _P, _D), spellings=((_L, "ce"), (_P, "none")), when=WHEN),
    Method("iif", (), "Alexandridis et al., 'Inverse Image Frequency for Long-tailed Image Recognition', "
           "IEEE TIP 2023, Eq. 13-15 (w * z in the loss and/or at inference)", (_L, _P, _D), when=WHEN),
    Method("iif_csl", (), "Alexandridis et al., IEEE TIP 2023: IIF weights as per-class costs of the "
           "cross-entropy (cost-sensitive baseline)", (_L,)),
    Method("balanced_softmax", (), "Ren et al., 'Balanced Meta-Softmax for Long-Tailed Visual Recognition', "
           "NeurIPS 2020 (z + ln n in the loss)", (_L, _D), when=("train",)),
    Method("logit_adjustment", ("la", "logit_adjusted"), "Menon et al., 'Long-tail learning via logit "
           "adjustment', ICLR 2021 (z + tau ln p in the loss, or z - tau ln p at inference)", (_L, _P, _D),
           spellings=((_L, "logit_adjusted"), (_P, "la")), when=("train", "test")),
    Method("ldam", (), "Cao et al., 'Learning Imbalanced Datasets with Label-Distribution-Aware Margin Loss', "
           "NeurIPS 2019 (LDAM-DRW)", (_L,)),
    Method("cb_softmax", (), _CB + " (softmax cross-entropy)", (_L,)),
    Method("cb_sigmoid", (), _CB + " (sigmoid cross-entropy)", (_L,)),
    Method("cb_focal", (), _CB + " (sigmoid focal loss)", (_L,)),
    Method("cb_softmax_focal", (), _CB + " (softmax focal loss)", (_L,)),
    Method("focal", (), "Lin et al., 'Focal Loss for Dense Object Detection', ICCV 2017 (softmax form)", (_L,)),
    Method("norcal", (), "Pan et al., 'On Model Calibration for Long-Tailed Object Detection and Instance "
           "Segmentation', NeurIPS 2021 (inference-time recalibration)", (_D,), when=("test",)),
    Method("seesaw", (), "Wang et al., 'Seesaw Loss for Long-Tailed Instance Segmentation', CVPR 2021",
           (_L, _D), when=("train",)),
    Method("taunorm", (), "Kang et al., 'Decoupling Representation and Classifier for Long-Tailed "
           "Recognition', ICLR 2020 (classifier rows w / ||w||^tau)", (_P,)),
)

_BY_NAME = {m.name: m for m in METHODS}


def _check_task(task: Optional[str]) -> None:
    if task is not None and task not in TASKS:
        raise IIFError(f"Unknown task {task!r} for a method; use one of {', '.join(TASKS)}.")


def method_names(task: Optional[str] = None) -> tuple[str, ...]:
    """Canonical names of the methods ``task`` has (every method when ``task`` is None), in table order."""
    _check_task(task)
    return tuple(m.name for m in METHODS if task is None or task in m.tasks)


def get_method(name: str, task: Optional[str] = None) -> Method:
    """The :class:`Method` that ``name`` (any accepted spelling) resolves to; see :func:`canonical_method`."""
    return _BY_NAME[canonical_method(name, task)]


def spelling(name: str, task: str) -> str:
    """The key ``task``'s own table uses for ``name`` (any accepted spelling): ``spelling("la", "loss")`` is
    ``"logit_adjusted"``, ``spelling("logit_adjustment", "posthoc")`` is ``"la"``."""
    return get_method(name, task).spelling(task)


def _accepted(task: Optional[str]) -> dict[str, str]:
    """spelling -> canonical name, for the methods of ``task`` (every task when None)."""
    out: dict[str, str] = {}
    for m in METHODS:
        if task is None or task in m.tasks:
            for t in ((task,) if task is not None else m.tasks):
                for s in m.accepts(t):
                    out.setdefault(s, m.name)
    return out


def canonical_method(name: Any, task: Optional[str] = None, *, what: str = "method") -> str:
    """The canonical name of method ``name`` (its name, an alias, or ``task``'s own spelling), exact match.

    With ``task`` (one of :data:`TASKS`) the method must belong to that task. Raises :class:`IIFError` with a
    one-line message that lists the valid canonical names and aliases (and the closest spelling) when
    ``name`` is unknown or not available for ``task``; ``what`` names the thing in the message
    (``"loss"``, ``"method"``, ...)."""
    _check_task(task)
    accepted = _accepted(task)
    if isinstance(name, str) and name in accepted:
        return accepted[name]
    elsewhere = _accepted(None).get(name) if isinstance(name, str) else None
    where = f" for {_TASK_LABELS[task]}" if task is not None else ""
    if elsewhere is not None and task is not None and task in _BY_NAME[elsewhere].tasks:  # another task's spelling
        tasks = ", ".join(_TASK_LABELS[t] for t in TASKS if name in _accepted(t))
        where += f" ({name!r} names {elsewhere!r} only in {tasks}; write {elsewhere!r})"
    elif elsewhere is not None:  # known, but not in this task
        tasks = ", ".join(_TASK_LABELS[t] for t in _BY_NAME[elsewhere].tasks)
        where += f" ({elsewhere!r} is one of the {tasks})"
    names = method_names(task)
    aliases = [f"{s}={canon}" for s, canon in accepted.items() if s != canon]
    close = difflib.get_close_matches(str(name), list(accepted), n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    listed = ", ".join(names) + (f" (aliases: {', '.join(aliases)})" if aliases else "")
    raise IIFError(f"Unknown {what} {name!r}{where}; use one of {listed}.{hint}")
