"""One definition per method (issue 16, part 2): a method defined once drives every task.

A method defined only in a fixture through :func:`iif.register_method` (``power``: ``z * (n_max / n)^a``, and
``plus``: ``z + s ln n`` in the loss, ``z - s ln n`` at inference) must work in :func:`iif.losses.build_loss`,
the ``--adjust`` parser and builder, ``iif train`` (its loss and ``posthoc.adjusters``) and
:func:`iif.detection.use_margin` on a tiny Faster R-CNN, each checked against the formula computed here by hand.
The built-in methods must give identical values through their definitions' transforms: the transforms against
the functional forms of :mod:`iif.adjusters` and written-out formulas, and a copy of a built-in method that has
only its transforms (so the generic path serves it) against the special implementation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import iif
from iif import methods
from iif.adjusters import NorCal, balanced_softmax_offset, logit_adjustment, posthoc_iif
from iif.errors import IIFError
from iif.logit_transforms import method_transform
from iif.losses import build_loss
from iif.methods import Param, canonical_method, get_method, method_names, register_method, unregister_method
from iif.train.strategies import build_adjuster, parse_adjuster
from iif.weights import iif_weights

COUNTS = np.array([40.0, 6.0, 1.0])
Z = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.3, -0.2], [-0.7, 1.5, 0.0]])
Y = torch.tensor([1, 2, 0])


def _power_w(a: float) -> torch.Tensor:
    """(n_max / n)^a, written out: 40 / [40, 6, 1]."""
    return torch.tensor([1.0, (40 / 6) ** a, 40.0 ** a], dtype=torch.float64)


def _ln_n() -> torch.Tensor:
    return torch.tensor([math.log(40), math.log(6), math.log(1)], dtype=torch.float64)


def _power(z, n, a=0.5):
    return z * (n.max() / n) ** a


@pytest.fixture
def defined():
    """``power`` (multiplicative, both phases) and ``plus`` (additive prior correction: train or test)."""
    register_method("power", train=_power, infer=_power, params=(Param("a", 0.5, "positive", "the exponent"),),
                    reference="a test fixture")
    register_method("plus", train=lambda z, n, s: z + s * torch.log(n), infer=lambda z, n, s: z - s * torch.log(n),
                    params={"s": 0.3}, when=("train", "test"))
    try:
        yield
    finally:
        for name in ("power", "plus"):
            if name in methods.method_names():
                unregister_method(name)


def test_the_fixture_unregisters(defined):
    assert {"power", "plus"} <= set(method_names("loss")) & set(method_names("posthoc")) & set(method_names("detection"))
    unregister_method("power")
    unregister_method("plus")
    with pytest.raises(IIFError, match="Unknown method 'power'"):
        canonical_method("power")
    assert "power" not in iif.losses.LOSSES
    assert method_names() == tuple(m.name for m in methods.METHODS)


# ---------------------------------------------------------------------------------------------- a new method


def test_new_method_as_a_loss(defined):
    want = F.cross_entropy(Z.double() * _power_w(0.5), Y)
    loss = build_loss("power", COUNTS)
    assert torch.allclose(loss(Z, Y).double(), want, atol=1e-6)
    assert torch.allclose(build_loss("power", COUNTS, a=1.0)(Z, Y).double(),
                          F.cross_entropy(Z.double() * _power_w(1.0), Y), atol=1e-6)
    # train_and_test: the loss predicts with the infer transform; the additive one predicts with z
    assert torch.allclose(loss.adjust_logits(Z).double(), Z.double() * _power_w(0.5), atol=1e-6)
    plus = build_loss("plus", COUNTS, label_smoothing=0.1)
    want = F.cross_entropy(Z.double() + 0.3 * _ln_n(), Y, label_smoothing=0.1)
    assert torch.allclose(plus(Z, Y).double(), want, atol=1e-6)
    assert torch.equal(plus.adjust_logits(Z), Z)
    with pytest.raises(IIFError, match=r"parameter 'a' \(the exponent\) must be a finite number > 0"):
        build_loss("power", COUNTS, a=-1)
    with pytest.raises(IIFError, match="bad options for loss 'power'"):
        build_loss("power", COUNTS, not_an_option=1)
    with pytest.raises(IIFError, match="needs the training class counts"):
        build_loss("power")


def test_new_method_as_an_adjust_spec(defined):
    assert parse_adjuster("power") == ("power", "")
    assert parse_adjuster("POWER:0.25") == ("power", "0.25")
    for spec, a in (("power", 0.5), ("power:0.25", 0.25), ("power:a=2", 2.0)):
        got = build_adjuster(spec, COUNTS)(None, Z)
        assert got.dtype == Z.dtype
        assert torch.allclose(got.double(), Z.double() * _power_w(a), atol=1e-5), spec
    got = build_adjuster("plus:0.5", COUNTS)(None, Z)
    assert torch.allclose(got.double(), Z.double() - 0.5 * _ln_n(), atol=1e-6)
    with pytest.raises(IIFError, match=r"parameter 'a' \(the exponent\) must be a finite number > 0; got 'x'"):
        parse_adjuster("power:x")
    with pytest.raises(IIFError, match="method 'power' has no parameter 'b'; its parameters are a=0.5"):
        parse_adjuster("power:b=1")
    with pytest.raises(IIFError, match="unknown adjuster 'powr:1'.*Did you mean 'power'"):
        parse_adjuster("powr:1")


def test_new_method_in_iif_train(defined):
    from iif.metrics import evaluate_logits
    from iif.train import extract_features, fit, load_config
    from iif.train.config_checks import _check_loss, _check_posthoc
    from iif.train.config_schema import LossConfig, PosthocConfig

    _check_loss(LossConfig(name="power"))
    _check_posthoc(PosthocConfig(adjusters=["power:0.25", "plus"]))
    cfg = load_config("digits_lt_e2e", ["runtime.progress=false", "runtime.tensorboard=false", "schedule.epochs=1",
                                        "model.backbone_kwargs.width=4", "loss.name=power", "eval.every=0", "strategy.name=posthoc",
                                        "posthoc.adjusters=[power:0.25]"])
    res = fit(cfg)
    _, z, y = extract_features(res.model, res.splits.test, batch_size=256)
    counts = np.asarray(res.splits.freq.image_counts, dtype=np.float64)
    w = lambda a: torch.as_tensor((counts.max() / counts) ** a)  # noqa: E731
    assert res.final_metrics["adjusted"]["top1"] == pytest.approx(evaluate_logits(z.double() * w(0.5), y, counts)["top1"])
    assert res.final_metrics["power:0.25"]["top1"] == pytest.approx(
        evaluate_logits(z.double() * w(0.25), y, counts)["top1"])
    assert res.final_metrics["raw"]["top1"] == pytest.approx(evaluate_logits(z, y, counts)["top1"])


def test_new_method_in_use_margin(defined, tiny_rcnn):
    _rcnn = tiny_rcnn
    from iif.detection import use_margin

    x = torch.randn(6, 32)
    z = _rcnn().roi_heads.box_predictor(x)[0].detach().double()  # (6, 4): background first
    fg_power = torch.cat([z[:, :1], z[:, 1:] * _power_w(0.5)], dim=1)
    for mode in ("train", "eval"):  # train_and_test: the loss and the inference softmax see w * z on foreground
        model = use_margin(_rcnn(), "power", COUNTS)
        getattr(model, mode)()
        got = model.roi_heads.box_predictor(x)[0].detach().double()
        assert torch.allclose(got, fg_power, atol=1e-5), mode
        assert torch.equal(got[:, 0], z[:, 0])  # background untouched
    assert list(model.state_dict()) == list(_rcnn().state_dict())  # the margin is configuration, not state
    # the class scores the detector's postprocess takes: softmax over C + 1, background dropped
    scores = torch.softmax(use_margin(_rcnn(), "power", COUNTS, params={"a": 1.0}).eval().roi_heads.box_predictor(x)[0],
                           -1)[:, 1:].double()
    e = torch.exp(torch.cat([z[:, :1], z[:, 1:] * _power_w(1.0)], dim=1))
    assert torch.allclose(scores, (e / e.sum(1, keepdim=True))[:, 1:], atol=1e-5)
    # an additive method: z + s ln n in the loss only (when="train"), z - s ln n at inference only (when="test")
    m = use_margin(_rcnn(), "plus", COUNTS, when="train", params={"s": 0.5})
    pred = m.roi_heads.box_predictor
    plus = torch.cat([torch.zeros(1, dtype=torch.float64), 0.5 * _ln_n()])
    assert torch.allclose(pred.train()(x)[0].double(), z + plus, atol=1e-5)
    assert torch.allclose(pred.eval()(x)[0].double(), z, atol=1e-6)
    pred = use_margin(_rcnn(), "plus", COUNTS, when="test").roi_heads.box_predictor
    assert torch.allclose(pred.eval()(x)[0].double(), z - 0.6 * plus, atol=1e-5)
    assert torch.allclose(pred.train()(x)[0].double(), z, atol=1e-6)
    with pytest.raises(IIFError, match="method='plus' does not take when='train_and_test'"):
        use_margin(_rcnn(), "plus", COUNTS)
    with pytest.raises(IIFError, match="params= sets the parameters of a method defined by its transforms"):
        use_margin(_rcnn(), "logit_adjustment", COUNTS, when="test", params={"tau": 2.0})
    with pytest.raises(IIFError, match="counts cover 2 classes"):
        use_margin(_rcnn(), "power", COUNTS[:2])


def test_register_method_refuses_bad_definitions(defined):
    with pytest.raises(IIFError, match="already registered"):
        register_method("power", train=_power)
    with pytest.raises(IIFError, match="built-in method"):
        register_method("iif", train=_power)
    with pytest.raises(IIFError, match="'la' already names method 'logit_adjustment'"):
        register_method("power2", train=_power, aliases=("la",))
    with pytest.raises(IIFError, match="needs a train transform, an infer transform or both"):
        register_method("nothing")
    with pytest.raises(IIFError, match="task 'loss' needs a train transform"):
        register_method("late", infer=_power, tasks=("loss",))
    with pytest.raises(IIFError, match="when='train_and_test' needs"):
        register_method("late", infer=_power, when=("train_and_test",))
    with pytest.raises(IIFError, match="must be lower-case"):
        register_method("Bad-Name", train=_power)
    with pytest.raises(IIFError, match="'module:function' string"):
        register_method("late", train="no_colon")
    with pytest.raises(IIFError, match="cannot be removed|no registered method 'iif'"):
        unregister_method("iif")
    register_method("power", train=_power, infer=_power, params={"a": 0.25}, replace=True)
    assert torch.allclose(build_adjuster("power", COUNTS)(None, Z).double(), Z.double() * _power_w(0.25), atol=1e-5)
    infer_only = register_method("late", infer=_power, params={"a": 0.5})
    try:
        assert infer_only.tasks == ("posthoc", "detection") and infer_only.when == ("test",)
        with pytest.raises(IIFError, match="Unknown loss 'late' for classification losses"):
            build_loss("late", COUNTS)
    finally:
        unregister_method("late")
    assert iif.register_method is register_method


# ---------------------------------------------------------------------------------------------- built-in methods


def test_builtin_transforms_equal_the_functional_forms():
    z = Z.clone()
    p = COUNTS / COUNTS.sum()
    n = torch.as_tensor(COUNTS)
    t = lambda name, phase: method_transform(name, phase)  # noqa: E731
    for phase in ("train", "infer"):
        assert torch.equal(t("softmax", phase)(z, n), z)
        assert torch.equal(t("iif", phase)(z, n), posthoc_iif(z, iif_weights(COUNTS, "smooth")))
        assert torch.equal(t("iif", phase)(z, n, variant="base2", gamma=0.25),
                           posthoc_iif(z, iif_weights(COUNTS, "base2", dtype=torch.float64) ** 0.25))
    assert torch.equal(t("balanced_softmax", "train")(z, n), balanced_softmax_offset(z, COUNTS))
    assert torch.equal(t("logit_adjustment", "infer")(z, n, tau=0.5), logit_adjustment(z, COUNTS, tau=0.5))
    assert torch.equal(t("norcal", "infer")(z, n, gamma=0.7), NorCal(COUNTS, gamma=0.7)(z))
    # and the formulas written out (paper / Menon et al.): z + tau ln p, z - tau ln p, z + ln n
    assert torch.allclose(t("logit_adjustment", "train")(z, n, tau=0.5).double(), z.double() + 0.5 * torch.as_tensor(np.log(p)),
                          atol=1e-6)
    assert torch.allclose(t("logit_adjustment", "infer")(z, n).double(), z.double() - torch.as_tensor(np.log(p)),
                          atol=1e-6)
    assert torch.allclose(t("balanced_softmax", "train")(z, n).double(), z.double() + _ln_n(), atol=1e-6)
    assert t("ldam", "train") is None and t("balanced_softmax", "infer") is None


@pytest.fixture
def generic_copies():
    """Built-in methods re-defined with their transforms only (no impl): the generic path serves them."""
    for m in ("iif", "logit_adjustment", "norcal", "balanced_softmax"):
        src = get_method(m)
        register_method(f"{m}_generic", train=src.train, infer=src.infer, params=src.params,
                        when=tuple(w for w in src.when) or None)
    try:
        yield
    finally:
        for m in ("iif", "logit_adjustment", "norcal", "balanced_softmax"):
            unregister_method(f"{m}_generic")


def test_builtin_methods_give_identical_values_through_the_generic_dispatch(generic_copies):
    for tau in (1.0, 0.5):
        for z in (Z, Z.double()):  # float64 logits too: the offset is rounded to float32 in both
            assert torch.equal(build_loss("logit_adjustment_generic", COUNTS, tau=tau)(z, Y),
                               build_loss("logit_adjusted", COUNTS, tau=tau)(z, Y))
        assert torch.equal(build_adjuster(f"logit_adjustment_generic:{tau}", COUNTS)(None, Z),
                           build_adjuster(f"la:{tau}", COUNTS)(None, Z))
    assert torch.equal(build_loss("balanced_softmax_generic", COUNTS)(Z, Y), build_loss("balanced_softmax", COUNTS)(Z, Y))
    for spec, old in (("iif_generic", "iif:smooth"), ("iif_generic:raw", "iif:raw"),
                      ("iif_generic:variant=base2,gamma=0.25", "iif:base2^0.25")):
        assert torch.equal(build_adjuster(spec, COUNTS)(None, Z), build_adjuster(old, COUNTS)(None, Z)), spec
    fused = build_loss("iif", COUNTS)
    generic = build_loss("iif_generic", COUNTS)
    assert torch.allclose(generic(Z, Y), fused(Z, Y), atol=1e-6)
    assert torch.equal(generic.adjust_logits(Z), fused.adjust_logits(Z))


def test_builtin_detection_margins_equal_their_generic_copies(generic_copies, tiny_rcnn):
    _rcnn = tiny_rcnn
    from iif.detection import use_margin

    x = torch.randn(5, 32)
    cases = [("iif", {}, "iif_generic", {}, "train_and_test"),
             ("norcal", {"gamma": 0.5}, "norcal_generic", {"params": {"gamma": 0.5}}, "test"),
             ("logit_adjustment", {"la_form": "prior", "tau": 0.5}, "logit_adjustment_generic",
              {"params": {"tau": 0.5}}, "test"),
             ("logit_adjustment", {"la_form": "prior"}, "logit_adjustment_generic", {}, "train"),
             ("balanced_softmax", {}, "balanced_softmax_generic", {}, "train")]
    for old, old_kw, new, new_kw, when in cases:
        a = use_margin(_rcnn(), old, COUNTS, when=when, **old_kw).roi_heads.box_predictor
        b = use_margin(_rcnn(), new, COUNTS, when=when, **new_kw).roi_heads.box_predictor
        for mode in ("train", "eval"):
            getattr(a, mode)()
            getattr(b, mode)()
            assert torch.allclose(a(x)[0], b(x)[0], atol=1e-6, rtol=0), (old, when, mode)


def test_dispatch_reads_the_definitions():
    from iif.losses import LOSSES
    from iif.losses import registry

    assert LOSSES["ce"] is registry._build_ce and LOSSES["logit_adjusted"] is registry._build_logit_adjusted
    for name in method_names():
        m = get_method(name)
        for task in m.tasks:
            assert m.implementation(task) is not None or m.transform("train" if task == "loss" else "infer"), (name, task)


def test_new_method_in_iif_bench(defined, tmp_path, monkeypatch):
    """``run_bench(methods=...)``: a post-hoc row (the backbone's logits through the infer transform, checked
    against softmax's logits times the weights by hand) and an end-to-end row (trained with the method's loss)."""
    from iif.bench import runner as R
    from iif.train import build_splits

    tiny = ["schedule.epochs=1", "model.backbone_kwargs.width=4", "decoupled.epochs=1"]
    splits = build_splits(R.bench_config("digits-lt", overrides=tiny))
    seen: list = []
    real = R.evaluate_candidates

    def capture(cands, *args, **kwargs):
        seen.extend(cands)
        return real(cands, *args, **kwargs)

    monkeypatch.setattr(R, "evaluate_candidates", capture)
    old = torch.get_num_threads()
    try:
        res = R.run_bench(dataset="digits-lt", out=tmp_path / "out", quick=True, heads=["linear"], overrides=tiny,
                          splits=splits, plots=False, threads=1, log=lambda *_: None, methods=["power", "PLUS"])
    finally:
        torch.set_num_threads(old)
    by = {(c.method, c.strategy): c for c in seen}
    counts = np.asarray(splits.freq.image_counts, dtype=np.float64)
    w = (counts.max() / counts) ** 0.5
    np.testing.assert_allclose(by["power", "post-hoc"].test_logits, by["softmax", "end-to-end"].test_logits * w,
                               rtol=1e-5, atol=1e-5)
    ln_n = np.log(counts)
    np.testing.assert_allclose(by["plus", "post-hoc"].val_logits, by["softmax", "end-to-end"].val_logits - 0.3 * ln_n,
                               rtol=1e-5, atol=1e-5)
    e2e = by["power", "end-to-end"].info["reproduce"]
    assert "loss.name=power" in e2e["command"] and e2e["metrics"] == "adjusted"  # w * z at inference
    assert by["plus", "end-to-end"].info["reproduce"]["metrics"] == "raw"  # a prior correction predicts with z
    assert by["power", "post-hoc"].info["reproduce"]["eval_adjust"] == "power"
    assert {("power", "post-hoc"), ("power", "end-to-end"), ("plus", "post-hoc"), ("plus", "end-to-end")} <= {
        (r["method"], r["strategy"]) for r in res["rows"]}
    assert res["meta"]["methods"] == ["power", "plus"]
    with pytest.raises(IIFError, match="--methods 'softmax'"):
        R.run_bench(dataset="digits-lt", out=tmp_path / "o2", quick=True, splits=splits, methods=["softmax"])
    with pytest.raises(IIFError, match="Unknown method 'nope'"):
        R.run_bench(dataset="digits-lt", out=tmp_path / "o3", quick=True, splits=splits, methods=["nope"])
