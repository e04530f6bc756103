"""The three IIF strategies (paper Fig. 3; docs/method.md): the decoupled stage really freezes the backbone
(weights AND BatchNorm statistics bitwise unchanged), legacy mode trains exactly what the authors' code trains
(classifier weight and bias only, BN statistics move, re-init overwritten by the load), LWS learns only its
scales, post-hoc adjusters (tau-norm without the bias) equal independent computations, and a stage-1
checkpoint from another model is refused."""

import pytest
import torch
import torch.nn.functional as F

from iif import iif_weights
from iif.errors import IIFError
from iif.metrics import evaluate_logits
from iif.train import extract_features, fit, load_config
from iif.train import evaluate_checkpoint
from iif.train.decoupled import method_overrides
from iif.train.engine import build_splits
from iif.train.strategies import build_adjuster

TINY = ["runtime.progress=false", "runtime.tensorboard=false", "model.backbone_kwargs.width=4", "eval.every=0"]


@pytest.fixture(scope="module")
def splits():
    return build_splits(load_config("digits_lt_e2e"))


@pytest.fixture(scope="module")
def stage1(tmp_path_factory, splits):
    """A 1-epoch softmax model, saved as a stage-1 checkpoint."""
    out = tmp_path_factory.mktemp("stage1")
    res = fit(load_config("digits_lt_e2e", TINY + ["loss.name=ce", "schedule.epochs=1"]), out_dir=out, splits=splits)
    state = {k: v.clone() for k, v in res.model.state_dict().items()}
    return out / "last.pt", state


def _stage2(splits, ckpt, *extra):
    cfg = load_config("digits_lt_decoupled", TINY + [f"decoupled.stage1_checkpoint={ckpt}", "decoupled.epochs=1",
                                                     *extra])
    return fit(cfg, splits=splits)


def _split(state):
    backbone = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    head = {k: v for k, v in state.items() if k.startswith("classifier.")}
    return backbone, head


def test_decoupled_freezes_backbone_weights_and_bn_statistics(splits, stage1):
    path, before = stage1
    res = _stage2(splits, path, "decoupled.lr=0.05")
    after = res.model.state_dict()
    bb_before, head_before = _split(before)
    bb_after, head_after = _split(after)
    assert any("running_mean" in k for k in bb_before)
    for k in bb_before:
        assert torch.equal(bb_before[k], bb_after[k]), k
    assert not torch.equal(head_before["classifier.weight"], head_after["classifier.weight"])
    assert set(res.final_metrics) == {"raw", "adjusted"}  # stage 2 trains with IIF: w * z is reported


def test_legacy_mode_keeps_updating_bn_statistics_but_not_weights(splits, stage1):
    path, before = stage1
    after = _stage2(splits, path, "decoupled.legacy=true", "decoupled.lr=0.05").model.state_dict()
    bb_before, _ = _split(before)
    stats = [k for k in bb_before if "running_" in k]
    weights = [k for k in bb_before if k.endswith("weight") or k.endswith("bias")]
    assert any(not torch.equal(bb_before[k], after[k]) for k in stats)
    assert all(torch.equal(bb_before[k], after[k]) for k in weights)


def test_reinit_happens_after_the_load_except_in_legacy_mode(splits, stage1):
    path, before = stage1
    # lr=0 and no weight decay: whatever the classifier is after set-up is what we read back.
    fresh = _stage2(splits, path, "decoupled.reinit=true", "decoupled.lr=0", "decoupled.weight_decay=0").model
    assert not torch.equal(fresh.state_dict()["classifier.weight"], before["classifier.weight"])
    legacy = _stage2(splits, path, "decoupled.reinit=true", "decoupled.legacy=true", "decoupled.lr=0",
                     "decoupled.weight_decay=0").model
    assert torch.equal(legacy.state_dict()["classifier.weight"], before["classifier.weight"])


def test_stage1_checkpoint_from_another_model_is_refused(splits, stage1, tmp_path):
    path, _ = stage1
    with pytest.raises(IIFError, match="does not match"):
        _stage2(splits, path, "model.backbone_kwargs.width=6")
    state = torch.load(path, weights_only=True)
    state["model"]["classifier.weight"] = state["model"]["classifier.weight"][:7]
    state["model"]["classifier.bias"] = state["model"]["classifier.bias"][:7]
    torch.save(state, tmp_path / "seven.pt")
    with pytest.raises(IIFError, match="number of classes differs"):
        _stage2(splits, tmp_path / "seven.pt")


def test_posthoc_adjusters_match_independent_computations(splits, stage1):
    path, _ = stage1
    cfg = load_config("digits_lt_posthoc", TINY + [f"posthoc.checkpoint={path}"])
    res = fit(cfg, splits=splits)
    f, z, y = extract_features(res.model, splits.test)
    counts = splits.freq.image_counts
    n = torch.as_tensor(counts, dtype=torch.float64)
    expected = {
        "iif:smooth": z * iif_weights(counts, "smooth"),
        "iif:raw": z * iif_weights(counts, "raw"),
        "la:1.0": z - torch.log(n / n.sum()).float(),
    }
    W = res.model.classifier.weight.detach().cpu()
    expected["taunorm:1.0"] = F.linear(f, W / W.norm(dim=1, keepdim=True))  # bias dropped, as Kang et al.'s code
    assert res.model.classifier.bias.abs().sum() > 0  # so keeping it would be seen
    assert set(res.final_metrics) == {"raw", *expected}
    for name, logits in expected.items():
        ref = evaluate_logits(logits, y, counts)
        assert res.final_metrics[name]["top1"] == pytest.approx(ref["top1"]), name
        assert res.final_metrics[name]["nll"] == pytest.approx(ref["nll"], rel=1e-4), name


def test_bad_adjuster_and_strategy_names(splits, stage1):
    path, _ = stage1
    with pytest.raises(IIFError, match="unknown adjuster"):
        fit(load_config("digits_lt_posthoc", TINY + [f"posthoc.checkpoint={path}", "posthoc.adjusters=[lq:1]"]),
            splits=splits)
    with pytest.raises(IIFError, match="strategy"):
        fit(load_config("digits_lt_e2e", TINY + ["strategy.name=two_stage"]), splits=splits)


COSINE_LEARNABLE = ["model.head=cosine", "model.kwargs={learnable_scale: true}"]


@pytest.fixture(scope="module")
def cosine_stage1(tmp_path_factory, splits):
    """A 1-epoch softmax model with a cosine head whose scale is learnable (Places-LT's head)."""
    out = tmp_path_factory.mktemp("stage1cos")
    fit(load_config("digits_lt_e2e", TINY + COSINE_LEARNABLE + ["loss.name=ce", "schedule.epochs=1"]), out_dir=out,
        splits=splits)
    state = torch.load(out / "last.pt", weights_only=True)["model"]
    return out / "last.pt", state


def _changed(before, after):
    return {k for k in before if not torch.equal(before[k], after[k])}


def test_legacy_trains_only_classifier_weight_and_bias_not_the_cosine_scale(splits, cosine_stage1):
    path, before = cosine_stage1
    assert "classifier.s" in before
    after = _stage2(splits, path, *COSINE_LEARNABLE, "decoupled.legacy=true", "decoupled.lr=0.05").model.state_dict()
    changed = _changed(before, after)
    stats = {k for k in before if "running_" in k or "num_batches_tracked" in k}
    # the authors' code: optimizer over the classifier's weight and bias; BN statistics keep moving
    assert changed - stats == {"classifier.weight"}  # the cosine head has no bias
    assert changed & stats
    # the default (correct) mode trains every classifier parameter, the learnable scale included, and no statistic
    after = _stage2(splits, path, *COSINE_LEARNABLE, "decoupled.lr=0.05").model.state_dict()
    assert _changed(before, after) == {"classifier.weight", "classifier.s"}


def test_lws_learns_only_per_class_scales_and_its_checkpoint_evaluates(splits, stage1, tmp_path):
    path, before = stage1
    cfg = load_config("digits_lt_decoupled", TINY + [f"decoupled.stage1_checkpoint={path}", "decoupled.epochs=2",
                                                     "decoupled.lr=0.05", *method_overrides("LWS")])
    res = fit(cfg, out_dir=tmp_path / "lws", splits=splits)
    after = res.model.state_dict()
    renamed = {k.replace("classifier.head.", "classifier."): v for k, v in after.items() if "lws" not in k}
    assert not _changed(before, renamed)  # backbone, statistics and the classifier itself unchanged
    scale = after["classifier.lws.scale"]
    assert scale.shape == (10,) and not torch.equal(scale, torch.ones(10))
    f, z, y = extract_features(res.model, splits.test)
    head = res.model.classifier.head
    assert torch.allclose(z, head(f) * scale, atol=1e-6)  # alpha_c * z_c
    metrics = evaluate_checkpoint(tmp_path / "lws" / "last.pt", splits=splits)  # iif eval rebuilds the wrapper
    assert metrics["raw"]["top1"] == pytest.approx(res.final_metrics["raw"]["top1"])
    with pytest.raises(IIFError, match="legacy"):
        _stage2(splits, path, "decoupled.method=lws", "decoupled.legacy=true")


def test_crt_reinitialises_and_samples_class_balanced(splits, stage1):
    path, before = stage1
    assert method_overrides("cRT") == ["decoupled.method=retrain", "decoupled.loss=ce",
                                       "decoupled.sampler=class_balanced", "decoupled.reinit=true"]
    res = _stage2(splits, path, *method_overrides("cRT"), "decoupled.lr=0", "decoupled.weight_decay=0")
    assert not torch.equal(res.model.state_dict()["classifier.weight"], before["classifier.weight"])
    assert set(res.final_metrics) == {"raw"}  # plain CE: no loss-specific decision rule


def test_tau_norm_leaves_a_cosine_head_unchanged(splits, cosine_stage1):
    path, _ = cosine_stage1
    res = fit(load_config("digits_lt_posthoc", TINY + COSINE_LEARNABLE + [f"posthoc.checkpoint={path}"]),
              splits=splits)
    f, z, _ = extract_features(res.model, splits.test)
    for tau in (0.0, 1.0, 2.0):
        assert torch.allclose(build_adjuster(f"taunorm:{tau}", splits.freq.image_counts, res.model)(f, z), z, atol=1e-5)


def test_cached_features_train_the_same_classifier_as_the_per_batch_backbone_pass(splits, stage1, monkeypatch):
    """digits-LT has no augmentation, so stage 2 computes the frozen backbone's features once; the classifier it
    trains equals the one trained with a backbone forward per batch (same batches, same order)."""
    import iif.train.decoupled as D

    path, _ = stage1
    used = []
    real = D.cached_feature_batches
    monkeypatch.setattr(D, "cached_feature_batches", lambda *a, **k: used.append(real(*a, **k)) or used[-1])
    import iif.train.engine as E

    monkeypatch.setattr(E, "cached_feature_batches", D.cached_feature_batches)
    extra = ("decoupled.epochs=3", "decoupled.lr=0.05", "decoupled.batch_size=16")
    cached = _stage2(splits, path, *extra).model.classifier
    assert isinstance(used[-1], D.FeatureBatches)
    monkeypatch.setattr(D, "CACHE_FEATURES", False)
    per_batch = _stage2(splits, path, *extra).model.classifier
    assert used[-1] is None
    for name, p in cached.state_dict().items():
        assert torch.allclose(p, per_batch.state_dict()[name], rtol=1e-5, atol=1e-6), name
    assert not torch.equal(cached.weight, stage1[1]["classifier.weight"])
    # and it is not used where it would change the inputs: BN statistics moving (legacy), mixup of images
    monkeypatch.setattr(D, "CACHE_FEATURES", True)
    for setting in ("decoupled.legacy=true", "decoupled.mixup_alpha=0.2"):
        _stage2(splits, path, setting)
        assert used[-1] is None, setting


def test_stage2_on_cached_features_resumes_exactly(splits, stage1, tmp_path):
    path, _ = stage1
    extra = [f"decoupled.stage1_checkpoint={path}", "decoupled.epochs=3", "decoupled.lr=0.05"]
    whole = fit(load_config("digits_lt_decoupled", TINY + extra), out_dir=tmp_path / "whole", splits=splits)
    cut = tmp_path / "cut"
    part = fit(load_config("digits_lt_decoupled", TINY + extra + ["runtime.stop_after_epoch=1"]), out_dir=cut,
               splits=splits)
    assert not part.finished
    resumed = fit(load_config("digits_lt_decoupled", TINY + extra), out_dir=cut, splits=splits, resume=True)
    for k, v in whole.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
