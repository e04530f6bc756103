"""Kill survey: SIGKILL ``iif train`` and ``iif bench --force`` at every write step and at random instants.

Each scenario runs a tiny digits-LT job in a forked child (torch imported once, one thread) and kills it
either at the N-th write step (``IIF_FAULT_KILL_AT``, see :mod:`iif.outputs`: every atomic write, rename,
swap and clean-up is a step) or after a random delay within one run's duration. After every kill it checks
the folder under the requested name, then recovers (``--resume`` for train, a new ``--force`` run for the
bench) and checks that the recovery succeeded, left no temporaries, and that a user file beside the output
is intact:

* ``train-new``: a first run (no old output): whatever is under the name is ours and ``--resume`` finishes;
* ``train-force``: ``--force`` over a finished run: the old run byte for byte, or the new run complete;
* ``bench-force``: the same for the bench;
* ``bench-force-fallback``: the bench with the atomic exchange disabled (the two-rename fallback): counts
  the kills that left no folder under the name, which the next run must put back.

    python benchmarks/kill_survey.py              # every write step + 20 random instants per scenario
    python benchmarks/kill_survey.py --random 50
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import random
import shutil
import signal
import tempfile
import time
from pathlib import Path

import torch

from iif import outputs as O
from iif.bench import runner as R
from iif.cli import main as cli
from iif.outputs import MARKER, read_marker
from iif.train import load_config
from iif.train.engine import build_splits

TINY = ["runtime.progress=false", "runtime.tensorboard=false", "schedule.epochs=2", "eval.every=0",
        "model.backbone_kwargs.width=4", "runtime.device=cpu", "--quiet"]


def child(fn, kill_at: int | None = None, kill_after: float | None = None, trace: Path | None = None) -> int:
    pid = os.fork()
    if pid == 0:
        code = 97
        try:
            fd = os.open(os.devnull, os.O_WRONLY)
            os.dup2(fd, 1), os.dup2(fd, 2)
            O._fault_steps = 0
            for k in ("IIF_FAULT_KILL_AT", "IIF_FAULT_TRACE"):
                os.environ.pop(k, None)
            if kill_at is not None:
                os.environ["IIF_FAULT_KILL_AT"] = str(kill_at)
            if trace is not None:
                os.environ["IIF_FAULT_TRACE"] = str(trace)
            fn()
            code = 0
        finally:
            os._exit(code)
    if kill_after is not None:
        time.sleep(kill_after)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return os.waitpid(pid, 0)[1]


def files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in d.iterdir() if p.is_file() and p.name != MARKER}


def temporaries(parent: Path) -> list[str]:
    return [n for n in os.listdir(parent) if ".iif-" in n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--random", type=int, default=20, help="random-instant kills per scenario")
    ap.add_argument("--seed", type=int, default=2026)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = random.Random(args.seed)
    splits = build_splits(load_config("digits_lt_e2e"))
    root = Path(tempfile.mkdtemp(prefix="iif-kill-survey-"))

    def train(out, *flags):
        return lambda: cli(["train", "digits_lt_e2e", *TINY, "--out", str(out), *flags]) == 0 or os._exit(3)

    def bench(out):
        return lambda: R.run_bench(out=out, quick=True, heads=["linear"], force=True, plots=False, splits=splits,
                                   overrides=["schedule.epochs=1", "model.backbone_kwargs.width=4", "decoupled.epochs=1"],
                                   log=lambda *_: None)

    def resume_train(out):
        assert os.WEXITSTATUS(child(train(out, "--resume"))) == 0
        assert read_marker(out)["complete"] and torch.load(out / "last.pt", weights_only=True)["epoch"] == 2

    def rerun_bench(out):
        assert os.WEXITSTATUS(child(bench(out))) == 0
        assert read_marker(out)["complete"] and (out / "results.json").is_file()

    def fresh_ok(out, before, snap) -> bool:
        assert not out.exists() or read_marker(out) is not None or O._contents(out) == []
        return True

    def old_or_new(out, before, snap) -> bool:
        m = read_marker(out)
        if m is None:
            return False  # nothing under the name
        if m["created_ns"] == before["created_ns"]:
            assert files(out) == snap, "old output changed"
        else:
            assert m["complete"], "an incomplete new output under the name"
        return True

    def no_exchange(a, b):
        raise OSError(errno.EINVAL, "exchange disabled for the survey")

    scenarios = [
        ("train-new", lambda out: train(out), fresh_ok, resume_train, False, False),
        ("train-force", lambda out: train(out, "--force"), old_or_new, resume_train, True, False),
        ("bench-force", bench, old_or_new, rerun_bench, True, False),
        ("bench-force-fallback", bench, old_or_new, rerun_bench, True, True),
    ]
    report = {}
    for name, make, check, recover, needs_old, fallback in scenarios:
        base = root / name
        base.mkdir()
        out = base / "out"
        (base / "notes.txt").write_text("user")
        real_exchange = O.exchange_paths
        if fallback:
            O.exchange_paths = no_exchange
        try:
            if needs_old:
                assert os.WEXITSTATUS(child(make(out) if name.startswith("bench") else train(out))) == 0
            trace = base.parent / f"{name}.trace"
            t0 = time.perf_counter()
            assert os.WEXITSTATUS(child(make(out), trace=trace)) == 0
            duration = time.perf_counter() - t0
            steps = len(trace.read_text().splitlines())
            points = [("step", k) for k in range(1, steps + 1)] + [("time", rng.uniform(0, duration))
                                                                    for _ in range(args.random)]
            killed = survived = missing = 0
            for how, k in points:
                if not needs_old and out.exists():
                    shutil.rmtree(out)
                before = read_marker(out) if out.exists() else None
                snap = files(out) if out.exists() else None
                st = child(make(out), kill_at=k) if how == "step" else child(make(out), kill_after=k)
                killed += os.WIFSIGNALED(st)
                present = check(out, before, snap)
                missing += not present
                recover(out)
                assert (base / "notes.txt").read_text() == "user", "user file lost"
                assert temporaries(base) == [], temporaries(base)
                survived += 1
        finally:
            O.exchange_paths = real_exchange
        report[name] = {"write_steps": steps, "kill_points": len(points), "killed_before_exit": killed,
                        "recovered": survived, "name_missing_after_kill": missing, "run_s": round(duration, 2)}
        print(name, report[name], flush=True)
    print(json.dumps(report))
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
