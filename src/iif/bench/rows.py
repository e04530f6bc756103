"""The rows of one (seed, head) block of ``iif bench``: post-hoc rows from the backbone's logits, decoupled rows
(stage 2 retrained), end-to-end baselines, and the rows of the methods ``--methods`` names (built from their
definitions in :mod:`iif.methods`); each row carries the command that reproduces it (:class:`_Row`)."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import IIFError
from ..weights import VARIANTS
from .base import BenchBase, _last_wins, _override
from .posthoc import Candidate, posthoc_candidates, select_by_validation, tuned_posthoc_candidate, valid_variants


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


def _np(t) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        return t.detach().cpu().double().numpy()
    return np.asarray(t)


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
        c, secs = _e2e_row(base, extra, method, loss, variant, splits, device, head, seed, log)
        seconds += secs
        out.append(c)
    return out, seconds


def _e2e_row(base: BenchBase, extra: list[str], method: str, loss: str, variant: str | None, splits, device,
             head: str, seed: int, log) -> tuple[Candidate, float]:
    """One end-to-end row: train with ``extra`` overrides, predict with the loss's ``adjust_logits``."""
    cfg = base.config(*extra, device=str(device))
    log(f"  [seed {seed}, {head}] end-to-end {method} ...")
    res, _, secs = _train(cfg, splits, device)
    zt = _logits(res, splits, device, cfg.eval.batch_size, "test")
    zv = _logits(res, splits, device, cfg.eval.batch_size, "val")
    own = getattr(res.criterion, "adjust_logits", None) is not None and _has_own_rule(res.criterion)
    c = Candidate(method, "end-to-end", variant, head, _np(zt), None if zv is None else _np(zv))
    run = f"runs/{loss}-{head}-s{seed}"
    return _with_reproduce(c, _Row(base, extra, "adjusted" if own else "raw", None, run)), secs


def checked_methods(methods) -> tuple[str, ...]:
    """The canonical names of ``iif bench --methods`` (any spelling of :mod:`iif.methods`, registered methods
    included), each a loss or a post-hoc method other than softmax (the backbone's own row), without repeats.
    Each gets a post-hoc row on every backbone's logits (``--adjust NAME``) if it is a post-hoc method and an
    end-to-end row (``loss.name=NAME``) if it is a loss, with or without ``quick``."""
    from ..methods import get_method

    out: list[str] = []
    for name in methods:
        m = get_method(str(name).strip().lower())
        if m.name == "softmax" or not {"loss", "posthoc"} & set(m.tasks):
            raise IIFError(f"--methods {name!r}: the bench adds rows for loss or post-hoc methods other than softmax "
                           "(the backbone's row); detection margins belong to iif det-bench.")
        if m.name not in out:
            out.append(m.name)
    return tuple(out)


def method_posthoc_rows(model, f_te, z_te, f_va, z_va, counts, h: str, bb: _Row, methods) -> list[Candidate]:
    """A post-hoc row per named method of the post-hoc task: the backbone's logits through ``--adjust NAME``
    (its definition's post-hoc implementation or ``infer`` transform, :func:`iif.train.build_adjuster`)."""
    from ..methods import get_method
    from ..train import build_adjuster

    out = []
    for name in methods:
        if "posthoc" not in get_method(name).tasks:
            continue
        adjust = build_adjuster(name, counts, model)
        c = Candidate(name, "post-hoc", None, h, _np(adjust(f_te, z_te)),
                      None if z_va is None else _np(adjust(f_va, z_va)))
        out.append(_with_reproduce(c, _Row(bb.base, bb.extra, name, name, bb.run_name, True)))
    return out


def method_e2e_rows(base: BenchBase, bb: _Row, splits, device, head: str, seed: int, methods,
                    log) -> tuple[list[Candidate], float]:
    """An end-to-end row per named method of the loss task, trained with ``loss.name=NAME`` (its definition's
    loss implementation or ``train`` transform, :func:`iif.losses.build_loss`)."""
    from ..methods import get_method

    out, seconds = [], 0.0
    for name in methods:
        m = get_method(name)
        if "loss" in m.tasks:
            loss = m.spelling("loss")
            c, secs = _e2e_row(base, [*bb.extra, f"loss.name={loss}"], name, loss, None, splits, device, head, seed, log)
            out.append(c)
            seconds += secs
    return out, seconds


def _has_own_rule(criterion) -> bool:
    """Whether ``iif train`` reports this loss's logits under ``adjusted`` (its ``adjust_logits`` is not the identity)."""
    from ..losses import LossBase

    return not (isinstance(criterion, LossBase) and type(criterion).adjust_logits is LossBase.adjust_logits)
