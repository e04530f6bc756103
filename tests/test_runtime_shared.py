"""iif.runtime's checkpoint, resume, DDP and run-folder pieces (issue 16 part 1, "one runtime") and the one LWS
classifier / sampler share (part 4): each against values worked out by hand or by an independent route, and
that classification and detection call the very same objects."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from torch import nn

import iif.data.samplers as samplers
import iif.detection.engine as det_engine
import iif.detection.sampling as det_sampling
import iif.runtime as runtime
import iif.runtime.distributed as rdist
import iif.train.checkpoint as train_checkpoint
import iif.train.config as train_config
import iif.train.distributed as train_distributed
import iif.train.engine as train_engine
from iif.errors import IIFError
from iif.outputs import abandoned_on_failure, made_by_run, prepare_run_folder

# --------------------------------------------------------------------------------- one object, both tasks


def test_both_tasks_use_the_same_runtime_objects():
    assert train_checkpoint.load_checkpoint is det_engine.load_checkpoint is runtime.load_checkpoint
    assert train_checkpoint.restore_training_state is det_engine.restore_training_state
    assert train_engine.training_state is det_engine.training_state is runtime.training_state
    assert train_config.settings_hash is det_engine.settings_hash is runtime.settings_hash
    assert det_engine.check_same_settings is runtime.check_same_settings
    assert train_engine.join_process_group is det_engine.join_process_group is rdist.join_process_group
    assert train_distributed.init_distributed is rdist.init_distributed
    assert train_distributed.per_rank_batch is rdist.per_rank_batch
    assert samplers.rank_share is det_sampling.rank_share is runtime.rank_share
    import iif.models as models
    import iif.train.decoupled as decoupled

    assert decoupled.LWSClassifier is models.LWSClassifier
    assert issubclass(models.LWSHead, models.LWSClassifier)


# ----------------------------------------------------------------------------------- resume fingerprint


def test_settings_hash_is_sha256_of_sorted_json_by_hand():
    # the string json.dumps(sort_keys=True, default=str) writes, typed out by hand
    text = '{"a": [1, 2], "b": 0.5, "p": "x/y"}'
    want = hashlib.sha256(text.encode()).hexdigest()[:16]
    from pathlib import PurePosixPath

    assert runtime.settings_hash({"p": PurePosixPath("x/y"), "b": 0.5, "a": [1, 2]}) == want
    assert len(want) == 16 and runtime.settings_hash({"a": [1, 2], "b": 0.5, "p": "x/y"}) == want


def test_classification_config_hash_is_the_shared_fingerprint_of_its_dict():
    cfg = {"optim": {"lr": 0.1}, "runtime": {"out_dir": "runs/x", "seed": 3}}
    # runtime.out_dir is not hashed (it changes nothing the run computes)
    text = '{"optim": {"lr": 0.1}, "runtime": {"seed": 3}}'
    assert train_config.config_hash(cfg) == hashlib.sha256(text.encode()).hexdigest()[:16]


def test_check_same_settings_rule():
    check = runtime.check_same_settings
    check("abc", "abc", "never")
    check("abc", "def", "never", force=True)             # --force resumes anyway
    check(None, "def", "never")                           # a checkpoint without a fingerprint (older runs)
    with pytest.raises(IIFError, match="^changed$"):
        check("abc", "def", "changed")
    with pytest.raises(IIFError, match="^missing$"):      # detection's checkpoints must carry one
        check(None, "def", "missing", missing_ok=False)


def test_classification_resume_message_is_unchanged():
    ckpt = {"config_hash": "1111", "path": "run/last.pt"}
    with pytest.raises(IIFError) as err:
        train_checkpoint.check_resume_compatible(ckpt, "2222")
    assert str(err.value) == (
        "cannot resume from run/last.pt: it was written with config hash 1111, the current config hashes to 2222. "
        "Use the same config and overrides, or pass --force to resume anyway (results will not match an "
        "uninterrupted run).")
    train_checkpoint.check_resume_compatible(ckpt, "2222", force=True)
    train_checkpoint.check_resume_compatible({"path": "p"}, "2222")


def test_training_state_keys_in_order():
    model = nn.Linear(2, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    rngs = [{"r": 0}, {"r": 1}]
    st = runtime.training_state(model, opt, sched, None, 4, rngs)
    assert list(st) == ["model", "optimizer", "scheduler", "scaler", "epoch", "rng_per_rank"]
    assert st["scaler"] is None and st["epoch"] == 4 and st["rng_per_rank"] is rngs
    assert torch.equal(st["model"]["weight"], model.weight)
    st = runtime.training_state(model, opt, sched, None, 4, rngs, rank0_rng=True)
    assert list(st) == ["model", "optimizer", "scheduler", "scaler", "epoch", "rng", "rng_per_rank"]
    assert st["rng"] == {"r": 0}


# ------------------------------------------------------------------------------------------------- DDP


def test_rank_share_pads_by_wrapping_and_strides_by_hand():
    idx = np.array([7, 8, 9, 10, 11])
    # 5 indices over 2 ranks: padded with the first one -> [7, 8, 9, 10, 11, 7]
    assert rdist.padded_to_multiple(idx, 2).tolist() == [7, 8, 9, 10, 11, 7]
    assert runtime.rank_share(idx, 0, 2).tolist() == [7, 9, 11]
    assert runtime.rank_share(idx, 1, 2).tolist() == [8, 10, 7]
    # 5 over 4 ranks: three padded -> [7, 8, 9, 10, 11, 7, 8, 9]
    assert [runtime.rank_share(idx, r, 4).tolist() for r in range(4)] == [[7, 11], [8, 7], [9, 8], [10, 9]]
    # a tensor the same way; 2 over 7 ranks wraps more than once
    t = torch.tensor([3, 4])
    assert rdist.padded_to_multiple(t, 7).tolist() == [3, 4, 3, 4, 3, 4, 3]
    assert runtime.rank_share(t, 6, 7).tolist() == [3]
    assert runtime.rank_share(np.array([], dtype=np.int64), 1, 3).tolist() == []
    assert runtime.rank_share(idx, 0, 1).tolist() == idx.tolist()


def test_samplers_shards_are_the_epoch_list_split_by_rank():
    # classification's and detection's samplers, two ranks: the union of the shards is the padded epoch list
    targets = [0, 0, 0, 1, 1, 2, 2]
    for r in range(2):
        s = samplers.build_sampler("random", targets, num_replicas=2, rank=r, seed=5)
        g = s.global_indices()
        assert len(g) == 8 and g[7] == g[0] and sorted(g[:7].tolist()) == list(range(7))
        assert list(s) == g[r::2].tolist()
    rfs = [det_sampling.RepeatFactorSampler([1.0, 2.0, 1.0], num_replicas=2, rank=r, seed=1, rounding="ceil")
           for r in range(2)]
    epoch = rfs[0].epoch_indices()  # 4 copies: image 1 twice
    assert sorted(epoch.tolist()) == [0, 1, 1, 2]
    assert list(rfs[0]) == epoch[0::2].tolist() and list(rfs[1]) == epoch[1::2].tolist()


def test_join_process_group_and_on_main_rank_single_process(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    dev, info = runtime.join_process_group("cpu")
    assert dev == torch.device("cpu") and (info.rank, info.world_size, info.distributed) == (0, 1, False)
    assert runtime.on_main_rank(info, lambda: "folder") == "folder"
    with pytest.raises(IIFError, match="^refused$"):
        runtime.on_main_rank(info, lambda: (_ for _ in ()).throw(IIFError("refused")))
    with pytest.raises(IIFError, match="is not a device name"):
        runtime.join_process_group("gpu0")


# -------------------------------------------------------------------------------------------- run folder


def test_made_by_run(tmp_path):
    out = tmp_path / "run"
    assert made_by_run(out, out, existed=False)
    assert not made_by_run(out, out, existed=True)
    assert made_by_run(tmp_path / ".run.stage", out, existed=True)
    assert not made_by_run(tmp_path / "x" / ".." / "run", out, existed=True)  # the same folder, spelled otherwise


def test_abandoned_on_failure_removes_only_a_fresh_start(tmp_path):
    out = tmp_path / "run"
    work = prepare_run_folder(out, "train")
    (work / "config.yaml").write_text("x")
    with pytest.raises(RuntimeError):
        with abandoned_on_failure(work, created=made_by_run(work, out, False), written=("config.yaml",)):
            raise RuntimeError("boom")
    assert not out.exists()
    # another rank (owner=False) touches nothing; a success leaves the folder
    work = prepare_run_folder(out, "train")
    with pytest.raises(RuntimeError):
        with abandoned_on_failure(work, created=True, owner=False):
            raise RuntimeError("boom")
    assert out.is_dir()
    with abandoned_on_failure(work, created=True):
        pass
    assert out.is_dir()


# ----------------------------------------------------------------------------------------------- LWS


def test_one_lws_classifier_wraps_any_head_by_hand():
    from iif.models import CosineHead, LWSClassifier, LWSHead

    head = CosineHead(3, 4, scale=2.0)
    lws = LWSClassifier(head)
    assert [k for k in lws.state_dict()] == ["head.weight", "lws.scale"]  # decoupled stage-2 checkpoints' keys
    assert [n for n, p in lws.named_parameters() if p.requires_grad] == ["lws.scale"]
    assert lws.weight is head.weight
    with torch.no_grad():
        lws.lws.scale.copy_(torch.tensor([1.0, 3.0, 0.5, -2.0]))
    x = torch.randn(5, 3)
    assert torch.allclose(lws(x), head(x) * torch.tensor([1.0, 3.0, 0.5, -2.0]))
    lws.reset_parameters()
    assert torch.equal(lws.lws.scale, torch.ones(4)) and torch.equal(lws.weight, head.weight)
    with pytest.raises(IIFError, match="LWS needs a classifier with a"):
        LWSClassifier(nn.ReLU())
    # the lws head is the same module around its own linear head, keys as before
    assert list(LWSHead(3, 4).state_dict()) == ["linear.weight", "linear.bias", "lws.scale"]
    assert all(p.requires_grad for p in LWSHead(3, 4).parameters())


# ------------------------------------------------------------------------------------------- epoch sums


def test_epoch_sums_by_hand():
    from iif.runtime.progress import EpochSums

    sums = EpochSums(torch.device("cpu"), ("loss", "correct"))
    sums.count(2)
    sums.add("loss", torch.tensor(0.5, dtype=torch.float64) * 2)
    sums.add("correct", torch.tensor(1.0, dtype=torch.float64))
    sums.count(3)
    sums.add("loss", torch.tensor(0.25, dtype=torch.float64) * 3)
    sums.add("loss_box", torch.tensor(4.0, dtype=torch.float64))  # a key first seen mid-epoch
    totals, images, seconds = sums.reduce()
    assert totals == {"loss": 1.75, "correct": 1.0, "loss_box": 4.0} and list(totals) == ["loss", "correct", "loss_box"]
    assert images == 5.0 and seconds >= 0.0
    empty, n, _ = EpochSums(torch.device("cpu"), ("loss",)).reduce()
    assert empty == {"loss": 0.0} and n == 0.0


def _fork_two_ranks(target, *args) -> list:
    """Run ``target(rank, *args, queue)`` in two forked processes set up as torchrun sets up ranks 0 and 1 (gloo,
    a free local port); returns what each put on the queue, sorted (rank first)."""
    import multiprocessing
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()

    def rank_main(rank):
        import os

        os.environ.update({"RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
                           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
        torch.set_num_threads(1)
        target(rank, *args, queue)

    procs = [ctx.Process(target=rank_main, args=(r,)) for r in range(2)]
    for p in procs:
        p.start()
    results = sorted(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    return results


def _two_ranks(rank: int, fail: bool, queue) -> None:
    dev, info = runtime.join_process_group("cpu")
    calls = []

    def make():
        calls.append(rank)
        if fail:
            raise IIFError("folder refused; use --force")
        return f"folder-of-rank-{rank}"

    try:
        got = runtime.on_main_rank(info, make)
    except IIFError as exc:
        got = f"error: {exc}"
    group = rdist.current_group()  # the live group, as detection's predict and RepeatFactorSampler read it
    share = list(det_sampling.RepeatFactorSampler([1.0, 1.0, 1.0], seed=0, shuffle=False))  # [0,1,2] + pad [0]
    queue.put((rank, info.world_size, str(dev), got, calls, (group.rank, group.world_size), share))
    rdist.cleanup_distributed(info)


@pytest.mark.slow
@pytest.mark.parametrize("fail", [False, True])
def test_on_main_rank_two_gloo_processes(fail):
    # two forked ranks (gloo): only rank 0 runs make(); both get its value, or both raise its one-line error
    results = _fork_two_ranks(_two_ranks, fail)
    want = "error: folder refused; use --force" if fail else "folder-of-rank-0"
    assert results == [(0, 2, "cpu", want, [0], (0, 2), [0, 2]), (1, 2, "cpu", want, [], (1, 2), [1, 0])]


def test_current_group_without_a_process_group():
    import torch.distributed as dist

    assert not dist.is_initialized()
    g = rdist.current_group()
    assert (g.rank, g.world_size, g.distributed) == (0, 1, False)
    assert det_sampling._default_replicas() == (1, 0)
    assert det_engine.current_group is rdist.current_group


def test_wrap_ddp_and_seed_rank_stream_single_process():
    model = nn.Linear(2, 2)
    assert rdist.wrap_ddp(model, torch.device("cpu"), rdist.DistInfo()) is model
    rdist.seed_rank_stream(5, rdist.DistInfo(rank=2, world_size=4))
    got = torch.rand(3)
    torch.manual_seed(2006)  # 5 + 1000 * 2 + 1, by hand
    assert torch.equal(got, torch.rand(3))
    assert train_engine.seed_rank_stream is det_engine.seed_rank_stream is rdist.seed_rank_stream
    assert train_engine.wrap_ddp is det_engine.wrap_ddp is rdist.wrap_ddp


def _det_train_folder_ranks(rank: int, out: str, resume_with_other: bool, queue) -> None:
    from pathlib import Path

    from iif.detection.config import detection_config_hash, load_detection_config
    from iif.detection.runs_folder import _open_run_folder

    _, info = runtime.join_process_group("cpu")
    cfg = load_detection_config("det_bench_softmax")
    h = detection_config_hash(cfg) if not resume_with_other else "0" * 16
    try:
        work, created = _open_run_folder(cfg, Path(out), info, h, resume=resume_with_other, force=False)
        # ``created`` matters on rank 0 only (it alone abandons a failed start); another rank may look after
        # rank 0 made the folder
        got = (str(work), created if info.is_main else None)
    except IIFError as exc:
        got = ("error", str(exc))
    queue.put((rank, got))
    rdist.cleanup_distributed(info)


@pytest.mark.slow
def test_det_train_run_folder_under_two_gloo_ranks(tmp_path):
    # det-train's run folder under DDP: rank 0 prepares it and saves config.yaml, rank 1 learns the same folder;
    # a --resume with another config is refused on both ranks with rank 0's one line
    out = str(tmp_path / "run")
    assert _fork_two_ranks(_det_train_folder_ranks, out, False) == [(0, (out, True)), (1, (out, None))]
    assert (tmp_path / "run" / "config.yaml").is_file()
    refused = _fork_two_ranks(_det_train_folder_ranks, out, True)
    msg = (f"--resume: {out} was trained with another config ({out}/config.yaml); run with the same config and "
           "overrides, add --force to resume anyway, or choose another --out.")
    assert refused == [(0, ("error", msg)), (1, ("error", msg))]
