"""The training loop end to end on digits-LT (seconds on CPU): outputs, raw vs adjusted metrics checked by an
independent route, the LR schedule by hand, the resident batch path against the per-sample path, AMP,
mixup, the CLI, and the bad inputs (NaN loss, zero-image class, list file with missing images)."""

import json
import math
import shutil

import numpy as np
import pytest
import torch

from iif import iif_weights
from iif.cli import main as cli_main
from iif.data import DatasetSplits, TensorImageDataset
from iif.errors import IIFError
from iif.frequency import ClassFrequency
from iif.metrics import evaluate_logits
from iif.train import extract_features, fit, load_config
from iif.data.batches import ResidentBatches, batch_recipe
from iif.runtime import WarmupSchedule
from iif.train.engine import build_splits

TINY = ["runtime.progress=false", "runtime.tensorboard=false", "schedule.epochs=2", "eval.every=1",
        "model.backbone_kwargs.width=4"]


@pytest.fixture(scope="module")
def splits():
    return build_splits(load_config("digits_lt_e2e"))


def test_e2e_iif_run_writes_outputs_and_scores_w_times_z(tmp_path, splits):
    cfg = load_config("digits_lt_e2e", TINY)
    res = fit(cfg, out_dir=tmp_path, splits=splits)
    assert {"last.pt", "metrics.csv", "config.yaml", "final_metrics.json"} <= {p.name for p in tmp_path.iterdir()}
    rows = (tmp_path / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 3 and rows[0].startswith("stage,epoch")
    assert [h["epoch"] for h in res.history] == [1, 2]
    # Independent route: features/logits of the test set, then IIF smooth weights times z (Eq. 13).
    f, z, y = extract_features(res.model, splits.test, batch_size=64)
    counts = splits.freq.image_counts
    w = iif_weights(counts, "smooth")
    assert res.final_metrics["raw"]["top1"] == pytest.approx(evaluate_logits(z, y, counts)["top1"])
    assert res.final_metrics["adjusted"]["top1"] == pytest.approx(evaluate_logits(z * w, y, counts)["top1"])
    assert res.final_metrics["adjusted"]["few"] == pytest.approx(evaluate_logits(z * w, y, counts)["few"])
    saved = json.loads((tmp_path / "final_metrics.json").read_text())
    assert saved["adjusted"]["top1"] == pytest.approx(res.final_metrics["adjusted"]["top1"])
    # softmax CE has no decision rule of its own: only raw metrics
    ce = fit(load_config("digits_lt_e2e", TINY + ["loss.name=ce", "schedule.epochs=1"]), splits=splits)
    assert set(ce.final_metrics) == {"raw"}


def test_warmup_multistep_and_cosine_factors_by_hand():
    s = WarmupSchedule(iters_per_epoch=10, epochs=4, name="multistep", milestones=[2, 3], gamma=0.1,
                       warmup_epochs=1, warmup_start_factor=0.1)
    assert [s(0), s(5), s(10), s(19), s(20), s(30)] == pytest.approx([0.1, 0.55, 1.0, 1.0, 0.1, 0.01])
    c = WarmupSchedule(iters_per_epoch=10, epochs=4, name="cosine", warmup_epochs=1, warmup_start_factor=0.0)
    # after 10 warm-up steps, 30 cosine steps: half way at step 25
    assert [c(10), c(25), c(40)] == pytest.approx([1.0, 0.5, 0.0])
    assert c(15) == pytest.approx(0.5 * (1 + math.cos(math.pi * 5 / 30)))
    with pytest.raises(IIFError, match="schedule"):
        WarmupSchedule(10, 4, name="linear")


def test_resident_eval_batches_equal_the_per_sample_transform(splits):
    ds = splits.test
    recipe = batch_recipe(ds)
    assert recipe is not None and not recipe["crop"] and not recipe["flip"]
    batches = list(ResidentBatches(ds, recipe, None, 50, torch.device("cpu"), train=False))
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    ref = torch.stack([ds[i][0] for i in range(len(ds))])
    assert torch.allclose(x, ref, atol=1e-6) and torch.equal(y, torch.as_tensor(ds.targets))


def test_training_recipe_detection(splits):
    basic = build_splits(load_config("digits_lt_e2e", ["data.augment=basic"])).train
    r = batch_recipe(basic)
    assert r["crop"] and r["padding"] == 1 and not r["flip"]  # digits: 1-pixel pad, no flips
    auto = build_splits(load_config("digits_lt_e2e", ["data.augment=autoaugment"])).train
    assert batch_recipe(auto) is None  # AutoAugment is per-sample: DataLoader path


def test_bf16_amp_mixup_label_smoothing_and_dataloader_path_run(splits, monkeypatch):
    """Each option takes effect in the loop: the forward runs under bf16 autocast (logits come out
    bfloat16), mixup feeds soft targets (rows summing to 1, not one-hot), and every step's loss equals
    the label-smoothed soft-target IIF cross-entropy computed by hand (which differs from the unsmoothed)."""
    from iif.train import engine

    seen = []
    real = engine.train_one_epoch

    def spy(forward, criterion, *args, **kwargs):
        def spy_forward(x):
            out = forward(x)
            seen.append({"dtype": out.dtype})
            return out

        def spy_criterion(logits, target):
            loss = criterion(logits, target)
            seen[-1].update(z=logits.detach().double(), t=target.detach().double(), loss=float(loss.detach()),
                            w=criterion.current_weights(logits.shape[1]).double())
            return loss

        return real(spy_forward, spy_criterion, *args, **kwargs)

    monkeypatch.setattr(engine, "train_one_epoch", spy)
    cfg = load_config("digits_lt_e2e", TINY + ["schedule.epochs=1", "runtime.amp=bf16", "data.mixup_alpha=0.2",
                                               "loss.label_smoothing=0.1", "data.resident=false"])
    res = fit(cfg, splits=splits)
    assert math.isfinite(res.history[-1]["train_loss"]) and 0 <= res.final_metrics["adjusted"]["top1"] <= 100
    assert seen and {s["dtype"] for s in seen} == {torch.bfloat16}
    mixed = 0
    for s in seen:
        z, t, w = s["z"], s["t"], s["w"]
        assert t.shape == z.shape, "mixup feeds (N, C) soft targets, not class indices"
        assert torch.allclose(t.sum(1), torch.ones(len(t), dtype=torch.float64))
        mixed += int((t.max(1).values < 0.999).any())
        logp = torch.log_softmax(w * z, dim=1)
        smoothed = 0.9 * t + 0.1 / z.shape[1]
        assert s["loss"] == pytest.approx(float(-(smoothed * logp).sum(1).mean()), rel=1e-5)
        assert abs(s["loss"] - float(-(t * logp).sum(1).mean())) > 1e-3
    # Beta(0.2, 0.2) puts about a quarter of its mass within 0.001 of 0 or 1: some batches stay one-hot
    assert mixed >= 1, f"no mixed targets in {len(seen)} batches"


def test_nan_loss_stops_with_epoch_and_step_and_saves_a_checkpoint(tmp_path, splits):
    cfg = load_config("digits_lt_e2e", TINY + ["optim.lr=1e30", "loss.name=ce"])
    with pytest.raises(IIFError, match=r"at epoch \d+, step \d+") as exc:
        fit(cfg, out_dir=tmp_path, splits=splits)
    assert "nan.pt" in str(exc.value)
    saved = torch.load(tmp_path / "nan.pt", weights_only=True)
    assert saved["nan_step"] >= 0 and "model" in saved


def test_zero_image_class_is_refused(splits):
    tr = splits.train
    keep = np.flatnonzero(np.asarray(tr.targets) != 9)
    train = tr.subset(keep)
    bad = DatasetSplits(train, None, splits.test, ClassFrequency.from_labels(train.targets, num_classes=10), 10, 1, 8,
                        splits.class_names)
    with pytest.raises(IIFError, match=r"no images for 1 class.*9"):
        fit(load_config("digits_lt_e2e", TINY), splits=bad)


def test_list_file_with_missing_images_fails_before_training(tmp_path):
    from PIL import Image

    (tmp_path / "img").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "img" / "a.jpg")
    (tmp_path / "ImageNet_LT_train.txt").write_text("img/a.jpg 0\nimg/missing.jpg 1\n")
    (tmp_path / "ImageNet_LT_val.txt").write_text("img/a.jpg 0\n")
    (tmp_path / "ImageNet_LT_test.txt").write_text("img/a.jpg 0\n")
    cfg = load_config("imagenet_lt_r50_e2e", [f"data.root={tmp_path}", "data.options.num_classes=2"] + TINY[:2])
    with pytest.raises(IIFError, match="missing.jpg"):
        fit(cfg)


def test_cli_train_then_eval_with_adjusters(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli_main(["train", "digits_lt_e2e", "schedule.epochs=1", "model.backbone_kwargs.width=4",
                     "runtime.tensorboard=false", "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    assert "adjusted" in capsys.readouterr().out
    assert cli_main(["eval", str(out / "last.pt"), "--adjust", "iif:smooth", "la:1.0"]) == 0
    table = capsys.readouterr().out
    assert "la:1.0" in table and "iif:smooth" in table
    metrics = json.loads((out / "eval_test.json").read_text())
    final = json.loads((out / "final_metrics.json").read_text())
    assert set(metrics) == {"raw", "adjusted", "iif:smooth", "la:1.0"}
    # the rebuilt model + data give the numbers training reported; IIF loss rule == post-hoc iif:smooth
    assert metrics["raw"]["top1"] == pytest.approx(final["raw"]["top1"])
    assert metrics["adjusted"]["top1"] == pytest.approx(metrics["iif:smooth"]["top1"])
    assert cli_main(["eval", str(out / "last.pt"), "--adjust", "bogus:1"]) == 2


# ----------------------------------------------------------------------------------------------- model selection


class ScriptedValidation:
    """Wraps the engine's ``evaluate``: test calls go through unchanged (and are counted, with the weights
    they saw); val calls are scored for real, then their selection metric is replaced by the next scripted
    score, so the best epoch is known in advance."""

    def __init__(self, real, splits, scores):
        self.real, self.splits, self.scores = real, splits, list(scores)
        self.val_weights, self.test_weights = [], []

    def __call__(self, model, dataset, *args, **kw):
        out = self.real(model, dataset, *args, **kw)
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if dataset is self.splits.val:
            self.val_weights.append(state)
            score = self.scores.pop(0)
            for m in out.values():
                m["class_avg"] = score
        else:
            self.test_weights.append(state)
        return out


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_best_checkpoint_is_the_best_val_epoch_and_test_is_scored_once(tmp_path, splits, monkeypatch):
    from iif.train import engine, evaluate

    script = ScriptedValidation(evaluate, splits, [40.0, 70.0, 55.0])
    monkeypatch.setattr(engine, "evaluate", script)
    res = fit(load_config("digits_lt_e2e", TINY + ["schedule.epochs=3"]), out_dir=tmp_path, splits=splits)
    assert len(script.val_weights) == 3 and len(script.test_weights) == 1  # val every epoch, test once
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert best["epoch"] == 2 and last["epoch"] == 3
    assert best["best"] == {"epoch": 2, "score": 70.0, "metric": "class_avg", "logits": "adjusted"}
    assert _same_weights(best["model"], script.val_weights[1])  # the weights validated at epoch 2
    assert _same_weights(script.test_weights[0], script.val_weights[1])  # ... are the ones scored on test
    assert not _same_weights(best["model"], last["model"])
    sel = res.selection
    assert (sel["select"], sel["checkpoint"], sel["epoch"], sel["val_score"], sel["split"]) == (
        "best", "best.pt", 2, 70.0, "test")
    assert res.checkpoint == tmp_path / "best.pt"
    saved = json.loads((tmp_path / "final_metrics.json").read_text())
    assert saved["raw"]["selection"]["epoch"] == 2 and saved["adjusted"]["selection"]["checkpoint"] == "best.pt"
    assert [h.get("val_score") for h in res.history] == [40.0, 70.0, 55.0]
    # iif eval of best.pt rebuilds the model and data and gives the numbers training reported
    monkeypatch.undo()
    assert cli_main(["eval", str(tmp_path / "best.pt")]) == 0
    again = json.loads((tmp_path / "eval_test.json").read_text())
    assert again["raw"]["top1"] == pytest.approx(saved["raw"]["top1"])
    assert again["adjusted"]["class_avg"] == pytest.approx(saved["adjusted"]["class_avg"])


def test_select_last_and_no_val_split_use_the_final_epoch(tmp_path, splits, monkeypatch):
    from iif.train import engine, evaluate

    script = ScriptedValidation(evaluate, splits, [70.0, 40.0])
    monkeypatch.setattr(engine, "evaluate", script)
    res = fit(load_config("digits_lt_e2e", TINY + ["eval.select=last"]), out_dir=tmp_path / "last", splits=splits)
    assert (res.selection["checkpoint"], res.selection["epoch"]) == ("last.pt", 2)
    assert _same_weights(script.test_weights[0], script.val_weights[1])  # the final weights, not epoch 1's
    no_val = DatasetSplits(splits.train, None, splits.test, splits.freq, splits.num_classes, splits.in_channels,
                           splits.image_size, splits.class_names)
    res = fit(load_config("digits_lt_e2e", TINY), out_dir=tmp_path / "noval", splits=no_val)
    assert res.selection["select"] == "last" and "no val" in res.selection["selected_on"]
    assert not (tmp_path / "noval" / "best.pt").exists()


def test_resume_keeps_the_best_checkpoint(tmp_path, splits, monkeypatch):
    from iif.train import engine, evaluate

    cfg = TINY + ["schedule.epochs=3"]
    monkeypatch.setattr(engine, "evaluate", ScriptedValidation(evaluate, splits, [40.0, 70.0, 55.0]))
    full = fit(load_config("digits_lt_e2e", cfg), out_dir=tmp_path / "full", splits=splits)
    monkeypatch.setattr(engine, "evaluate", ScriptedValidation(evaluate, splits, [40.0, 70.0]))
    part = fit(load_config("digits_lt_e2e", cfg + ["runtime.stop_after_epoch=2"]), out_dir=tmp_path / "cut",
               splits=splits)
    assert not part.finished and part.selection is None
    # a copy whose best.pt is lost: resuming it is refused (last.pt records a best epoch it cannot restore)
    shutil.copytree(tmp_path / "cut", tmp_path / "lost")
    (tmp_path / "lost" / "best.pt").unlink()
    with pytest.raises(IIFError, match="best validation epoch 2.*best.pt is missing"):
        fit(load_config("digits_lt_e2e", cfg), out_dir=tmp_path / "lost", resume=True, splits=splits)
    monkeypatch.setattr(engine, "evaluate", ScriptedValidation(evaluate, splits, [55.0]))  # epoch 3 only
    resumed = fit(load_config("digits_lt_e2e", cfg), out_dir=tmp_path / "cut", resume=True, splits=splits)
    assert resumed.selection == full.selection and resumed.selection["epoch"] == 2
    a = torch.load(tmp_path / "full" / "best.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "best.pt", weights_only=True)
    assert _same_weights(a["model"], b["model"]) and a["best"] == b["best"]
    assert _same_weights(full.model.state_dict(), resumed.model.state_dict())  # both hold the epoch-2 weights
    assert resumed.final_metrics["raw"]["top1"] == full.final_metrics["raw"]["top1"]


# ----------------------------------------------------------------------------------------------- progress


def test_progress_is_a_bar_on_a_terminal_and_silent_otherwise():
    import io

    from iif.train.epoch import progress_bar

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    log_file = io.StringIO()
    bar = progress_bar(range(5), True, "e2e 1/2", stream=log_file)
    assert list(bar) == list(range(5)) and log_file.getvalue() == ""
    bar.set_postfix(loss="1.0")  # accepted, prints nothing
    tty = Terminal()
    assert list(progress_bar(range(5), True, "e2e 1/2", stream=tty)) == list(range(5))
    assert "e2e 1/2" in tty.getvalue()
    quiet = Terminal()
    assert list(progress_bar(range(5), False, "x", stream=quiet)) == list(range(5)) and quiet.getvalue() == ""


def test_training_logs_one_line_per_epoch_when_stderr_is_not_a_terminal(splits, capsys, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="iif.train"):
        fit(load_config("digits_lt_e2e", TINY + ["runtime.progress=true", "schedule.epochs=3"]), splits=splits)
    assert "\r" not in capsys.readouterr().err  # no bar redraws in a captured (non-tty) stderr
    lines = [r.getMessage() for r in caplog.records if " epoch " in r.getMessage() and "loss" in r.getMessage()]
    assert [ln.split()[2] for ln in lines] == ["1/3", "2/3", "3/3"]
    assert all("val class_avg" in ln for ln in lines)


def test_stage_variant_is_a_typed_field_that_reaches_the_loss(splits):
    from iif.train import StageSpec
    from iif.train.build import build_criterion

    counts = splits.freq.image_counts
    spec = StageSpec.main(load_config("digits_lt_e2e", ["loss.variant=raw"]))
    assert spec.variant == "raw" and "variant" not in spec.loss_kwargs
    from iif.losses import build_loss

    # the same loss built directly with variant="raw" (and the config's other loss options, e.g. a norm)
    direct = build_loss("iif", splits.freq, variant="raw", **spec.loss_kwargs).iif_weights
    assert torch.equal(build_criterion(spec, splits.freq).iif_weights, direct)
    smooth = build_criterion(StageSpec.main(load_config("digits_lt_e2e")), splits.freq).iif_weights
    assert not torch.allclose(smooth, direct)  # the variant changed the weights
    raw = torch.as_tensor(iif_weights(counts, "raw"), dtype=torch.float64)
    assert torch.allclose(direct.double() / raw, (direct.double() / raw)[0].expand(len(raw)))  # raw up to a scale
    # loss.kwargs.variant wins over loss.variant (it is the more specific setting)
    assert StageSpec.main(load_config("digits_lt_e2e", ["loss.kwargs.variant=base10"])).variant == "base10"
    assert StageSpec.main(load_config("digits_lt_e2e", ["loss.name=ce"])).variant is None
    stage2 = StageSpec.decoupled(load_config("digits_lt_decoupled", ["decoupled.variant=gombit"]))
    assert (stage2.name, stage2.variant, stage2.frozen_backbone) == ("stage2", "gombit", True)


def test_posthoc_scores_the_selected_model_once_with_its_adjusters(tmp_path, splits, monkeypatch):
    from iif.train import engine, evaluate

    script = ScriptedValidation(evaluate, splits, [70.0, 40.0])
    monkeypatch.setattr(engine, "evaluate", script)
    res = fit(load_config("digits_lt_posthoc", TINY + ["posthoc.adjusters=[iif:smooth,la:1.0]"]), splits=splits)
    assert len(script.test_weights) == 1 and _same_weights(script.test_weights[0], script.val_weights[0])
    assert set(res.final_metrics) == {"raw", "iif:smooth", "la:1.0"}
    assert all(m["selection"]["epoch"] == 1 for m in res.final_metrics.values())
    # the adjusters were applied to the epoch-1 logits: an independent route gives the same numbers
    f, z, y = extract_features(res.model, splits.test, batch_size=64)
    w = iif_weights(splits.freq.image_counts, "smooth")
    assert res.final_metrics["iif:smooth"]["top1"] == pytest.approx(evaluate_logits(z * w, y, splits.freq.image_counts)["top1"])
