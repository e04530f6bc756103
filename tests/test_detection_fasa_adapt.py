"""FASA's sampling adaptation (Zang et al., ICCV 2021, Sec. 3.3) in det-train: the class grouping by affinity
propagation on hand-made means, the per-class validation loss against torchvision's pieces called by hand,
the adaptation of a tiny training run against the rule applied by hand, an exact resume and the refusals."""

import numpy as np
import pytest
import torch

pytest.importorskip("torchvision")
pytest.importorskip("sklearn")

from iif.errors import IIFError  # noqa: E402

QUIET = lambda s: None  # noqa: E731


def _tiny(seed=0):
    from iif.detection.models import build_detector

    torch.manual_seed(seed)
    return build_detector("fasterrcnn_r10_fpn", 3, min_size=64, max_size=64, fpn_channels=16, representation_size=32,
                          returned_layers=(2, 3, 4), anchor_sizes=((16,), (32,), (64,), (128,)),
                          box_batch_size_per_image=32)


def _images(n, seed):
    g = torch.Generator().manual_seed(seed)
    ds = []
    for i in range(n):
        img = torch.rand(3, 64, 64, generator=g) * 0.2
        x0 = 4 + 9 * i
        img[:, 10:30, x0:x0 + 20] = 0.9
        img[:, 40:60, 30:50] = 0.6
        ds.append((img, {"boxes": torch.tensor([[x0, 10.0, x0 + 20, 30], [30, 40, 50, 60]]),
                         "labels": torch.tensor([1 + i % 3, 1 + (i + 1) % 3]), "image_id": 100 + i}))
    return ds


def _fasa_model(seed=0):
    from iif.detection.fasa import use_fasa

    model = _tiny(seed)
    use_fasa(model, [2, 4, 8])  # p = (1/n) / sum(1/n): 4/7, 2/7, 1/7, all below 1 so both factors act
    return model


# ------------------------------------------------------------------------------------------------ grouping
def test_grouping_finds_two_obvious_clusters_and_keeps_unseen_classes_alone():
    from iif.detection.fasa import group_classes

    rng = np.random.default_rng(0)
    a = np.array([0.0, 0.0, 0.0]) + 0.01 * rng.normal(size=(3, 3))  # classes 0, 2, 5 near the origin
    b = np.array([10.0, -10.0, 5.0]) + 0.01 * rng.normal(size=(3, 3))  # classes 1, 3, 6 far away
    mean = np.zeros((8, 3))
    mean[[0, 2, 5]], mean[[1, 3, 6]] = a, b
    seen = np.ones(8, bool)
    seen[[4, 7]] = False
    mean[4] = a[0]  # an unseen class at a cluster's place still stays alone: it has no statistics
    assert group_classes(mean, seen) == [[0, 2, 5], [1, 3, 6], [4], [7]]
    # Deterministic: the same groups again (random_state fixed).
    assert group_classes(torch.tensor(mean), torch.tensor(seen)) == [[0, 2, 5], [1, 3, 6], [4], [7]]
    # Fewer than two seen classes: every class alone (the per-class rule).
    assert group_classes(mean, np.eye(8, dtype=bool)[3]) == [[c] for c in range(8)]
    with pytest.raises(IIFError, match=r"\(C, D\) means"):
        group_classes(mean, seen[:5])


def test_grouping_uses_the_negative_squared_distance_as_similarity():
    """Three collinear points 0, 1, 10: with similarities -d^2 (AP's reading) {0, 1} join and 10 is apart; the
    positive squared distances (the authors' call) would make the far pair the most similar."""
    from sklearn.cluster import AffinityPropagation

    from iif.detection.fasa import group_classes

    mean = np.array([[0.0], [1.0], [10.0], [11.0]])
    got = group_classes(mean, np.ones(4, bool))
    assert got == [[0, 1], [2, 3]]
    d2 = (mean - mean.T) ** 2
    want = AffinityPropagation(affinity="precomputed", random_state=1).fit(-d2).labels_
    assert [sorted(np.flatnonzero(want == k).tolist()) for k in np.unique(want)] == got


# ----------------------------------------------------------------------------------- per-class val loss
def _by_hand(model, ds, seed, batch_size):
    """The per-class CE sums through torchvision's pieces called one by one (train-mode transform, RPN with the
    targets, RoI sampling, box head, predictor), the same RNG order as the model's forward."""
    from torchvision.models.detection.roi_heads import RoIHeads

    rh = model.roi_heads
    sums, counts = np.zeros(3), np.zeros(3)
    model.train()
    for m in model.modules():  # BatchNorm on its running statistics, as in evaluation
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    torch.manual_seed(seed)
    with torch.no_grad():
        for s in range(0, len(ds), batch_size):
            imgs = [ds[i][0] for i in range(s, min(s + batch_size, len(ds)))]
            tg = [{k: ds[i][1][k] for k in ("boxes", "labels")} for i in range(s, min(s + batch_size, len(ds)))]
            images, tg = model.transform(imgs, tg)
            feats = model.backbone(images.tensors)
            proposals, _ = model.rpn(images, feats, tg)
            props, _, labels, _ = RoIHeads.select_training_samples(rh, proposals, tg)
            x = rh.box_head(rh.box_roi_pool(feats, props, images.image_sizes))
            z = rh.box_predictor(x)[0].double().numpy()
            y = torch.cat(labels).numpy()
            logp = z - z.max(1, keepdims=True)
            logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
            for yi, lp in zip(y, logp):
                if yi > 0:
                    sums[yi - 1] -= lp[yi]
                    counts[yi - 1] += 1
    return sums, counts


def test_class_val_losses_match_the_pieces_by_hand_and_touch_nothing():
    from iif.detection.fasa import class_val_losses

    model = _fasa_model()
    state = model.roi_heads.fasa
    state.update(torch.randn(4, 32), torch.tensor([0, 1, 1, 2]))  # some statistics to keep
    before = {k: getattr(state, k).clone() for k in state.accumulators}
    ds = _images(3, 5)
    model.eval()
    torch.manual_seed(123)
    sums, counts = class_val_losses(model, ds, batch_size=2, seed=7)
    after_rng = torch.rand(3)  # the caller's stream is where it was
    torch.manual_seed(123)
    assert torch.equal(after_rng, torch.rand(3))
    assert not model.training and not model.roi_heads.training  # the modes are restored
    assert "forward" in model.roi_heads.__dict__  # FASA's training forward is back
    for k, v in before.items():
        torch.testing.assert_close(getattr(state, k), v, rtol=0, atol=0, equal_nan=True)  # nothing updated
    want_sums, want_counts = _by_hand(model, ds, seed=7, batch_size=2)
    assert want_counts.sum() > 0
    np.testing.assert_allclose(counts.numpy(), want_counts)
    np.testing.assert_allclose(sums.numpy(), want_sums, rtol=1e-5)
    # The same seed draws the same RoIs: the result repeats exactly.
    again = class_val_losses(model, ds, batch_size=2, seed=7)
    assert torch.equal(again[0], sums) and torch.equal(again[1], counts)


# ---------------------------------------------------------------------------------------------- det-train
KW = dict(batch_size=2, lr=0.02, warmup_iters=1, milestones=(), clip_grad_norm=5.0, device="cpu", seed=3)


def _rule(p, before, now, groups):
    """Sec. 3.3 by hand: x1.1 for a group whose summed loss fell, x0.9 for a rise, clipped to [0, 1]."""
    p = np.array(p, dtype=np.float64)
    for g in groups:
        d = sum(now[c] for c in g) - sum(before[c] for c in g)
        p[g] = np.clip(p[g] * (1.1 if d < 0 else 0.9 if d > 0 else 1.0), 0, 1)
    return p


def test_train_detector_adapts_the_probabilities_each_epoch_by_the_rule(tmp_path):
    from iif.detection.engine import train_detector
    from iif.detection.fasa import FASAAdaptation

    model = _fasa_model()
    p0 = model.roi_heads.fasa.prob.numpy().copy()
    np.testing.assert_allclose(p0, np.array([1 / 2, 1 / 4, 1 / 8]) / (7 / 8))
    hook = FASAAdaptation(_images(3, 5), batch_size=2, seed=7, log=QUIET)
    res = train_detector(model, _images(4, 1), epochs=3, out_dir=tmp_path, log=QUIET, epoch_end=hook, **KW)
    recs = hook.records
    assert [r["epoch"] for r in recs] == [1, 2, 3]
    for r in recs:  # the loss is the per-class sum over the total foreground count
        np.testing.assert_allclose(r["loss"], np.array(r["sums"]) / sum(r["counts"]), rtol=1e-12)
        assert sorted(c for g in r["groups"] for c in g) == [0, 1, 2]
    np.testing.assert_allclose(recs[0]["prob"], p0)  # the first epoch only records its loss
    p = p0
    for prev, r in zip(recs, recs[1:]):
        p = _rule(p, prev["loss"], r["loss"], r["groups"])
        np.testing.assert_allclose(r["prob"], p, rtol=1e-12)
    assert not np.allclose(p, p0)  # it did move
    np.testing.assert_allclose(model.roi_heads.fasa.prob.numpy(), p, rtol=1e-12)
    np.testing.assert_allclose(model.roi_heads.fasa.last_loss.numpy(), recs[-1]["loss"])
    rows = res["history"]
    assert [row["fasa_groups"] for row in rows] == [len(r["groups"]) for r in recs]
    np.testing.assert_allclose([row["fasa_val_loss"] for row in rows], [sum(r["loss"]) for r in recs])
    np.testing.assert_allclose(rows[-1]["fasa_p_mean"], p.mean())


def test_resume_with_the_adaptation_is_bit_identical(tmp_path):
    from iif.detection.engine import train_detector
    from iif.detection.fasa import FASAAdaptation

    val = _images(3, 5)
    full = _fasa_model()
    hook_full = FASAAdaptation(val, batch_size=2, seed=7, log=QUIET)
    train_detector(full, _images(4, 1), epochs=3, out_dir=tmp_path / "a", log=QUIET, epoch_end=hook_full, **KW)
    part = FASAAdaptation(val, batch_size=2, seed=7, log=QUIET)
    train_detector(_fasa_model(), _images(4, 1), epochs=3, out_dir=tmp_path / "b", stop_after_epoch=2, log=QUIET,
                   epoch_end=part, **KW)
    saved = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert torch.equal(saved["margin_state"]["roi_heads.fasa.last_loss"],
                       torch.tensor(hook_full.records[1]["loss"], dtype=torch.float64))
    resumed = _fasa_model(seed=99)
    hook_res = FASAAdaptation(val, batch_size=2, seed=7, log=QUIET)
    res = train_detector(resumed, _images(4, 1), epochs=3, out_dir=tmp_path / "b", resume=True, log=QUIET,
                         epoch_end=hook_res, **KW)
    assert [r["epoch"] for r in hook_res.records] == [3]
    assert hook_res.records[0] == hook_full.records[2]  # the third epoch's loss, groups and p, exactly
    a, b = full.state_dict(), resumed.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    for name in full.roi_heads.fasa.accumulators:
        assert torch.equal(getattr(full.roi_heads.fasa, name), getattr(resumed.roi_heads.fasa, name)), name
    assert [row["fasa_val_loss"] for row in res["history"]] == [sum(r["loss"]) for r in hook_full.records]


# ------------------------------------------------------------------------------------------- config, refusals
def test_config_key_defaults_on_switches_off_and_refuses_bad_input():
    from iif.detection.config import detection_config_hash, load_detection_config
    from iif.detection.fasa import FASAAdaptation
    from iif.detection.runs import _fasa_adaptation
    from iif.runtime.distributed import DistInfo

    base = ["model.arch=fasterrcnn_r10_fpn", "model.fasa=true"]
    cfg = load_detection_config(None, base)
    assert cfg.model.fasa_adapt is True  # the paper adapts
    hook = _fasa_adaptation(cfg, _images(1, 0), DistInfo(), QUIET)
    assert isinstance(hook, FASAAdaptation) and hook.seed == cfg.runtime.seed
    off = load_detection_config(None, base + ["model.fasa_adapt=false"])
    assert _fasa_adaptation(off, _images(1, 0), DistInfo(), QUIET) is None
    assert _fasa_adaptation(load_detection_config(None, ["model.arch=fasterrcnn_r10_fpn"]), None, DistInfo(),
                            QUIET) is None  # no FASA: nothing to adapt, no val set needed
    # A run from before the key existed (default) keeps its fingerprint; turning it off changes it.
    assert detection_config_hash(cfg) == detection_config_hash(load_detection_config(None, base + [
        "model.fasa_adapt=true"]))
    assert detection_config_hash(off) != detection_config_hash(cfg)
    with pytest.raises(IIFError, match="model.fasa_adapt' must be true or false") as e:
        load_detection_config(None, base + ["model.fasa_adapt=3"])
    assert "\n" not in str(e.value)
    for val in (None, []):
        with pytest.raises(IIFError, match="needs a validation set.*model.fasa_adapt=false") as e:
            _fasa_adaptation(cfg, val, DistInfo(), QUIET)
        assert "\n" not in str(e.value)
    with pytest.raises(IIFError, match="FASA switched on"):
        FASAAdaptation(_images(1, 0), log=QUIET)(_tiny(), 0)


@pytest.mark.filterwarnings("ignore:.*classes have no training images:UserWarning")
def test_det_train_adapts_on_its_val_set(detection_benchmark, tmp_path):
    """`iif det-train` with model.fasa=true on a Mask R-CNN (its mask branch skipped in the val pass): the
    history rows carry the adaptation, and last.pt's p is the rule applied to the saved loss; with
    model.fasa_adapt=false p stays the inverse frequency."""
    import json

    from iif.cli import main

    bench = detection_benchmark[0]
    tiny = ["data.max_train_images=8", "data.max_val_images=4", "model.arch=maskrcnn_r10_fpn", "model.min_size=64",
            "model.max_size=64", "model.fpn_channels=16", "model.representation_size=32", "model.mask_layers=[8]",
            "model.box_detections_per_img=20", "schedule.batch_size=4", "schedule.warmup_iters=1",
            "schedule.milestones=[]", "eval.batch_size=4", "eval.masks=false", "runtime.threads=1", "model.fasa=true",
            "schedule.epochs=2"]
    out = tmp_path / "on"
    assert main(["det-train", "det_bench_softmax", f"data.root={bench}", *tiny, "--out", str(out), "--quiet"]) == 0
    rows = json.loads((out / "history.json").read_text())
    assert [r["epoch"] for r in rows] == [1, 2] and all(r["fasa_groups"] >= 1 for r in rows)
    assert all(np.isfinite(r["fasa_val_loss"]) and r["fasa_val_loss"] > 0 for r in rows)
    state = torch.load(out / "last.pt", weights_only=True)["margin_state"]
    assert not bool(torch.isnan(state["roi_heads.fasa.last_loss"]).any())
    off = tmp_path / "off"
    assert main(["det-train", "det_bench_softmax", f"data.root={bench}", *tiny, "model.fasa_adapt=false",
                 "--out", str(off), "--quiet"]) == 0
    state_off = torch.load(off / "last.pt", weights_only=True)["margin_state"]
    assert "fasa_val_loss" not in json.loads((off / "history.json").read_text())[0]
    assert bool(torch.isnan(state_off["roi_heads.fasa.last_loss"]).all())
    p_start = state_off["roi_heads.fasa.prob"]  # never adapted: the inverse frequency of the start
    assert abs(rows[-1]["fasa_p_mean"] - float(state["roi_heads.fasa.prob"].mean())) < 1e-12
    assert not torch.equal(state["roi_heads.fasa.prob"], p_start)  # two epochs: one adaptation step
    ratio = state["roi_heads.fasa.prob"][p_start > 0] / p_start[p_start > 0]
    assert all(any(abs(float(r) - f) < 1e-9 for f in (0.9, 1.0, 1.1)) for r in ratio)  # below the clip at 1


def test_cascade_val_loss_is_stage_one():
    """On a cascade the val loss is stage 1's: its sampled labels and its classifier."""
    from iif.detection.fasa import class_val_losses, use_fasa
    from iif.detection.models import build_detector

    torch.manual_seed(0)
    model = build_detector("cascade_maskrcnn_r10_fpn", 3, masks=False, min_size=64, max_size=64, fpn_channels=16,
                           representation_size=32, box_batch_size_per_image=32)
    use_fasa(model, [2, 4, 8])
    rh = model.roi_heads
    got = {}
    inner = rh.sample

    def spy(t, *a):
        out = inner(t, *a)
        got.setdefault(t, torch.cat(list(out[1])))
        return out

    rh.__dict__["sample"] = spy
    logits = []
    h = rh.box_predictor.register_forward_hook(lambda m, i, o: logits.append(o[0]))
    sums, counts = class_val_losses(model, _images(1, 5), batch_size=1, seed=7)
    h.remove()
    y = got[0]
    ce = torch.nn.functional.cross_entropy(logits[0].float(), y, reduction="none").double()
    want = torch.zeros(3, dtype=torch.float64).index_add_(0, y[y > 0] - 1, ce[y > 0])
    assert counts.sum() == (y > 0).sum() > 0
    torch.testing.assert_close(sums, want)


def _shake(model):
    """The same change of the classifier on every rank (a stand-in for an epoch of training)."""
    g = torch.Generator().manual_seed(11)
    w = model.roi_heads.box_predictor.cls_score.weight
    with torch.no_grad():
        w.add_(0.5 * torch.randn(w.shape, generator=g))


def _set_stats(model):
    state = model.roi_heads.fasa
    state.mean.copy_(torch.tensor([[0.0] * 32, [0.1] * 32, [5.0] * 32], dtype=torch.float64))
    state.seen.fill_(True)


def _ddp_adapt(rank: int, queue) -> None:
    """Two adaptation steps on rank ``rank`` of a gloo group, each rank on its strided share of the val images."""
    import torch.distributed as dist

    from iif.detection.fasa import FASAAdaptation
    from iif.runtime.distributed import join_process_group

    join_process_group("cpu")
    model = _fasa_model()
    _set_stats(model)
    hook = FASAAdaptation(_images(3, 5), batch_size=1, seed=7, log=QUIET)
    hook(model, 0)
    _shake(model)
    hook(model, 1)
    queue.put((rank, hook.records, model.roi_heads.fasa.prob.numpy().copy()))
    dist.destroy_process_group()


def test_ddp_ranks_adapt_identically_from_the_all_reduced_sums():
    from torch.utils.data import Subset

    from test_runtime_shared import _fork_two_ranks

    from iif.detection.fasa import class_val_losses

    (_, rec0, p0), (_, rec1, p1) = _fork_two_ranks(_ddp_adapt)
    assert rec0 == rec1 and np.array_equal(p0, p1)  # every rank: the same loss, groups and p
    val = _images(3, 5)
    model = _fasa_model()
    _set_stats(model)
    want = []
    for step in range(2):  # by hand: rank 0 has images 0 and 2, rank 1 image 1, each its own seeded stream
        parts = [class_val_losses(model, Subset(val, idx), batch_size=1, seed=7) for idx in ([0, 2], [1])]
        want.append((parts[0][0] + parts[1][0], parts[0][1] + parts[1][1]))
        _shake(model)
    for r, (sums, counts) in zip(rec0, want):
        np.testing.assert_allclose(r["sums"], sums.numpy(), rtol=1e-12)
        np.testing.assert_allclose(r["counts"], counts.numpy())
    assert rec0[0]["groups"] == [[0, 1], [2]]
    np.testing.assert_allclose(p0, _rule(rec0[0]["prob"], rec0[0]["loss"], rec0[1]["loss"], rec0[1]["groups"]),
                               rtol=1e-12)
    assert not np.allclose(p0, rec0[0]["prob"])


def test_val_pass_leaves_the_margin_accumulators_alone():
    """Seesaw counts every training forward's foreground labels (``cum_samples``, a buffer); the val pass must not."""
    from iif.detection.fasa import class_val_losses
    from iif.detection.margins import use_margin

    model = _fasa_model()
    use_margin(model, "seesaw", [2, 4, 8], when="train")
    model.train()
    model(*[list(x) for x in zip(*_images(2, 1))])  # one training forward: Seesaw has counts now
    cum = model.roi_heads.box_predictor.adjuster.cum_samples
    before = cum.clone()
    assert float(before.sum()) > 0
    sums, counts = class_val_losses(model, _images(2, 5), batch_size=2, seed=7)
    assert counts.sum() > 0 and torch.isfinite(sums).all()
    assert torch.equal(cum, before)
