"""Post-hoc methods on cached logits, and how every bench row is scored.

Every method of the bench ends as a :class:`Candidate`: the test logits it predicts with (and the
validation logits, when there is a validation split). Scoring is then the same for all of them
(:func:`evaluate_candidates`): long-tail metrics on the test split and, when validation logits exist, a
temperature fitted on validation only (Guo et al. 2017) so the report can show ECE before and after.

Choosing without cheating: :func:`select_posthoc_iif` and :func:`select_by_validation` receive only
validation logits and labels; the test labels are never passed to them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from scipy.optimize import minimize
from scipy.special import logsumexp

from ..adjusters import logit_adjustment, posthoc_iif
from ..errors import IIFError
from ..metrics import calibration_errors, check_logits_labels, evaluate_logits, nll, shot_thresholds
from ..weights import VARIANTS, as_counts, iif_weights

__all__ = [
    "ROW_KEYS",
    "GAMMAS",
    "Candidate",
    "Selection",
    "valid_variants",
    "posthoc_candidates",
    "iif_adjusted",
    "select_posthoc_iif",
    "select_by_validation",
    "tuned_posthoc_candidate",
    "fit_temperature",
    "evaluate_candidates",
    "posthoc_table",
]

#: The keys of every row of ``results.json`` (and of the printed table), in order.
ROW_KEYS: tuple[str, ...] = ("method", "strategy", "variant", "head", "top1", "many", "medium", "few", "ece")

#: Exponents tried on the IIF weights (``w ** gamma``) by the tuned row; 1 is the paper's plain weight.
GAMMAS: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)


@dataclass
class Candidate:
    """One row of the table before scoring: a named method and the logits it predicts with."""

    method: str
    strategy: str
    variant: str | None
    head: str | None
    test_logits: np.ndarray
    val_logits: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Selection:
    """What the validation split chose: the IIF variant, the exponent and the validation score."""

    variant: str
    gamma: float
    score: float
    scores: dict[str, float]

    @property
    def label(self) -> str:
        return self.variant if self.gamma == 1.0 else f"{self.variant}^{self.gamma:g}"


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def iif_adjusted(logits, counts, variant: str, gamma: float = 1.0, total: float | None = None) -> np.ndarray:
    """Post-process IIF (paper Eq. 13-14): ``(w ** gamma) * z`` with the ``variant`` weights of ``counts``."""
    w = iif_weights(counts, variant, total=total, dtype=torch.float64)
    if gamma != 1.0:
        w = w.pow(float(gamma))
    with torch.no_grad():
        return posthoc_iif(torch.as_tensor(_np(logits)), w.double()).numpy()


def _logit_adjusted(logits, counts, tau: float) -> np.ndarray:
    with torch.no_grad():
        return logit_adjustment(torch.as_tensor(_np(logits)), np.asarray(counts, dtype=np.float64), tau=tau).numpy()


def valid_variants(counts, variants: Iterable[str], total: float | None) -> tuple[list[str], dict[str, str]]:
    """Variants whose weights are finite and positive for these counts, and why the others are skipped."""
    ok, skipped = [], {}
    for v in variants:
        try:
            iif_weights(counts, v, total=total)
        except IIFError as exc:
            skipped[v] = str(exc)
        else:
            ok.append(v)
    return ok, skipped


def posthoc_candidates(
    test_logits,
    counts,
    head: str | None = None,
    val_logits=None,
    variants: Sequence[str] = VARIANTS,
    total: float | None = None,
    la_tau: float = 1.0,
) -> tuple[list[Candidate], dict[str, str]]:
    """Softmax, post-process IIF for each variant, and post-hoc logit adjustment of one set of logits.

    Returns the candidates and ``{variant: reason}`` for variants these counts make invalid (e.g. a
    ``relative`` weight <= 0 for a class holding half of the data); those are skipped, never used.
    """
    z = _np(test_logits)
    zv = None if val_logits is None else _np(val_logits)
    out = [Candidate("softmax", "end-to-end", None, head, z, zv)]
    ok, skipped = valid_variants(counts, variants, total)
    for v in ok:
        out.append(Candidate("IIF", "post-process", v, head, iif_adjusted(z, counts, v, total=total),
                             None if zv is None else iif_adjusted(zv, counts, v, total=total)))
    out.append(Candidate("logit adjustment", "post-hoc", f"tau={la_tau:g}", head, _logit_adjusted(z, counts, la_tau),
                         None if zv is None else _logit_adjusted(zv, counts, la_tau)))
    return out, skipped


def _balanced_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Class-average accuracy (%), the selection score: on a balanced split it equals top-1."""
    pred = logits.argmax(axis=1)
    classes = np.unique(labels)
    return float(100.0 * np.mean([np.mean(pred[labels == c] == c) for c in classes]))


def select_posthoc_iif(
    val_logits,
    val_labels,
    counts,
    variants: Sequence[str] = VARIANTS,
    gammas: Sequence[float] = GAMMAS,
    total: float | None = None,
) -> Selection:
    """Pick the IIF variant and exponent ``gamma`` (weights ``w ** gamma``) on the validation split only.

    The score is class-average accuracy on validation. Ties keep the earlier entry, and the search
    order puts ``smooth`` (the paper's default) and ``gamma = 1`` first, so ties favour the plain recipe.
    This function never sees test data: it has no parameter for it.
    """
    z, y = check_logits_labels(val_logits, val_labels)
    ok, _ = valid_variants(counts, variants, total)
    if not ok:
        raise IIFError("No IIF variant gives valid weights for these counts; check the counts file.")
    order = sorted(ok, key=lambda v: v != "smooth")
    gam = sorted(gammas, key=lambda g: g != 1.0)
    scores: dict[str, float] = {}
    best: Selection | None = None
    for v in order:
        for g in gam:
            s = _balanced_accuracy(iif_adjusted(z, counts, v, g, total), y)
            sel = Selection(v, float(g), s, scores)
            scores[sel.label] = s
            if best is None or s > best.score:
                best = sel
    assert best is not None
    return best


def select_by_validation(val_logits_by_name: Mapping[str, Any], val_labels) -> str:
    """Name of the entry whose validation logits score the best class-average accuracy (first on ties).

    Receives validation logits and labels only, never test data.
    """
    if not val_logits_by_name:
        raise IIFError("Nothing to choose from: no validation logits were given.")
    best_name, best_score = None, -math.inf
    for name, logits in val_logits_by_name.items():
        z, y = check_logits_labels(logits, val_labels)
        s = _balanced_accuracy(z, y)
        if s > best_score:
            best_name, best_score = name, s
    return str(best_name)


def tuned_posthoc_candidate(test_logits, val_logits, val_labels, counts, head: str | None = None,
                            total: float | None = None, gammas: Sequence[float] = GAMMAS) -> Candidate:
    """The ``IIF tuned`` row: variant and exponent chosen on validation, then applied to the test logits."""
    sel = select_posthoc_iif(val_logits, val_labels, counts, gammas=gammas, total=total)
    return Candidate(
        "IIF tuned", "post-process", sel.label, head,
        iif_adjusted(test_logits, counts, sel.variant, sel.gamma, total),
        iif_adjusted(val_logits, counts, sel.variant, sel.gamma, total),
        info={"selection": {"variant": sel.variant, "gamma": sel.gamma, "val_class_avg": sel.score}},
    )


def fit_temperature(val_logits, val_labels, max_iter: int = 100) -> float:
    """Temperature scaling (Guo et al. 2017): the ``T > 0`` minimising validation NLL of ``softmax(z / T)``.

    L-BFGS (scipy's L-BFGS-B) on ``log T`` with the analytic gradient, starting at T = 1 and bounded to
    ``T`` in ``[e^-5, e^5]``; in numpy because torch's per-call overhead dominates at this size.
    """
    z, y = check_logits_labels(val_logits, val_labels)
    zy = z[np.arange(y.size), y]

    def nll_and_grad(x: np.ndarray) -> tuple[float, np.ndarray]:
        s = math.exp(-float(x[0]))  # s = 1 / T
        a = z * s
        lse = logsumexp(a, axis=1)
        p = np.exp(a - lse[:, None])
        loss = float(np.mean(lse - zy * s))
        d_ds = float(np.mean((p * z).sum(axis=1) - zy))
        return loss, np.array([-s * d_ds])  # chain rule: ds / dlogT = -s

    res = minimize(nll_and_grad, np.zeros(1), jac=True, method="L-BFGS-B", bounds=[(-5.0, 5.0)],
                   options={"maxiter": max_iter})
    t = math.exp(float(res.x[0]))
    return t if math.isfinite(t) and t > 0 else 1.0


def evaluate_candidates(
    candidates: Sequence[Candidate],
    test_labels,
    counts,
    val_labels=None,
    many: int | None = None,
    few: int | None = None,
    bins: int = 10,
    reference: Sequence[Candidate] = (),
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Score every candidate on the test split.

    Returns ``rows`` (dicts with exactly :data:`ROW_KEYS`) and ``details`` (one dict per row with the
    remaining metrics: ``class_avg``, ``per_class``, ``mce``, ``nll``, and when validation logits exist
    ``val_few`` (few-shot validation accuracy), ``temperature``, ``ece_ts``, ``nll_ts`` after temperature scaling; the comparison with the softmax row
    of the same head and the earlier row with the same predictions, from
    :func:`iif.bench.summary.compare_candidates`: ``val_class_avg``, ``delta_val``, ``delta_val_se``,
    ``delta_test``, ``delta_test_se``, ``same_as``, ``relation``; plus the candidate's ``info``).
    ``reference``: candidates of the same run scored earlier (e.g. the cached rows when scoring the
    end-to-end ones), searched for the softmax row and for identical rows. ``many``/``few``: shot-group
    thresholds; None takes the library's rule (:func:`iif.metrics.shot_thresholds`).
    """
    from .summary import compare_candidates

    counts = as_counts(counts)
    many, few = shot_thresholds(counts, many, few)
    rows, details = [], []
    compared = compare_candidates(candidates, test_labels, val_labels=val_labels, reference=reference)
    for c, cmp in zip(candidates, compared):
        m = evaluate_logits(c.test_logits, test_labels, counts, many=many, few=few, bins=bins)
        rows.append({"method": c.method, "strategy": c.strategy, "variant": c.variant, "head": c.head,
                     "top1": m["top1"], "many": m["many"], "medium": m["medium"], "few": m["few"], "ece": m["ece"]})
        d = {k: m[k] for k in ("class_avg", "per_class", "mce", "nll")}
        if c.val_logits is not None and val_labels is not None:
            # few-shot validation accuracy: the bench's collapse rule judges rows on validation (summary.py)
            d["val_few"] = evaluate_logits(c.val_logits, val_labels, counts, many=many, few=few, bins=bins)["few"]
            t = fit_temperature(c.val_logits, val_labels)
            zt = c.test_logits / t
            d["temperature"] = t
            d["ece_ts"], d["mce_ts"] = calibration_errors(zt, test_labels, bins)
            d["nll_ts"] = nll(zt, test_labels)
        d.update(cmp)
        d.update(c.info)
        details.append(d)
    return rows, details


def posthoc_table(
    logits,
    labels,
    counts,
    val_logits=None,
    val_labels=None,
    head: str | None = None,
    total: float | None = None,
    many: int | None = None,
    few: int | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The post-hoc table for logits a user already has (``iif posthoc``).

    Rows: softmax; post-process IIF for every variant valid for these counts; post-hoc logit adjustment
    (tau = 1); and, when validation logits and labels are given, ``IIF tuned`` (variant and exponent
    chosen on validation) with temperature scaling fitted on validation for every row. ``many``/``few``:
    shot-group thresholds; None takes the library's rule (:func:`iif.metrics.shot_thresholds`).
    """
    n = as_counts(counts)
    z, y = check_logits_labels(logits, labels, num_classes=n.shape[0])
    zv = yv = None
    if (val_logits is None) != (val_labels is None):
        raise IIFError("Pass both validation logits and validation labels, or neither.")
    if val_logits is not None:
        zv, yv = check_logits_labels(val_logits, val_labels, num_classes=n.shape[0])
    cands, _ = posthoc_candidates(z, n, head=head, val_logits=zv, total=total)
    if zv is not None:
        cands.append(tuned_posthoc_candidate(z, zv, yv, n, head=head, total=total))
    return evaluate_candidates(cands, y, n, val_labels=yv, many=many, few=few)
