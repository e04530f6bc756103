"""iif.runtime: the one schedule against learning rates worked out by hand for both tasks' set-ups, the
autocast / non-finite stop / update / device pieces, and that classification and detection use the very same
objects (issue 16, "one runtime")."""

from __future__ import annotations

import math

import pytest
import torch

import iif.detection.engine as det_engine
import iif.runtime as runtime
import iif.train.build as train_build
import iif.train.engine as train_engine
import iif.train.epoch as train_epoch
import iif.train.inference as train_inference
from iif.errors import IIFError
from iif.runtime import (NonFiniteLoss, WarmupSchedule, autocast, check_finite_loss, optimizer_step,
                         resolve_device)


def test_both_tasks_import_the_same_objects():
    assert train_engine.WarmupSchedule is WarmupSchedule
    assert det_engine.WarmupSchedule is WarmupSchedule
    assert det_engine.DetectionSchedule == WarmupSchedule.detection  # the detection set-up of the one class
    assert train_epoch.autocast is det_engine.autocast is train_inference.autocast is runtime.step.autocast
    assert train_epoch.NonFiniteLoss is det_engine.NonFiniteLoss is train_engine.NonFiniteLoss is NonFiniteLoss
    assert train_epoch.check_finite_loss is det_engine.check_finite_loss is check_finite_loss
    assert train_epoch.optimizer_step is det_engine.optimizer_step is optimizer_step
    assert train_build.resolve_device is train_engine.resolve_device is det_engine.resolve_device is resolve_device
    import iif.train

    assert iif.train.resolve_device is resolve_device


def test_classification_schedule_by_hand():
    # digits/CIFAR set-up: warm-up in epochs replaces the decay while it lasts; 10 iterations per epoch.
    s = WarmupSchedule(10, 4, "multistep", [1, 3], 0.1, warmup_epochs=1.5, warmup_start_factor=0.2)
    assert s.warmup_iters == 15
    # in the warm-up: 0.2 + 0.8 * step / 15, the milestone at epoch 1 not yet applied (steps 10..14)
    assert s(0) == pytest.approx(0.2) and s(12) == pytest.approx(0.2 + 0.8 * 12 / 15)
    # after it: 0.1 ** (number of milestones reached)
    assert [s(15), s(29), s(30), s(39)] == pytest.approx([0.1, 0.1, 0.01, 0.01])
    c = WarmupSchedule(10, 4, "cosine", warmup_epochs=1, warmup_start_factor=0.0)
    assert [c(0), c(5), c(10), c(25), c(40), c(55)] == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0, 0.0])
    assert c(20) == pytest.approx(0.5 * (1 + math.cos(math.pi * 10 / 30)))
    k = WarmupSchedule(10, 4, "constant", warmup_epochs=0.2, warmup_start_factor=0.5)
    assert [k(0), k(1), k(2), k(39)] == pytest.approx([0.5, 0.75, 1.0, 1.0])
    with pytest.raises(IIFError, match="unknown schedule 'linear'"):
        WarmupSchedule(10, 4, "linear")


def test_detection_schedule_by_hand():
    # torchvision references: warm-up in iterations, multiplied with the step decay; 4 iterations per epoch,
    # a warm-up of 6 iterations reaching past the milestone at epoch 1.
    s = WarmupSchedule.detection(4, warmup_iters=6, milestones=(1, 2), gamma=0.5, warmup_factor=0.25)
    expected = [0.25, 0.375, 0.5, 0.625,               # epoch 0: 0.25 + 0.75 * step / 6
                0.75 * 0.5, 0.875 * 0.5, 0.5, 0.5,     # epoch 1: warm-up factor x 0.5, then 0.5
                0.25, 0.25]                            # epoch 2: 0.5 ** 2
    assert [s(i) for i in range(10)] == pytest.approx(expected)
    old = det_engine.DetectionSchedule(iters_per_epoch=10, warmup_iters=4, milestones=(2, 3), gamma=0.1,
                                       warmup_factor=0.2)
    assert [old(0), old(2), old(4), old(20), old(30)] == pytest.approx([0.2, 0.6, 1.0, 0.1, 0.01])
    none = WarmupSchedule.detection(5, warmup_iters=0)
    assert none(0) == none(99) == 1.0


def test_schedule_state_round_trips_through_lambda_lr():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupSchedule.detection(3, 2, (1,), 0.1, 0.5))
    lrs = []
    for _ in range(5):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == pytest.approx([0.75, 1.0, 0.1, 0.1, 0.1])  # 0.5 + 0.5 * 1 / 2, warm, then epoch 1: x 0.1
    state = sched.state_dict()
    opt2 = torch.optim.SGD([p], lr=1.0)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, WarmupSchedule.detection(3, 2, (1,), 0.1, 0.5))
    sched2.load_state_dict(state)
    assert sched2.lr_lambdas[0].__dict__ == sched.lr_lambdas[0].__dict__


def test_autocast_choices():
    cpu = torch.device("cpu")
    with autocast(cpu, "none"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with autocast(cpu, "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with pytest.raises(IIFError, match=r"runtime.amp=fp16 needs a CUDA device"):
        autocast(cpu, "fp16")
    with pytest.raises(IIFError, match=r"amp=fp16 needs a CUDA device"):
        autocast(cpu, "fp16", key="amp")
    with pytest.raises(IIFError, match=r"unknown runtime.amp 'fp8'"):
        autocast(cpu, "fp8")


def test_non_finite_stop_and_its_message():
    check_finite_loss(torch.tensor(1.5), 0, 0)
    with pytest.raises(NonFiniteLoss) as err:
        check_finite_loss(torch.tensor(float("inf")), 2, 4,
                          terms={"loss_a": torch.tensor(float("inf")), "loss_b": torch.tensor(0.25)})
    assert str(err.value) == "loss is inf at epoch 3, step 5"
    assert (err.value.epoch, err.value.step) == (2, 4) and err.value.terms == {"loss_a": math.inf, "loss_b": 0.25}
    # under DDP the flag is summed over ranks: a finite loss here still stops when another rank's is not
    with pytest.raises(NonFiniteLoss):
        check_finite_loss(torch.tensor(1.0), 0, 0, reduce=lambda t: t + 1.0)
    check_finite_loss(torch.tensor(1.0), 0, 0, reduce=lambda t: t)


def _toy(clip, scaler=None):
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    opt = torch.optim.SGD([w], lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 ** step)
    loss = (w * torch.tensor([1.0, 1.0])).sum() * 10  # gradient (10, 10), norm 10 * sqrt(2)
    optimizer_step(loss, opt, sched, scaler=scaler, clip_grad_norm=clip, params=[w] if clip else None)
    return w.detach(), opt.param_groups[0]["lr"]


def test_optimizer_step_clips_steps_and_advances_the_schedule():
    w, lr = _toy(None)
    assert w.tolist() == pytest.approx([3.0 - 0.1 * 10, 4.0 - 0.1 * 10]) and lr == pytest.approx(0.05)
    w, lr = _toy(2.0)  # the gradient scaled to norm 2: each entry 2 / sqrt(2)
    assert w.tolist() == pytest.approx([3.0 - 0.1 * math.sqrt(2), 4.0 - 0.1 * math.sqrt(2)], rel=1e-5)
    # with a gradient scaler (fp16's path; a CPU scaler here) the gradients are unscaled before clipping:
    # a power-of-two scale cancels exactly, so the weights equal the unscaled step's bit for bit
    scaled, lr_scaled = _toy(2.0, torch.amp.GradScaler("cpu", init_scale=2.0 ** 10))
    assert torch.equal(scaled, w) and lr_scaled == lr


def test_runtime_imports_nothing_of_iif_but_errors():
    """The layer ARCHITECTURE.md gives iif.runtime: under both tasks, above errors only."""
    import ast
    from pathlib import Path

    above = set()
    for path in Path(runtime.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level > 1:
                above.add((node.module or "").split(".")[0])
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            assert not any(n == "iif" or n.startswith("iif.") for n in names), path.name
    assert above == {"errors"}


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(IIFError, match="is not a device name; use auto, cpu, cuda or cuda:N"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(IIFError, match="no CUDA device is available; use --device cpu"):
            resolve_device("cuda")
