"""Resume exactness: k epochs, a stop (as if killed), then --resume to N gives bitwise the same weights,
optimizer state and history as an uninterrupted N-epoch run. Random crops and mixup are on, so every RNG
stream (torch, numpy, python, sampler epoch) must be restored for this to hold. A changed config is refused
unless forced."""

import pytest
import torch

from iif.errors import IIFError
from iif.train import fit, load_config
from iif.train.engine import build_splits

BASE = ["runtime.progress=false", "runtime.device=cpu", "runtime.tensorboard=false", "model.backbone_kwargs.width=4", "schedule.epochs=3",
        "eval.every=0", "data.augment=basic", "data.mixup_alpha=0.2", "schedule.warmup_epochs=1"]


@pytest.fixture(scope="module")
def splits():
    return build_splits(load_config("digits_lt_e2e", ["data.augment=basic"]))


def _same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("extra", [[], ["data.resident=false", "data.num_workers=0"]], ids=["resident", "dataloader"])
def test_resume_reproduces_an_uninterrupted_run_exactly(tmp_path, splits, extra):
    full = fit(load_config("digits_lt_e2e", BASE + extra), out_dir=tmp_path / "full", splits=splits)
    part = fit(load_config("digits_lt_e2e", BASE + extra + ["runtime.stop_after_epoch=1"]), out_dir=tmp_path / "cut",
               splits=splits)
    assert not part.finished and len(part.history) == 1
    resumed = fit(load_config("digits_lt_e2e", BASE + extra), out_dir=tmp_path / "cut", resume=True, splits=splits)
    assert resumed.finished
    _same_state(full.model.state_dict(), resumed.model.state_dict())
    ck_full = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    ck_res = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    for s_full, s_res in zip(ck_full["optimizer"]["state"].values(), ck_res["optimizer"]["state"].values()):
        assert torch.equal(s_full["momentum_buffer"], s_res["momentum_buffer"])
    assert [h["train_loss"] for h in full.history] == [h["train_loss"] for h in resumed.history]
    assert resumed.final_metrics["raw"]["top1"] == full.final_metrics["raw"]["top1"]


def test_resume_with_a_changed_config_needs_force(tmp_path, splits):
    fit(load_config("digits_lt_e2e", BASE + ["runtime.stop_after_epoch=1"]), out_dir=tmp_path, splits=splits)
    with pytest.raises(IIFError, match="--force"):
        fit(load_config("digits_lt_e2e", BASE + ["optim.lr=0.01"]), out_dir=tmp_path, resume=True, splits=splits)
    res = fit(load_config("digits_lt_e2e", BASE + ["optim.lr=0.01"]), out_dir=tmp_path, resume=True, force=True,
              splits=splits)
    assert [h["epoch"] for h in res.history] == [1, 2, 3]
