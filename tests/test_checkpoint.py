"""Checkpoint files: atomic writes, RNG round trip, readable errors, config-change refusal."""

import os
import random

import numpy as np
import pytest
import torch

from iif.errors import IIFError
from iif.train.checkpoint import (atomic_torch_save, capture_rng, check_resume_compatible, load_checkpoint, restore_rng,
                                  restore_training_state, save_checkpoint)


def test_save_load_roundtrip_leaves_no_temp_files(tmp_path):
    state = {"model": {"w": torch.arange(6.0).view(2, 3)}, "epoch": 3}
    path = save_checkpoint(tmp_path / "last.pt", state)
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["model"]["w"], state["model"]["w"]) and loaded["epoch"] == 3
    assert os.listdir(tmp_path) == ["last.pt"]
    # a run folder resolves to its last.pt
    assert load_checkpoint(tmp_path)["epoch"] == 3


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("boom")


def test_failed_write_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(2)}, "epoch": 1})
    with pytest.raises(RuntimeError):
        atomic_torch_save({"model": {"w": torch.zeros(2)}, "bad": _Unpicklable()}, path)
    assert load_checkpoint(path)["epoch"] == 1
    assert os.listdir(tmp_path) == ["last.pt"]


def test_rng_capture_restore_replays_the_same_draws():
    state = capture_rng()
    first = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng(state)
    second = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], second[0]) and np.array_equal(first[1], second[1]) and first[2] == second[2]


def test_unreadable_or_missing_checkpoint(tmp_path):
    with pytest.raises(IIFError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(IIFError, match="cannot read"):
        load_checkpoint(bad)
    with pytest.raises(IIFError, match="without last.pt"):
        load_checkpoint(tmp_path)


def test_resume_with_changed_config_is_refused_unless_forced():
    ckpt = {"config_hash": "aaaa", "path": "x/last.pt"}
    check_resume_compatible(ckpt, "aaaa")
    with pytest.raises(IIFError, match="--force"):
        check_resume_compatible(ckpt, "bbbb")
    check_resume_compatible(ckpt, "bbbb", force=True)


def _sgd_run(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 ** step)
    return model, opt, sched


def _step(model, opt, sched):
    loss = model(torch.randn(4, 3)).pow(2).sum()  # draws from the global RNG, like augmentation
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()


def test_restore_training_state_continues_exactly(tmp_path):
    """Two steps, a checkpoint, two more steps == the checkpoint restored into fresh objects, two more steps."""
    model, opt, sched = _sgd_run(0)
    for _ in range(2):
        _step(model, opt, sched)
    ckpt = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "epoch": 2, "history": [{"epoch": 1}, {"epoch": 2}], "rng_per_rank": [capture_rng(), capture_rng()]}
    save_checkpoint(tmp_path / "last.pt", ckpt)
    for _ in range(2):
        _step(model, opt, sched)
    fresh, fopt, fsched = _sgd_run(1)  # other initial weights: everything must come from the checkpoint
    epoch, history = restore_training_state(load_checkpoint(tmp_path / "last.pt"), fresh, fopt, fsched, rank=1)
    assert epoch == 2 and history == [{"epoch": 1}, {"epoch": 2}]
    for _ in range(2):
        _step(fresh, fopt, fsched)
    for k, v in model.state_dict().items():
        assert torch.equal(v, fresh.state_dict()[k]), k
    assert fsched.get_last_lr() == sched.get_last_lr()
