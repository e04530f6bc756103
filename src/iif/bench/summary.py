"""What ``iif bench`` recommends: rows compared with softmax, identical rows folded, rows ranked on validation.

Two levels (see docs/bench.md, "Reading the report"):

* per run (one seed, one head): :func:`compare_candidates` compares every row's predictions with the
  softmax backbone of its head (paired difference of class-average accuracy and its standard error) and
  finds rows whose predictions equal an earlier row's on every validation and test image, naming how
  their logits relate (:func:`logit_relation`). ``iif.bench.posthoc.evaluate_candidates`` stores the
  result in each row's details.
* over seeds: :func:`summarize` folds the rows that are identical in every seed, ranks the others by
  validation accuracy, and writes the summary: the validation-best row and its test result, the change
  against softmax (mean ± std over seeds), the uncertainty of the validation difference and an underfit
  warning. Test numbers are reported, never used to choose.

The selection metric is class-average accuracy (the mean of per-class accuracies, in percent): the
metric of a class-balanced test set, and what the validation-tuned rows are chosen on.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = [
    "NOISE_SE",
    "UNDERFIT_SKILL",
    "class_avg_difference",
    "logit_relation",
    "compare_candidates",
    "chance_corrected",
    "summarize",
    "summary_lines",
    "row_label",
    "COLLAPSE_POINTS",
    "few_shot_collapse",
    "deployable",
]

#: A validation difference smaller than this many standard errors is "within noise" (about 95% two-sided).
NOISE_SE = 2.0
#: The backbone is called underfit when its chance-corrected accuracy ``(acc - chance) / (100 - chance)``
#: is below this: it closes less than a quarter of the way from chance (100 / C %) to a perfect score.
from ..train.advice import UNDERFIT_MARGIN as UNDERFIT_SKILL  # noqa: E402  (0.25: one rule with iif train)
#: Few-shot collapse (:func:`few_shot_collapse`): a row's few-shot accuracy this many points below softmax's.
COLLAPSE_POINTS = 10.0
#: A row with this (method, strategy) is the reference every other row is compared with.
REFERENCE = ("softmax", "end-to-end")


def few_shot_collapse(few: float | None, softmax_few: float | None, points: float = COLLAPSE_POINTS) -> bool:
    """Whether a row's few-shot accuracy ``few`` (percent) collapses against the softmax backbone's ``softmax_few``
    on the same split and head: more than ``points`` (10) points below it, or 0 where softmax's is above 0.

    Why: re-balancing (post-process IIF, logit adjustment, decoupled retraining) exists to help the rare
    classes; a row that loses more than a tenth of the scale on the few-shot group, or every few-shot image,
    gains its average elsewhere at the tail's expense. Unknown (None) on either side: no verdict (False).
    """
    if few is None or softmax_few is None:
        return False
    return float(few) < float(softmax_few) - float(points) or (float(few) == 0.0 and float(softmax_few) > 0.0)


def deployable(row: Mapping[str, Any]) -> bool:
    """Whether a row can be deployed: its ``reproduce`` command is a command, not a note such as
    ``(not reproducible: ...)``. A row without a ``reproduce`` entry (rows scored outside the bench) counts
    as deployable: there is nothing to restrict on."""
    rep = row.get("reproduce")
    return not (isinstance(rep, str) and rep.startswith("("))


def row_key(row: Mapping[str, Any]) -> tuple:
    """What makes a row the same row across seeds. A tuned row may pick a different variant per seed, so
    its variant is not part of its identity."""
    variant = None if "tuned" in str(row["method"]) else row.get("variant")
    return (row["method"], row["strategy"], variant, row.get("head"))


def row_label(row: Mapping[str, Any], head: bool = True) -> str:
    """``method / strategy / variant (head)``, e.g. ``IIF / post-process / smooth (linear head)``."""
    parts = [str(row["method"]), str(row["strategy"])]
    if row.get("variant"):
        parts.append(str(row["variant"]))
    text = " / ".join(parts)
    return f"{text} ({row['head']} head)" if head and row.get("head") else text


# ----------------------------------------------------------------------------------------------- one run


def class_avg_difference(pred_a: np.ndarray, pred_b: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Paired difference of class-average accuracy, ``acc(a) - acc(b)`` in points, and its standard error.

    Per image ``d_i = 1[a_i = y_i] - 1[b_i = y_i]``; the difference is ``100 * mean_c mean_{i in c} d_i``
    over the classes present. The standard error treats the images as a sample from each class:
    ``100 / C * sqrt(sum_c s_c^2 / n_c)`` with ``s_c^2`` the sample variance (ddof = 1) of ``d`` in class
    ``c`` (a class with a single image counts ``d^2``). With one class it is the usual paired standard
    error ``sd(d) / sqrt(n)``.
    """
    y = np.asarray(labels).astype(np.int64)
    d = (np.asarray(pred_a) == y).astype(np.float64) - (np.asarray(pred_b) == y).astype(np.float64)
    classes = np.unique(y)
    means, var_terms = [], []
    for c in classes:
        dc = d[y == c]
        means.append(dc.mean())
        var = dc.var(ddof=1) if dc.size > 1 else float(dc[0] ** 2)
        var_terms.append(var / dc.size)
    k = len(classes)
    return 100.0 * float(np.mean(means)), 100.0 * math.sqrt(float(np.sum(var_terms))) / k


def _class_avg(pred: np.ndarray, labels: np.ndarray) -> float:
    y = np.asarray(labels).astype(np.int64)
    return 100.0 * float(np.mean([np.mean(pred[y == c] == c) for c in np.unique(y)]))


def logit_relation(a: np.ndarray, b: np.ndarray, rtol: float = 1e-5) -> str:
    """How logits ``a`` relate to ``b`` when their argmax agrees everywhere (both ``(N, C)``):

    ``"identical logits"``; ``"positive multiple (x c)"`` when ``a = c * b`` with one ``c > 0`` (same
    argmax and, after temperature scaling, the same ECE); ``"same softmax (logits differ by a constant
    per image)"`` when ``a - b`` is constant along every row; otherwise ``"same predictions"``.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    scale = max(float(np.abs(a).max(initial=0.0)), float(np.abs(b).max(initial=0.0)), 1e-12)
    atol = rtol * scale
    if a.shape == b.shape:
        if np.allclose(a, b, rtol=rtol, atol=atol):
            return "identical logits"
        bb = float(np.sum(b * b))
        if bb > 0:
            c = float(np.sum(a * b)) / bb
            if c > 0 and np.allclose(a, c * b, rtol=rtol, atol=atol):
                return f"positive multiple (x {c:.4g})"
        diff = a - b
        if np.allclose(diff, diff.mean(axis=1, keepdims=True), rtol=rtol, atol=atol):
            return "same softmax (logits differ by a constant per image)"
    return "same predictions"


def _label_of(c) -> dict[str, Any]:
    return {"method": c.method, "strategy": c.strategy, "variant": c.variant, "head": c.head}


def compare_candidates(candidates: Sequence[Any], test_labels, val_labels=None,
                       reference: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """Per candidate (:class:`iif.bench.posthoc.Candidate`): its comparison with softmax and its twin.

    ``reference`` holds earlier candidates of the same run (already scored), searched for the softmax row
    and for twins too. Returns one dict per candidate with ``val_class_avg`` (when validation exists),
    ``delta_test`` / ``delta_test_se`` and ``delta_val`` / ``delta_val_se`` against the softmax row of
    the same head (:func:`class_avg_difference`; absent when the run has no softmax row), and ``same_as``
    (the earliest row, in bench order, whose predictions equal this row's on every validation and test
    image) with ``relation`` (:func:`logit_relation`), or ``same_as`` None.
    """
    y_te = np.asarray(test_labels).astype(np.int64)
    y_va = None if val_labels is None else np.asarray(val_labels).astype(np.int64)
    pool = list(reference) + list(candidates)

    def preds(c):
        pt = np.asarray(c.test_logits).argmax(axis=1)
        pv = None if (y_va is None or c.val_logits is None) else np.asarray(c.val_logits).argmax(axis=1)
        return pt, pv

    pr = [preds(c) for c in pool]
    softmax = {}
    for c, p in zip(pool, pr):
        if (c.method, c.strategy) == REFERENCE and c.head not in softmax:
            softmax[c.head] = p
    first_by_pred: dict[tuple, int] = {}
    out = []
    for i, (c, (pt, pv)) in enumerate(zip(pool, pr)):
        key = (c.head, pt.tobytes(), None if pv is None else pv.tobytes())
        j = first_by_pred.setdefault(key, i)
        if i < len(reference):
            continue
        d: dict[str, Any] = {}
        if pv is not None:
            d["val_class_avg"] = _class_avg(pv, y_va)
        ref = softmax.get(c.head)
        if ref is not None:
            d["delta_test"], d["delta_test_se"] = class_avg_difference(pt, ref[0], y_te)
            if pv is not None and ref[1] is not None:
                d["delta_val"], d["delta_val_se"] = class_avg_difference(pv, ref[1], y_va)
        if j != i:
            t = pool[j]
            a = [c.test_logits] + ([c.val_logits] if pv is not None else [])
            b = [t.test_logits] + ([t.val_logits] if pv is not None else [])
            d["same_as"] = _label_of(t)
            d["relation"] = logit_relation(np.concatenate(a), np.concatenate(b))
        else:
            d["same_as"] = None
        out.append(d)
    return out


# ------------------------------------------------------------------------------------------- over seeds


def chance_corrected(acc: float, num_classes: int) -> float:
    """``(acc - chance) / (100 - chance)`` with chance = 100 / C: 0 at chance, 1 for a perfect score."""
    chance = 100.0 / num_classes
    return (acc - chance) / (100.0 - chance)


def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    v = np.array([x for x in values if x is not None], dtype=float)
    if not v.size:
        return None, None
    return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else 0.0)


def _identity_reason(kept: Mapping[str, Any], folded: Mapping[str, Any]) -> str | None:
    """The algebraic identity behind a fold, when it is one the bench knows (see docs/bench.md)."""
    names = {(kept["method"], kept["strategy"]), (folded["method"], folded["strategy"])}
    variants = {kept.get("variant"), folded.get("variant")}
    if names == {("IIF", "post-process")} and variants <= {"raw", "base2", "base10"}:
        return ("log2(K/n) and log10(K/n) are ln(K/n) divided by ln 2 and ln 10: the weights, hence the "
                "logits w * z (Eq. 13), differ by one positive factor, so the argmax is the same")
    if names == {("Balanced Softmax", "end-to-end"), ("LA loss", "end-to-end")}:
        return ("Balanced Softmax trains on z + ln n_c, the LA loss (tau = 1) on z + ln(n_c / K): they differ by "
                "ln K for every class, so the losses and their gradients are equal")
    if ("tau-norm", "post-hoc") in names and REFERENCE in names:
        return ("tau-norm divides each weight row by its norm to the power tau: at tau = 0 (or on a cosine "
                "head, whose rows are normalised anyway) it leaves the classifier unchanged")
    if "tuned" in str(folded["method"]):
        return "the validation split chose this row (for post-process with gamma = 1), so the tuned row is this row"
    return None


def _folds(keys: Sequence[tuple], per_key: Mapping[tuple, list[Mapping[str, Any]]]) -> dict[tuple, dict[str, Any]]:
    """``{folded row key: {"into": key, "relation": text}}`` for rows identical to an earlier row in every seed."""
    out: dict[tuple, dict[str, Any]] = {}
    for k in keys:
        ds = per_key[k]
        targets = {row_key(d["same_as"]) if d.get("same_as") else None for d in ds}
        if len(targets) != 1 or None in targets:
            continue
        target = targets.pop()
        if target not in per_key or target == k:
            continue
        relations = {d.get("relation") or "same predictions" for d in ds}
        out[k] = {"into": target, "relation": relations.pop() if len(relations) == 1 else "same predictions"}
    # a row folded into a folded row goes to that row's target (same predictions are transitive)
    for k, f in out.items():
        seen = {k}
        while f["into"] in out and f["into"] not in seen:
            seen.add(f["into"])
            f["into"] = out[f["into"]]["into"]
    return out


def summarize(rows: Sequence[Mapping[str, Any]], stds: Sequence[Mapping[str, Any]] | None,
              details: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]) -> tuple[list[dict], list[dict] | None, dict]:
    """Rank, fold and summarise the bench's rows (means over seeds, from :func:`iif.bench.report.aggregate_seeds`).

    ``details`` holds one dict per seed and row with the row's keys, ``seed`` and what
    :func:`compare_candidates` adds (or, for a single run such as :func:`iif.bench.posthoc_table`'s
    output, the details in row order without the row's keys); ``meta`` needs ``num_classes`` and may hold ``val_size``/``test_size``.

    Returns ``(rows, stds, summary)``: the rows in report order (ranked rows by mean validation
    class-average accuracy, best first, ties kept in bench order so the simpler row wins; each folded row
    right after the row it equals), each with the added keys ``rank`` (None for a folded row),
    ``val_class_avg``, ``test_class_avg``, ``delta_val``, ``delta_test`` (mean over seeds, points against
    softmax of the same head), ``same_as`` (label of the row it equals, or None), ``few_collapse`` (its
    few-shot test accuracy collapses against softmax's, :func:`few_shot_collapse`); ``stds`` in the same
    order with the standard deviation over seeds of the same numbers; and the ``summary`` dict written to
    ``results.json``. Without a validation split nothing is ranked or recommended.

    The recommendation is the best-ranked row that is :func:`deployable` and whose few-shot VALIDATION
    accuracy does not collapse against softmax's (:func:`few_shot_collapse`); the rows ranked above it are
    named in ``summary["passed_over"]`` with the reason. Rows whose few-shot TEST accuracy collapses are
    flagged (``few_collapse`` in every ranked row, ``summary["collapse"]``), never chosen on.
    """
    if details and "method" not in details[0]:  # one run's details, in row order (e.g. from posthoc_table)
        details = [{**r, **d} for r, d in zip(rows, details)]
    per_key: "OrderedDict[tuple, list[Mapping[str, Any]]]" = OrderedDict()
    for d in details:
        per_key.setdefault(row_key(d), []).append(d)
    keys = [row_key(r) for r in rows]
    std_by_key = {row_key(s): s for s in stds} if stds is not None else {}
    has_val = any("val_class_avg" in d for d in details)
    folds = _folds(keys, per_key)

    stats: dict[tuple, dict[str, Any]] = {}
    for k in keys:
        ds = per_key.get(k, [])
        s: dict[str, Any] = {}
        for name, field in (("val_class_avg", "val_class_avg"), ("test_class_avg", "class_avg"),
                            ("delta_val", "delta_val"), ("delta_test", "delta_test")):
            s[name], s[name + "_std"] = _mean_std([d.get(field) for d in ds])
        s["delta_val_se"], _ = _mean_std([d.get("delta_val_se") for d in ds])
        s["val_few"], _ = _mean_std([d.get("val_few") for d in ds])
        s["delta_test_se"], _ = _mean_std([d.get("delta_test_se") for d in ds])
        stats[k] = s

    order = list(range(len(rows)))
    kept = [i for i in order if keys[i] not in folds]
    if has_val:
        kept.sort(key=lambda i: -(stats[keys[i]]["val_class_avg"] if stats[keys[i]]["val_class_avg"] is not None else -math.inf))
    arranged: list[tuple[int, int | None]] = []
    for rank, i in enumerate(kept, start=1):
        arranged.append((i, rank if has_val else None))
        arranged += [(j, None) for j in order if keys[j] in folds and folds[keys[j]]["into"] == keys[i]]
    placed = {i for i, _ in arranged}
    arranged += [(j, None) for j in order if j not in placed]  # a fold target that is not a row (never expected)

    label_of = {k: row_label(r) for k, r in zip(keys, rows)}
    soft_few = {r.get("head"): r.get("few") for r in rows if (r["method"], r["strategy"]) == REFERENCE}
    out_rows, out_stds = [], ([] if stds is not None else None)
    for i, rank in arranged:
        k = keys[i]
        s = stats[k]
        same = label_of.get(folds[k]["into"]) if k in folds else None
        extra = {"rank": rank, "val_class_avg": s["val_class_avg"], "test_class_avg": s["test_class_avg"],
                 "delta_val": s["delta_val"], "delta_test": s["delta_test"], "same_as": same,
                 # the test-side flag: reported, never used to choose (the choice uses validation)
                 "few_collapse": few_shot_collapse(rows[i].get("few"), soft_few.get(rows[i].get("head")))}
        out_rows.append({**rows[i], **extra})
        if out_stds is not None:
            base = std_by_key.get(k, {kk: None for kk in rows[i]})
            out_stds.append({**base, "rank": rank, "val_class_avg": s["val_class_avg_std"],
                             "test_class_avg": s["test_class_avg_std"], "delta_val": s["delta_val_std"],
                             "delta_test": s["delta_test_std"], "same_as": same})

    summary = _summary(out_rows, stats, keys_in=[row_key(r) for r in out_rows], folds=folds, label_of=label_of,
                       per_key=per_key, meta=meta, has_val=has_val)
    return out_rows, out_stds, summary


def _softmax_rows(rows: Sequence[Mapping[str, Any]]) -> dict[Any, Mapping[str, Any]]:
    return {r["head"]: r for r in rows if (r["method"], r["strategy"]) == REFERENCE}


def _pm(mean: float | None, std: float | None, seeds: int, signed: bool = True) -> str:
    if mean is None:
        return "-"
    text = f"{mean:+.1f}" if signed else f"{mean:.1f}"
    return text + (f" ± {std:.1f}" if seeds > 1 and std is not None else "")


def _summary(rows, stats, keys_in, folds, label_of, per_key, meta, has_val) -> dict[str, Any]:
    """The summary dict of :func:`summarize` and its ``lines``, in this order: the recommendation and its
    uncertainty, passed-over rows, warnings and commands (:func:`_recommend`, with a validation split only),
    underfit warnings (:func:`_underfit_warnings`), notes on identical rows and the folded rows."""
    seeds = int(meta.get("seeds", 1) or 1)
    num_classes = int(meta["num_classes"])
    val_size = meta.get("val_size")
    chance = 100.0 / num_classes
    soft = _softmax_rows(rows)
    summary: dict[str, Any] = {
        "metric": "class-average accuracy (%), deltas in points against the softmax row of the same head",
        "selected_on": "validation" if has_val else None,
        "val_size": val_size, "test_size": meta.get("test_size"), "seeds": seeds,
        "chance": chance, "underfit_skill": UNDERFIT_SKILL, "noise_se": NOISE_SE,
        "softmax": [{"head": h, "val_class_avg": r.get("val_class_avg"), "test_class_avg": r.get("test_class_avg")}
                    for h, r in soft.items()],
        "recommended": None, "uncertainty": None, "best_per_strategy": [], "warnings": [], "folded": [],
    }
    lines: list[str] = []
    summary["collapse"] = {
        "rule": f"few-shot accuracy more than {COLLAPSE_POINTS:g} points below the softmax row's of the same head, "
                "or 0 where softmax's is above 0; judged on validation to choose, flagged on test",
        "points": COLLAPSE_POINTS,
        "flagged_on_test": [row_label(r) for r in rows if r.get("few_collapse")]}
    summary["passed_over"] = []
    if has_val:
        _recommend(summary, lines, rows, stats, soft, seeds, val_size)
    else:
        lines.append("No validation split: nothing is ranked or recommended (choosing on the test split would "
                     "overstate the winner). Rows are in bench order with their test change against softmax.")
    _underfit_warnings(summary, lines, soft, has_val, num_classes, chance)
    for k, f in folds.items():
        d0 = per_key[k][0]
        target = per_key[f["into"]][0]
        why = _identity_reason(target, d0)
        summary["folded"].append({"row": label_of[k], "same_as": label_of[f["into"]], "relation": f["relation"],
                                  "why": why})
    summary["notes"] = _unfolded_identities(rows)
    lines += summary["notes"]
    if summary["folded"]:
        lines.append(f"{len(summary['folded'])} rows are identical to another row in every seed (same predictions on every "
                     "validation and test image) and are folded into it; see the notes under the table.")
    summary["lines"] = lines
    return summary


def _pick_top(summary: dict[str, Any], rows, stats, val_few_soft: Mapping[Any, Any]) -> Mapping[str, Any]:
    """The best-ranked row that a command deploys and whose few-shot validation accuracy does not collapse
    (the rank-1 row when none qualifies); the rows passed over on the way go to ``summary["passed_over"]``."""
    ranked = sorted((r for r in rows if r["rank"] is not None), key=lambda r: r["rank"])
    for r in ranked:
        why = []
        if not deployable(r):
            why.append(f"no command deploys it {r['reproduce']}")
        vf, sf = stats[row_key(r)].get("val_few"), val_few_soft.get(r["head"])
        if few_shot_collapse(vf, sf):
            why.append(f"its few-shot validation accuracy collapses ({vf:.1f}% against softmax's {sf:.1f}%)")
        if not why:
            return r
        summary["passed_over"].append({"label": row_label(r), "rank": r["rank"], "why": "; ".join(why)})
    return ranked[0]


def _recommend(summary: dict[str, Any], lines: list[str], rows, stats, soft, seeds: int, val_size) -> None:
    """With a validation split: the recommended row (``summary["recommended"]``), its uncertainty, the rows
    passed over, a few-shot warning, its command, the best row per (head, strategy)."""
    val_few_soft = {h: stats[row_key(r)].get("val_few") for h, r in soft.items()}
    test_few_soft = {h: r.get("few") for h, r in soft.items()}
    top = _pick_top(summary, rows, stats, val_few_soft)
    s = stats[row_key(top)]
    rec = {kk: top.get(kk) for kk in ("method", "strategy", "variant", "head")}
    rec.update({"label": row_label(top), "val_class_avg": s["val_class_avg"], "test_class_avg": s["test_class_avg"],
                "delta_val": s["delta_val"], "delta_val_std": s["delta_val_std"],
                "delta_test": s["delta_test"], "delta_test_std": s["delta_test_std"]})
    if top.get("reproduce"):
        rec["reproduce"] = top["reproduce"]
    rec["rank"] = top["rank"]
    summary["recommended"] = rec
    sm = soft.get(top["head"])
    if (top["method"], top["strategy"]) == REFERENCE:
        why = ("no other row beats the plain backbone on validation" if top["rank"] == 1 else
               "every row ranked above it is passed over (see below)")
        lines.append(f"Recommended by validation: softmax itself ({row_label(top)}): {why} "
                     f"(class-average {s['val_class_avg']:.1f}%; test {s['test_class_avg']:.1f}%).")
    else:
        lines.append(
            f"Recommended by validation: {row_label(top)}: validation {s['val_class_avg']:.1f}% "
            f"({_pm(s['delta_val'], s['delta_val_std'], seeds)} vs softmax), test {s['test_class_avg']:.1f}% "
            f"({_pm(s['delta_test'], s['delta_test_std'], seeds)} vs softmax"
            + (f" at {sm['test_class_avg']:.1f}%" if sm is not None and sm.get("test_class_avg") is not None else "")
            + "), class-average accuracy.")
        _uncertainty(summary, lines, rows, top, s, val_size)
    if summary["passed_over"]:
        lines.append("Passed over (ranked higher on validation): " + "; ".join(
            f"rank {p['rank']} {p['label']}: {p['why']}" for p in summary["passed_over"])
            + f". The recommendation is the best row (rank {top['rank']}) that can be deployed and keeps its "
            "few-shot validation accuracy.")
    if top.get("few_collapse"):
        sm_few = test_few_soft.get(top["head"])
        lines.append(f"Few-shot warning: the recommended row's few-shot test accuracy ({top['few']:.1f}%) collapses "
                     f"against softmax's ({sm_few:.1f}%): more than {COLLAPSE_POINTS:g} points lower, or 0; "
                     "validation did not show it (few validation images?).")
        summary["warnings"].append(lines[-1])
    if top.get("reproduce"):
        _reproduce(summary, lines, rows, top)
    summary["best_per_strategy"] = _best_per_strategy(rows)
    lines.append("Selection used the validation split only; test numbers are reported, never used to choose. "
                 "Rows are ranked by validation class-average accuracy.")


def _uncertainty(summary: dict[str, Any], lines: list[str], rows, top, s: Mapping[str, Any], val_size) -> None:
    """The paired standard error of the recommended row's validation difference: within noise or not
    (``summary["uncertainty"]``), and the ranks below it that validation cannot tell apart from it."""
    se = s["delta_val_se"]
    if se is None or s["delta_val"] is None:
        return
    within = abs(s["delta_val"]) < NOISE_SE * se or se == 0.0 and s["delta_val"] == 0.0
    n = f"{val_size} images" if val_size is not None else "its images"
    if within:
        text = (f"Validation has only {n}: the difference {s['delta_val']:+.1f} ± {se:.1f} is within noise "
                f"(under {NOISE_SE:g} standard errors); this choice is not distinguishable from softmax on "
                "this validation split.")
    else:
        text = (f"Uncertainty: the validation difference {s['delta_val']:+.1f} ± {se:.1f} (paired standard error "
                f"over {n}) is {abs(s['delta_val']) / se:.1f} standard errors from zero.")
    lines.append(text)
    summary["uncertainty"] = {"delta_val": s["delta_val"], "delta_val_se": se, "val_size": val_size,
                              "within_noise": bool(within), "text": text}
    close = [r for r in rows if r["rank"] is not None and r["rank"] > top["rank"] and r["val_class_avg"] is not None
             and s["val_class_avg"] - r["val_class_avg"] < NOISE_SE * se]
    summary["uncertainty"]["close_ranks"] = [r["rank"] for r in close]
    if close and not within and se > 0:
        ranks = [r["rank"] for r in close]
        consecutive = len(ranks) > 2 and ranks == list(range(ranks[0], ranks[-1] + 1))
        span = f"{ranks[0]}-{ranks[-1]}" if consecutive else ", ".join(map(str, ranks))
        lines.append(f"Rank{'s' if len(ranks) > 1 else ''} {span} {'are' if len(ranks) > 1 else 'is'} within "
                     f"{NOISE_SE * se:.1f} points of it on validation ({NOISE_SE:g} of those standard errors): "
                     "their order is not reliable, and any of them is a sound choice.")


def _reproduce(summary: dict[str, Any], lines: list[str], rows, top) -> None:
    """The recommended row's command; when it has none, the best ranked row that has one."""
    cmd = str(top["reproduce"])
    lines.append(f"Reproduce the recommended row: {cmd if cmd.startswith('(') else '`' + cmd + '`'}")
    if not cmd.startswith("("):
        return
    # no command reproduces it: name the best row that has one
    alt = next((r for r in rows if r["rank"] is not None and r.get("reproduce")
                and not str(r["reproduce"]).startswith("(")), None)
    if alt is not None:
        summary["best_reproducible"] = {"label": row_label(alt), "rank": alt["rank"],
                                        "val_class_avg": alt["val_class_avg"], "test_class_avg": alt["test_class_avg"],
                                        "delta_val": alt["delta_val"], "delta_test": alt["delta_test"],
                                        "reproduce": alt["reproduce"]}
        lines.append(f"Best row with a command: {row_label(alt)} (rank {alt['rank']}): validation "
                     f"{alt['val_class_avg']:.1f}%, test {alt['test_class_avg']:.1f}%: `{alt['reproduce']}`")


def _best_per_strategy(rows) -> list[dict[str, Any]]:
    """The best-ranked row of each (head, strategy), softmax itself left out."""
    best: dict[tuple, Mapping[str, Any]] = {}
    for r in rows:
        if r["rank"] is not None and (r["head"], r["strategy"]) not in best and (r["method"], r["strategy"]) != REFERENCE:
            best[(r["head"], r["strategy"])] = r
    return [
        {"head": h, "strategy": st, "label": row_label(r), "rank": r["rank"], "val_class_avg": r["val_class_avg"],
         "test_class_avg": r["test_class_avg"], "delta_val": r["delta_val"], "delta_test": r["delta_test"]}
        for (h, st), r in best.items()]


def _underfit_warnings(summary: dict[str, Any], lines: list[str], soft, has_val: bool, num_classes: int,
                       chance: float) -> None:
    """A warning per head whose softmax backbone covers less than :data:`UNDERFIT_SKILL` of the way from
    chance to perfect (on validation when there is one, else on test)."""
    for h, r in soft.items():
        acc, split = (r.get("val_class_avg"), "validation") if has_val else (r.get("test_class_avg"), "test")
        if acc is None:
            continue
        skill = chance_corrected(acc, num_classes)
        if skill < UNDERFIT_SKILL:
            w = (f"Underfit warning: the softmax backbone ({h} head) reaches {acc:.1f}% class-average {split} accuracy, "
                 f"chance is {chance:.1f}% ({num_classes} classes): it covers {100 * skill:.0f}% of the way from chance "
                 f"to perfect (warning below {100 * UNDERFIT_SKILL:.0f}%). Train it longer or check the image size before "
                 "trusting this ranking.")
            summary["warnings"].append(w)
            lines.append(w)


def _unfolded_identities(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Rows that are algebraically the same method but were not folded (their predictions differ somewhere,
    e.g. through floating-point rounding during training): say so, so their gap is read as noise."""
    out = []
    kept = [r for r in rows if not r.get("same_as")]
    for i, a in enumerate(kept):
        for b in kept[i + 1:]:
            if a.get("head") != b.get("head"):
                continue
            pair = {(a["method"], a["strategy"]), (b["method"], b["strategy"])}
            same_loss = pair == {("Balanced Softmax", "end-to-end"), ("LA loss", "end-to-end")} and \
                "tau=1" in {a.get("variant"), b.get("variant")}
            same_scale = pair == {("IIF", "post-process")} and {a.get("variant"), b.get("variant")} <= {"raw", "base2", "base10"}
            if same_loss or same_scale:
                out.append(f"{row_label(a)} and {row_label(b)} are the same method ({_identity_reason(a, b)}), but their "
                           "predictions differ on some image in some seed (floating-point rounding): read their gap as noise.")
    return out


def summary_lines(summary: Mapping[str, Any]) -> list[str]:
    """The summary's sentences, in the order the report prints them."""
    return list(summary.get("lines", []))
