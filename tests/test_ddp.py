"""DDP with ``torchrun`` on CPU (gloo, 2 processes) gives the same result as one process.

Setup chosen so the two runs are mathematically the same computation: the decoupled stage 2 (backbone
frozen in eval mode, so BatchNorm uses fixed statistics and no per-rank batch statistics enter), no
augmentation and no mixup (no per-rank random streams), the same global batch (32 = 2 x 16), the
``random`` sampler (every rank slices the same seeded permutation ``[rank::2]``, so the two ranks' k-th
batches together are exactly the single process's k-th batch) and a training set of even size whose last
partial batch splits evenly. DDP averages the two ranks' mean-loss gradients, which equals the mean over
the union. Only float summation order differs, hence the small tolerance.

The two ranks are started as ``torchrun --nproc_per_node 2`` starts them, with its environment (``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``; the launcher adds nothing else that iif reads):
rank 1 is the installed ``iif`` console script in a fresh process, rank 0 a fork of this test process, which
has torch imported already (a fresh interpreter costs ~5 CPU-s of imports, the launcher another ~2).
"""

import json
import os
import socket
import subprocess
import sys
import time
import traceback

import pytest
import torch

from iif.cli import main
from iif.errors import IIFError
from iif.train import fit, load_config
from iif.train.distributed import per_rank_batch
from iif.train.engine import build_splits

# The `iif` console script (torchrun runs it with python); `python -m iif.cli` has no __main__ module.
IIF_SCRIPT = os.path.join(os.path.dirname(sys.executable), "iif")
TINY = ["data.imbalance_ratio=100", "runtime.progress=false", "runtime.tensorboard=false", "model.backbone_kwargs.width=4", "eval.every=0"]


def _rank_env(rank: int, port: int) -> dict[str, str]:
    """What torchrun --standalone --nproc_per_node 2 gives each worker (the parts any iif code reads)."""
    return {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
            "GROUP_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}


def _fork_rank(argv: list[str], env: dict[str, str], log) -> int:
    """Run ``iif <argv>`` in a forked child with ``env`` set, its output to ``log``; the child's pid."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 97
        try:
            sys.stdout = sys.stderr = open(log, "w", buffering=1)
            os.environ.update(env)
            code = int(main(argv) or 0)
        except BaseException:  # noqa: BLE001
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            os._exit(code)
    return pid


def _wait_both(pid: int, proc: subprocess.Popen, timeout: float) -> tuple[int, int]:
    """Exit codes of the forked rank and the subprocess rank; if one fails, the other (which would wait for
    it in the process group) is killed."""
    deadline, code0, code1 = time.monotonic() + timeout, None, None
    while (code0 is None or code1 is None) and time.monotonic() < deadline:
        if code0 is None:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code0 = os.waitstatus_to_exitcode(status)
        if code1 is None:
            code1 = proc.poll()
        if (code0 not in (None, 0)) or (code1 not in (None, 0)):
            break
        time.sleep(0.05)
    if code1 is None:
        proc.kill()
        code1 = proc.wait()
    if code0 is None:
        os.kill(pid, 9)
        code0 = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    return code0, code1


def test_batch_must_divide_by_world_size(monkeypatch):
    assert per_rank_batch(64, 4) == 16
    with pytest.raises(IIFError, match="not divisible by the world size 4.*multiple of 4"):
        per_rank_batch(30, 4)
    # fit refuses before it joins a process group (which would otherwise wait for the other ranks)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(IIFError, match="not divisible"):
        fit(load_config("digits_lt_e2e", TINY + ["optim.batch_size=31"]))


@pytest.mark.slow
def test_two_process_gloo_run_matches_one_process(tmp_path):
    torch.set_num_threads(1)
    splits = build_splits(load_config("digits_lt_e2e", TINY))  # 242 training images
    assert len(splits.train) % 2 == 0 and (len(splits.train) % 32) % 2 == 0
    stage1 = fit(load_config("digits_lt_e2e", TINY + ["loss.name=ce", "schedule.epochs=1"]), out_dir=tmp_path / "s1",
                 splits=splits)
    stage2 = TINY + [f"decoupled.stage1_checkpoint={stage1.checkpoint}", "decoupled.epochs=2", "decoupled.lr=0.05",
                     "decoupled.batch_size=32", "decoupled.momentum=0.9"]
    single = fit(load_config("digits_lt_decoupled", stage2), out_dir=tmp_path / "one", splits=splits)

    with socket.socket() as sock:  # a free port for rank 0's rendezvous store
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = ["train", "digits_lt_decoupled", *stage2, "--out", str(tmp_path / "two"), "--device", "cpu", "--quiet"]
    logs = [tmp_path / "rank0.log", tmp_path / "rank1.log"]
    with open(logs[1], "w") as log1:
        proc = subprocess.Popen([IIF_SCRIPT, *argv], env={**os.environ, **_rank_env(1, port)}, stdout=log1,
                                stderr=subprocess.STDOUT)
        pid = _fork_rank(argv, _rank_env(0, port), logs[0])
        codes = _wait_both(pid, proc, timeout=240)
    assert codes == (0, 0), [log.read_text()[-3000:] for log in logs]

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
