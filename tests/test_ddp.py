"""DDP with ``torchrun`` on CPU (gloo, 2 processes) gives the same result as one process.

Setup chosen so the two runs are mathematically the same computation: the decoupled stage 2 (backbone
frozen in eval mode, so BatchNorm uses fixed statistics and no per-rank batch statistics enter), no
augmentation and no mixup (no per-rank random streams), the same global batch (32 = 2 x 16), the
``random`` sampler (every rank slices the same seeded permutation ``[rank::2]``, so the two ranks' k-th
batches together are exactly the single process's k-th batch) and a training set of even size whose last
partial batch splits evenly. DDP averages the two ranks' mean-loss gradients, which equals the mean over
the union. Only float summation order differs, hence the small tolerance.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from iif.errors import IIFError
from iif.train import fit, load_config
from iif.train.distributed import per_rank_batch
from iif.train.engine import build_splits

# The `iif` console script (torchrun runs it with python); `python -m iif.cli` has no __main__ module.
IIF_SCRIPT = os.path.join(os.path.dirname(sys.executable), "iif")
TINY = ["data.imbalance_ratio=100", "runtime.progress=false", "runtime.tensorboard=false", "model.backbone_kwargs.width=4", "eval.every=0"]


def test_batch_must_divide_by_world_size(monkeypatch):
    assert per_rank_batch(64, 4) == 16
    with pytest.raises(IIFError, match="not divisible by the world size 4.*multiple of 4"):
        per_rank_batch(30, 4)
    # fit refuses before it joins a process group (which would otherwise wait for the other ranks)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(IIFError, match="not divisible"):
        fit(load_config("digits_lt_e2e", TINY + ["optim.batch_size=31"]))


def test_two_process_gloo_run_matches_one_process(tmp_path):
    torch.set_num_threads(1)
    splits = build_splits(load_config("digits_lt_e2e", TINY))  # 242 training images
    assert len(splits.train) % 2 == 0 and (len(splits.train) % 32) % 2 == 0
    stage1 = fit(load_config("digits_lt_e2e", TINY + ["loss.name=ce", "schedule.epochs=1"]), out_dir=tmp_path / "s1",
                 splits=splits)
    stage2 = TINY + [f"decoupled.stage1_checkpoint={stage1.checkpoint}", "decoupled.epochs=2", "decoupled.lr=0.05",
                     "decoupled.batch_size=32", "decoupled.momentum=0.9"]
    single = fit(load_config("digits_lt_decoupled", stage2), out_dir=tmp_path / "one", splits=splits)

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", IIF_SCRIPT,
           "train", "digits_lt_decoupled", *stage2, "--out", str(tmp_path / "two"), "--device", "cpu", "--quiet"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]

    two = torch.load(tmp_path / "two" / "last.pt", weights_only=True)
    for k, v in single.model.state_dict().items():
        assert torch.allclose(v, two["model"][k], atol=1e-5, rtol=1e-4), k
    # metrics gathered from both ranks' halves of the test set, written once by rank 0
    metrics = json.loads((tmp_path / "two" / "final_metrics.json").read_text())
    for name in ("raw", "adjusted"):
        assert metrics[name]["top1"] == pytest.approx(single.final_metrics[name]["top1"], abs=0.5)
        assert metrics[name]["nll"] == pytest.approx(single.final_metrics[name]["nll"], rel=1e-3)
    losses_two = [h["train_loss"] for h in two["history"]]
    assert losses_two == pytest.approx([h["train_loss"] for h in single.history], rel=1e-4)
    assert [h["images"] for h in two["history"]] == [len(splits.train)] * 2
