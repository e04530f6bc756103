"""Checkpoint files: atomic writes, RNG round trip, readable errors, config-change refusal."""

import os
import random

import numpy as np
import pytest
import torch

from iif.errors import IIFError
from iif.train.checkpoint import (atomic_torch_save, capture_rng, check_resume_compatible, load_checkpoint, restore_rng,
                                  save_checkpoint)


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
