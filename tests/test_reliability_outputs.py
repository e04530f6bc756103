"""Reliability of what iif writes and reads (issue 7, part A): atomic files with the umask's modes, the
output-folder policy of ``iif train`` / ``iif bench`` (marker, refusals, --force, --resume, crash-safe swap,
stale temporaries), SIGKILL at seeded write steps of ``iif train`` and ``iif bench --force`` in forked
child processes, and crafted pickle checkpoints refused without running."""

import errno
import json
import os
import pickletools
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from iif import outputs as O
from iif.outputs import atomic as OA, marker as OM, swap as OS
from iif.cli import main
from iif.errors import IIFError
from iif.outputs import (MARKER, OutputFolder, atomic_torch_save, atomic_write_json, atomic_write_text,
                         clean_stale_temporaries, exchange_paths, prepare_run_folder, read_marker, write_marker)
from iif.train import fit, load_config
from iif.train.engine import build_splits

TINY = ["runtime.progress=false", "runtime.tensorboard=false", "schedule.epochs=2", "eval.every=0",
        "model.backbone_kwargs.width=4", "runtime.device=cpu"]


@pytest.fixture(scope="module")
def splits():
    return build_splits(load_config("digits_lt_e2e"))


@pytest.fixture
def umask027():
    old = os.umask(0o027)
    yield 0o027
    os.umask(old)


def _error_lines(err: str) -> list[str]:
    """stderr less the advice lines (``iif: warning: ...``, printed once per process, so present or not
    depending on which test ran first in this process)."""
    return [ln for ln in err.splitlines() if not ln.startswith("iif: warning:")]


def _mode(p: Path) -> int:
    return os.stat(p).st_mode & 0o777


def _temporaries(parent: Path) -> list[str]:
    return sorted(n for n in os.listdir(parent) if ".iif-" in n)


def _tmp_files(folder: Path) -> list[str]:
    return [f for _r, _d, files in os.walk(folder) for f in files if f.endswith(".iif-tmp")]


# ------------------------------------------------------------------------------------------- atomic files


def test_atomic_writes_honour_the_umask_and_leave_no_temporaries(tmp_path, umask027):
    atomic_write_text(tmp_path / "a.txt", "héllo\n")
    atomic_write_json(tmp_path / "b.json", {"x": [1, 2]})
    atomic_torch_save({"w": torch.arange(3)}, tmp_path / "c.pt")
    assert (tmp_path / "a.txt").read_bytes() == "héllo\n".encode()
    assert json.loads((tmp_path / "b.json").read_text()) == {"x": [1, 2]}
    assert torch.equal(torch.load(tmp_path / "c.pt", weights_only=True)["w"], torch.arange(3))
    for name in ("a.txt", "b.json", "c.pt"):
        assert _mode(tmp_path / name) == 0o640, name  # 0o666 & ~0o027; mkstemp alone gives 0o600
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.json", "c.pt"]
    with pytest.raises(IIFError, match="does not exist"):
        atomic_write_text(tmp_path / "no" / "x.txt", "x")
    with pytest.raises(IIFError, match="NaN"):
        atomic_write_json(tmp_path / "b.json", {"x": float("nan")})
    assert json.loads((tmp_path / "b.json").read_text()) == {"x": [1, 2]}  # old content kept


def test_failed_write_keeps_the_old_file(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "old")

    def boom(fh):
        fh.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        O.atomic_write_stream(tmp_path / "a.txt", boom)
    assert (tmp_path / "a.txt").read_text() == "old" and os.listdir(tmp_path) == ["a.txt"]


def test_exchange_swaps_two_folders_in_one_step(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "x").write_text("A")
    (b / "y").write_text("B")
    exchange_paths(a, b)
    assert os.listdir(a) == ["y"] and os.listdir(b) == ["x"]
    with pytest.raises(OSError):
        exchange_paths(a, tmp_path / "missing")


# ------------------------------------------------------------------------------------------- OutputFolder


def test_output_folder_new_then_refused_then_forced(tmp_path, umask027):
    out = tmp_path / "o"
    with OutputFolder(out, command="bench") as staging:
        assert isinstance(staging, Path) and staging.parent == out.parent and staging.name.startswith(".o.iif-stage-")
        assert not out.exists()  # nothing under the name until the output is complete
        (staging / "results.json").write_text("[1]")
    assert sorted(os.listdir(out)) == [MARKER, "results.json"]
    m = read_marker(out)
    assert m["command"] == "bench" and m["complete"] is True and m["version"]
    assert _mode(out) == 0o750 and _mode(out / MARKER) == 0o640
    # a finished run is refused without --force, naming what is there and the flag
    with pytest.raises(IIFError, match=r"already holds a finished iif bench output \(results.json\); pass --force"):
        OutputFolder(out, command="bench")
    # --force: the old output stays readable until the new one is complete
    with OutputFolder(out, command="bench", force=True) as staging:
        assert (out / "results.json").read_text() == "[1]"
        (staging / "results.json").write_text("[2]")
    assert (out / "results.json").read_text() == "[2]"
    assert _temporaries(tmp_path) == []


def test_output_folder_exception_removes_staging_and_keeps_old(tmp_path):
    out = tmp_path / "o"
    with OutputFolder(out, command="bench") as staging:
        (staging / "r.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with OutputFolder(out, command="bench", force=True) as staging:
            (staging / "r.txt").write_text("new")
            raise RuntimeError("killed by a bug")
    assert (out / "r.txt").read_text() == "old" and _temporaries(tmp_path) == []


def test_user_files_are_never_replaced_even_with_force(tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "thesis.tex").write_text("precious")
    with pytest.raises(IIFError, match=r"files that iif did not write \(thesis.tex\).*choose another --out"):
        OutputFolder(user, command="bench")
    with pytest.raises(IIFError, match=r"--force replaces only a folder that iif wrote.*thesis.tex.*nothing was removed"):
        OutputFolder(user, command="bench", force=True)
    with pytest.raises(IIFError, match="--resume continues only a run iif started"):
        prepare_run_folder(user, "train", resume=True)
    with pytest.raises(IIFError, match="--force replaces only"):
        prepare_run_folder(user, "train", force=True)
    assert os.listdir(user) == ["thesis.tex"] and (user / "thesis.tex").read_text() == "precious"
    (tmp_path / "f").write_text("a file")
    for make in (lambda: OutputFolder(tmp_path / "f"), lambda: prepare_run_folder(tmp_path / "f")):
        with pytest.raises(IIFError, match="exists and is a file"):
            make()
    # an empty folder is fine, and stays the user's folder (only the marker is added)
    empty = tmp_path / "empty"
    empty.mkdir()
    with OutputFolder(empty, command="bench") as staging:
        (staging / "r.txt").write_text("x")
    assert sorted(os.listdir(empty)) == [MARKER, "r.txt"]


def test_stale_temporaries_are_cleaned_only_when_ours(tmp_path):
    out = tmp_path / "o"
    with OutputFolder(out, command="bench") as staging:
        (staging / "r.txt").write_text("x")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    ours = tmp_path / ".o.iif-stage-killed1"
    ours.mkdir()
    (ours / "half.json").write_text("{")
    write_marker(ours, "bench", complete=False, staging=True)  # what OutputFolder writes into its staging folder
    m = json.loads((ours / MARKER).read_text())
    (ours / MARKER).write_text(json.dumps({**m, "pid": dead.pid}))  # a killed run's
    empty = tmp_path / ".o.iif-old-killed2"  # killed between mkdtemp and its marker
    empty.mkdir()
    looks_ours = tmp_path / ".o.iif-stage-usercopy"  # our name pattern but no marker: not ours
    looks_ours.mkdir()
    (looks_ours / "keep.txt").write_text("user")
    other = tmp_path / ".o.backup"
    other.mkdir()
    with OutputFolder(out, command="bench", force=True) as staging:
        (staging / "r.txt").write_text("y")
    assert _temporaries(tmp_path) == [".o.iif-stage-usercopy"]
    assert (looks_ours / "keep.txt").read_text() == "user" and other.is_dir()


def test_a_stale_old_output_holding_a_users_file_is_kept_whole(tmp_path):
    """A finished output swapped out as ``.o.iif-old-*`` by a killed run is removed only if it holds nothing but
    what its marker lists: a file the user added there is never deleted, nor the folder around it."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    old = tmp_path / ".o.iif-old-killed3"
    old.mkdir()
    (old / "r.txt").write_text("iif's")
    m = write_marker(old, "bench", files=["r.txt"], pid=dead.pid)
    assert m["files"] == ["r.txt"]
    (old / "notes.txt").write_text("the user's")
    assert OS.clean_stale_temporaries(tmp_path / "o") == []
    assert (old / "notes.txt").read_text() == "the user's" and (old / "r.txt").is_file()
    (old / "notes.txt").unlink()  # only what iif wrote: removed as before
    assert OS.clean_stale_temporaries(tmp_path / "o") == [old] and not old.exists()


def test_fallback_swap_and_recovery_of_a_cut_fallback(tmp_path, monkeypatch):
    out = tmp_path / "o"
    with OutputFolder(out, command="bench") as staging:
        (staging / "r.txt").write_text("old")

    def no_exchange(a, b):
        raise OSError(errno.EINVAL, "file system cannot exchange")

    monkeypatch.setattr(OS, "exchange_paths", no_exchange)  # looked up by swap._swap_into_place
    with OutputFolder(out, command="bench", force=True) as staging:
        (staging / "r.txt").write_text("new")
    assert (out / "r.txt").read_text() == "new" and _temporaries(tmp_path) == []
    # a fallback cut between its two renames: the old output waits under .o.iif-old-*; the next run puts it back
    os.rename(out, tmp_path / ".o.iif-old-cut")
    with pytest.raises(IIFError, match="already holds a finished iif bench output"):
        with OutputFolder(tmp_path / "o", command="bench") as staging:
            pass
    assert (out / "r.txt").read_text() == "new"


# ------------------------------------------------------------------------------------------- iif train / bench


def test_bench_out_with_user_files_is_refused_and_nothing_deleted(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    for extra in ([], ["--force"]):
        assert main(["bench", "--quick", "--out", str(out), "schedule.epochs=1"] + extra) == 2
        err = capsys.readouterr().err
        assert len(_error_lines(err)) == 1 and "notes.txt" in err
    assert os.listdir(out) == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"


def test_train_refuses_a_finished_run_and_an_existing_file(tmp_path, splits, capsys):
    out = tmp_path / "run"
    fit(load_config("digits_lt_e2e", TINY), out_dir=out, splits=splits)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert read_marker(out)["complete"] is True
    code = main(["train", "digits_lt_e2e", *TINY, "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and len(_error_lines(err)) == 1 and err.endswith("\n")
    assert "finished iif train output" in err and "--resume" in err and "--force" in err and "another --out" in err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    (tmp_path / "file").write_text("x")
    assert main(["train", "digits_lt_e2e", *TINY, "--out", str(tmp_path / "file"), "--quiet"]) == 2
    assert "is a file" in capsys.readouterr().err and (tmp_path / "file").read_text() == "x"


def test_train_force_stages_beside_and_resume_finds_the_staged_run(tmp_path, splits):
    out = tmp_path / "run"
    fit(load_config("digits_lt_e2e", TINY), out_dir=out, splits=splits)
    old_marker = read_marker(out)
    old_metrics = (out / "final_metrics.json").read_text()
    # a --force run stopped after one epoch: the old run is untouched, the new one waits beside it
    part = fit(load_config("digits_lt_e2e", TINY + ["runtime.stop_after_epoch=1"]), out_dir=out, force=True,
               splits=splits)
    assert not part.finished and part.out_dir.parent == tmp_path and part.out_dir.name.startswith(".run.iif-stage-")
    assert read_marker(out) == old_marker and (out / "final_metrics.json").read_text() == old_metrics
    assert torch.load(part.out_dir / "last.pt", weights_only=True)["epoch"] == 1
    # --resume finds the staged run, finishes it and swaps it in; the old one is gone, nothing left beside
    done = fit(load_config("digits_lt_e2e", TINY), out_dir=out, resume=True, splits=splits)
    assert done.finished and done.out_dir == out and done.checkpoint == out / done.selection["checkpoint"]  # the selected file (best.pt or last.pt)
    new_marker = read_marker(out)
    assert new_marker["created_ns"] > old_marker["created_ns"] and new_marker["complete"]
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 2
    assert _temporaries(tmp_path) == [] and _tmp_files(out) == []
    # the same weights as the uninterrupted old run (same config): resume stays exact through the swap
    ref = json.loads(old_metrics)["raw"]["top1"]
    assert json.loads((out / "final_metrics.json").read_text())["raw"]["top1"] == ref


def test_failed_run_leaves_no_empty_output_folder(tmp_path, splits):
    out = tmp_path / "run"
    with pytest.raises(IIFError, match="does not exist"):
        fit(load_config("digits_lt_posthoc", TINY + [f"posthoc.checkpoint={tmp_path / 'nope.pt'}"]), out_dir=out,
            splits=splits)
    assert not out.exists()


# ------------------------------------------------------------------------------------------- kills


def _in_child(fn, kill_at: int | None = None, trace: Path | None = None) -> int:
    """Run ``fn`` in a forked child with the fault hook armed; the child's wait status."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 98
        try:
            fd = os.open(os.devnull, os.O_WRONLY)
            os.dup2(fd, 1), os.dup2(fd, 2)
            OA._fault_steps = 0
            os.environ.pop("IIF_FAULT_KILL_AT", None)
            os.environ.pop("IIF_FAULT_TRACE", None)
            if kill_at is not None:
                os.environ["IIF_FAULT_KILL_AT"] = str(kill_at)
            if trace is not None:
                os.environ["IIF_FAULT_TRACE"] = str(trace)
            code = int(fn() or 0)
        except BaseException:  # noqa: BLE001
            code = 97
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status


def _kill_after(fn, seconds: float) -> int:
    """Run ``fn`` in a forked child and SIGKILL it after ``seconds`` (if it is still running)."""
    import time

    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 97
        try:
            fd = os.open(os.devnull, os.O_WRONLY)
            os.dup2(fd, 1), os.dup2(fd, 2)
            code = int(fn() or 0)
        finally:
            os._exit(code)
    time.sleep(seconds)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _, status = os.waitpid(pid, 0)
    return status


def _killed(status: int) -> bool:
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def _steps(fn, tmp_path: Path) -> int:
    trace = tmp_path / "trace.txt"
    assert os.WEXITSTATUS(_in_child(fn, trace=trace)) == 0
    n = len(trace.read_text().splitlines())
    trace.unlink()
    return n


def _points(n: int, last: int, extra: int, seed: int) -> list[int]:
    """Kill points among a run's ``n`` write steps: its ``last`` steps (final marker, swap, clean-up: where
    a replacement can go wrong) and ``extra`` more drawn with ``seed`` from the others."""
    tail = list(range(n - last + 1, n + 1))
    rest = list(range(1, n - last + 1))
    return sorted(tail + random.Random(seed).sample(rest, min(extra, len(rest))))


@pytest.mark.slow
def test_sigkill_during_train_then_resume(tmp_path, splits):
    out = tmp_path / "run"
    argv = ["train", "digits_lt_e2e", *TINY, "--out", str(out), "--quiet"]
    # reference: an uninterrupted run, counting its write steps
    n = _steps(lambda: main(argv), tmp_path)
    ref = torch.load(out / "last.pt", weights_only=True)["model"]
    ref_metrics = json.loads((out / "final_metrics.json").read_text())
    os.rename(out, tmp_path / "reference")
    survived = 0
    points = _points(n, last=1, extra=2, seed=7)
    for k in points:
        assert _killed(_in_child(lambda: main(argv), kill_at=k)), k
        # a fresh run has no old result: whatever is there is ours and resumable
        # (cut while writing its marker: only the marker's temporary file, which counts as empty)
        assert not out.exists() or read_marker(out) is not None or OM._contents(out) == [], k
        assert os.WEXITSTATUS(_in_child(lambda: main(argv + ["--resume"]))) == 0, k
        got = torch.load(out / "last.pt", weights_only=True)["model"]
        assert all(torch.equal(got[key], ref[key]) for key in ref), k  # bit-exact after the kill
        assert json.loads((out / "final_metrics.json").read_text()) == ref_metrics, k
        assert _tmp_files(out) == [] and _temporaries(tmp_path) == [], k
        os.rename(out, tmp_path / f"done{k}")
        survived += 1
    assert survived == len(points) == 3 and n >= 6


@pytest.mark.slow
def test_sigkill_during_train_force_keeps_old_or_new(tmp_path, splits):
    out = tmp_path / "run"
    argv = ["train", "digits_lt_e2e", *TINY, "--out", str(out), "--quiet"]
    assert main(argv) == 0
    (tmp_path / "notes.txt").write_text("user")  # a user file beside the run
    n = _steps(lambda: main(argv + ["--force"]), tmp_path)
    assert n >= 8
    for k in _points(n, last=3, extra=1, seed=11):
        before = read_marker(out)
        snapshot = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != MARKER}
        assert _killed(_in_child(lambda: main(argv + ["--force"]), kill_at=k)), k
        m = read_marker(out)
        assert m is not None, k  # never nothing under the name
        if m["created_ns"] == before["created_ns"]:  # the old run, byte for byte
            now = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != MARKER}
            assert now == snapshot, k
        else:  # the new run, complete: no old final_metrics.json beside new files
            assert m["complete"] and (out / "final_metrics.json").is_file(), k
        assert os.WEXITSTATUS(_in_child(lambda: main(argv + ["--resume"]))) == 0, k
        assert read_marker(out)["complete"] and torch.load(out / "last.pt", weights_only=True)["epoch"] == 2, k
        assert _temporaries(tmp_path) == [] and _tmp_files(out) == [], k
        assert (tmp_path / "notes.txt").read_text() == "user"


@pytest.mark.slow
def test_sigkill_during_bench_force_keeps_old_or_new(tmp_path, splits):
    from iif.bench import runner as R

    out = tmp_path / "bench"

    def bench():
        R.run_bench(out=out, quick=True, heads=["linear"], overrides=["schedule.epochs=1", "model.backbone_kwargs.width=4", "decoupled.epochs=1"],
                    splits=splits, force=True, plots=False, log=lambda *_: None)

    bench()
    (tmp_path / "notes.txt").write_text("user")
    n = _steps(bench, tmp_path)
    assert n >= 6
    rng = random.Random(13)
    points = [("step", k) for k in _points(n, last=3, extra=0, seed=13)] + [("time", rng.uniform(0.0, 0.6))]
    for how, k in points:
        before = read_marker(out)
        results = (out / "results.json").read_text()
        if how == "step":
            assert _killed(_in_child(bench, kill_at=k)), k
        else:
            _kill_after(bench, k)
        m = read_marker(out)
        assert m is not None and m["complete"], k
        assert (out / "results.json").is_file() and (out / "report.md").is_file(), k
        if m["created_ns"] == before["created_ns"]:
            assert (out / "results.json").read_text() == results, k
        # the next run of the folder cleans what the killed one left beside it (a stand-in for a full bench,
        # through the same OutputFolder code, to keep this test in seconds)
        kept = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != MARKER}
        with OutputFolder(out, command="bench", force=True) as staging:
            for name, data in kept.items():
                (staging / name).write_bytes(data)
        assert _temporaries(tmp_path) == [], k
        assert (tmp_path / "notes.txt").read_text() == "user"


# ------------------------------------------------------------------------------------------- crafted checkpoints


class _Evil:
    """Unpickling this calls ``open(path, "w")``: a file appears as a side effect."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _evil_checkpoint(path: Path, sentinel: Path) -> Path:
    torch.save({"model": {"w": torch.ones(1)}, "epoch": 1, "config": {}, "evil": _Evil(sentinel)}, path)
    # the fixture is a real attack: its pickle calls builtins.open (checked without unpickling it)
    import zipfile

    with zipfile.ZipFile(path) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(data)]
    assert [arg for name, arg in ops if name == "GLOBAL" and str(arg).endswith(" open")], ops
    return path


def test_crafted_pickle_checkpoint_is_refused_without_running(tmp_path, capsys):
    sentinel = tmp_path / "pwned"
    evil = _evil_checkpoint(tmp_path / "evil.pt", sentinel)

    def refused(argv):
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2 and len(_error_lines(err)) == 1 and "refusing to load checkpoint" in err and "(io.open)" in err, err
        assert not sentinel.exists()

    refused(["eval", str(evil)])
    run = tmp_path / "run"  # a run folder iif recognises, whose last.pt was replaced
    run.mkdir()
    write_marker(run, "train")
    os.replace(_evil_checkpoint(tmp_path / "e2.pt", sentinel), run / "last.pt")
    refused(["eval", str(run)])
    refused(["train", "digits_lt_e2e", *TINY, "--out", str(run), "--resume", "--quiet"])
    out = tmp_path / "out"
    refused(["train", "digits_lt_decoupled", *TINY, f"decoupled.stage1_checkpoint={evil}", "--out", str(out), "--quiet"])
    refused(["train", "digits_lt_posthoc", *TINY, f"posthoc.checkpoint={evil}", "--out", str(out), "--quiet"])
    assert not out.exists()  # refused before anything was written


def test_real_checkpoints_load_with_weights_only(tmp_path, splits):
    res = fit(load_config("digits_lt_e2e", TINY + ["schedule.epochs=1"]), out_dir=tmp_path / "r", splits=splits)
    ck = torch.load(res.checkpoint, weights_only=True)  # the plain torch route, no iif code involved
    assert ck["epoch"] == 1 and isinstance(ck["config"], dict) and isinstance(ck["rng"]["numpy"]["keys"], torch.Tensor)
    assert ck["rng"]["numpy"]["keys"].numel() == 624


def test_eval_json_naming_a_folder_is_refused_before_evaluating(tmp_path, capsys):
    sentinel = tmp_path / "pwned"
    evil = _evil_checkpoint(tmp_path / "evil.pt", sentinel)
    assert main(["eval", str(evil), "--json", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert len(_error_lines(err)) == 1 and "is a folder" in err and not sentinel.exists()


def test_force_keeps_a_file_the_user_added_to_an_old_output(tmp_path):
    """The marker of a finished output lists what iif wrote; --force refuses an old output that holds
    anything else (it would be removed whole after the swap), and the user's file stays."""
    from iif.errors import IIFError
    from iif.outputs import OutputFolder, read_marker

    out = tmp_path / "out"
    with OutputFolder(out, command="bench") as staging:
        (staging / "results.json").write_text("[]")
        (staging / "plots").mkdir()
        (staging / "plots" / "a.png").write_bytes(b"png")
    assert read_marker(out)["files"] == ["plots", "plots/a.png", "results.json"]
    (out / "plots" / "my_notes.txt").write_text("mine")
    with pytest.raises(IIFError, match=r"--force: .* also holds files iif did not write there \(plots/my_notes.txt\)"):
        OutputFolder(out, command="bench", force=True)
    assert (out / "plots" / "my_notes.txt").read_text() == "mine"
    (out / "plots" / "my_notes.txt").unlink()
    with OutputFolder(out, command="bench", force=True) as staging:  # only what iif wrote: replaced
        (staging / "results.json").write_text("[1]")
    assert (out / "results.json").read_text() == "[1]" and not (out / "plots").exists()


def test_force_rechecks_files_added_while_the_run_worked(tmp_path):
    from iif.errors import IIFError
    from iif.outputs import OutputFolder

    out = tmp_path / "out"
    with OutputFolder(out, command="bench") as staging:
        (staging / "results.json").write_text("[]")
    folder = OutputFolder(out, command="bench", force=True)
    with pytest.raises(IIFError, match="also holds files iif did not write"):
        with folder as staging:
            (staging / "results.json").write_text("[2]")
            (out / "data.csv").write_text("user data")  # appears during the run
    assert (out / "data.csv").read_text() == "user data" and (out / "results.json").read_text() == "[]"


def test_train_force_refuses_a_run_folder_holding_a_users_file(tmp_path, capsys):
    """A finished `iif train` run lists its files in its marker; `--force` over it while it holds a file iif
    did not write is refused in one line and the file stays (it used to be deleted with the old run)."""
    out = tmp_path / "run"
    args = ["train", "digits_lt_e2e", "schedule.epochs=1", "--out", str(out), "--quiet"]
    assert main(args) == 0
    listed = read_marker(out)["files"]
    assert "final_metrics.json" in listed and "last.pt" in listed
    (out / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main(args + ["--force"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "notes.txt" in err[0] and "nothing was replaced" in err[0]
    assert (out / "notes.txt").read_text() == "mine"
    assert main(args + ["--resume"]) == 2  # a resumed run would list the file as its own at its end
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].count("--resume") == 1 and "notes.txt" in err[0]
    assert (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    assert main(args + ["--force"]) == 0  # only what iif wrote: replaced
    assert not list(tmp_path.glob(".run.iif-*"))


def test_an_output_whose_marker_lists_no_files_is_kept_when_replaced(tmp_path, capsys):
    """An output written in place or by iif before 2026-12-06 (a marker without a files list) cannot be proved
    iif's alone: `--force` replaces it but moves it whole to .<out>.iif-kept-*, with a warning saying where."""
    out = tmp_path / "o"
    out.mkdir()
    write_marker(out, "bench", complete=True)  # no "files": an old output
    (out / "results.json").write_text("[]")
    (out / "my_analysis.ipynb").write_text("user work")
    with OutputFolder(out, command="bench", force=True) as staging:
        (staging / "results.json").write_text("[1]")
    assert (out / "results.json").read_text() == "[1]" and not (out / "my_analysis.ipynb").exists()
    kept = list(tmp_path.glob(".o.iif-kept-*"))
    assert len(kept) == 1 and (kept[0] / "my_analysis.ipynb").read_text() == "user work"
    err = capsys.readouterr().err
    assert "iif: warning:" in err and str(kept[0]) in err
    clean_stale_temporaries(out)  # never touched by later clean-ups
    assert (kept[0] / "my_analysis.ipynb").is_file()


def test_a_killed_staging_without_the_staging_flag_is_kept(tmp_path):
    """Stale clean-up removes a dead run's folder only when everything in it is provably iif's: a staging marker
    (staging: true) or a files list it matches; a bare marker proves nothing."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for name, flag in (("flagged", True), ("bare", None)):
        f = tmp_path / f".o.iif-stage-{name}"
        f.mkdir()
        (f / "x.txt").write_text("x")
        write_marker(f, "bench", complete=False, **({"staging": True} if flag else {}))
        m = json.loads((f / MARKER).read_text())
        (f / MARKER).write_text(json.dumps({**m, "pid": dead.pid}))
    removed = clean_stale_temporaries(tmp_path / "o")
    assert [p.name for p in removed] == [".o.iif-stage-flagged"]
    assert (tmp_path / ".o.iif-stage-bare" / "x.txt").is_file()


def test_resume_store_discard_keeps_a_foreign_file(tmp_path):
    """ResumeStore.discard removes resume/ only inside our staging folder and only when it holds nothing but
    the files the store writes."""
    from iif.resume import ResumeStore

    stage = tmp_path / ".o.iif-stage-abc"
    stage.mkdir()
    write_marker(stage, "det-bench", complete=False, staging=True)
    store = ResumeStore(stage, "k", lambda m: None)
    store.save_arrays(0, "posthoc rows", {"a": 1}, {"x": torch.zeros(2).numpy()})
    (store.root / "seed0" / "mine.txt").write_text("user")
    store.discard()
    assert (store.root / "seed0" / "mine.txt").read_text() == "user"
    (store.root / "seed0" / "mine.txt").unlink()
    write_marker(stage, "det-bench", complete=True)  # not a staging folder any more: nothing is removed
    store.discard()
    assert store.root.is_dir()
    write_marker(stage, "det-bench", complete=False, staging=True)
    store.discard()
    assert not store.root.exists()
