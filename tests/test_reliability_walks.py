"""Walks and resources (issue 14, item 3; ``--threads`` of item 5).

* Folder walks (``iif stats``, ``iif train folder``, ``iif predict DIR``) follow links without cycles: each real
  folder and file once per class; the counts below are written by hand from the trees the tests build.
* FIFOs and sockets named like images are skipped with ONE warning and never opened: every command that could
  block on one runs in a subprocess with a timeout, so a regression fails instead of hanging the suite.
* The one thread rule (:mod:`iif.resources`): ``< 1`` refused, above the usable CPUs clamped with one warning.
* An image size x batch size whose input tensors cannot fit in memory: one line with the estimate, exit 2.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iif.errors import IIFError
from iif.readers import walk_image_files
from iif import resources
from iif.resources import check_image_memory, check_threads, default_threads, image_batch_bytes, usable_cpus

TIMEOUT = 120  # seconds; the walks here take well under one, a cycle regression never ends


def _png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    Image.fromarray(rng.randint(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)


def _tree(root: Path, counts: dict[str, int]) -> Path:
    seed = 0
    for name, n in counts.items():
        for j in range(n):
            _png(root / name / f"{j:02d}.png", seed)
            seed += 1
    return root


def _snapshot(root: Path) -> dict:
    """sha256 of every regular file under ``root`` (links not followed), plus the names of the other entries."""
    out = {}
    for dirpath, dirs, files in os.walk(root):  # followlinks=False: the snapshot itself never loops
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                out[p] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                out[p] = "link:" + os.readlink(p)
            else:
                out[p] = stat.S_IFMT(st.st_mode)
    return out


def _iif(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "iif.cli", *argv], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=TIMEOUT)


def _stats_counts(root: Path, cwd: Path) -> tuple[dict, list[str]]:
    """``iif stats ROOT --format json``'s report and its stderr lines."""
    proc = _iif("stats", str(root), "--format", "json", "--top", "100", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), proc.stderr.splitlines()


def _class_counts(report: dict) -> dict[str, int]:
    """``{class name: images}`` from ``iif stats --format json``'s report."""
    return {r["name"]: r["images"] for r in report["head"]}


@pytest.fixture
def cyclic_tree(tmp_path):
    """a/: 4 images plus two links to itself and one to the data root; b/: 2 images plus a link to b/00.png
    and a link to a folder outside the tree reached twice (3 images there). By hand: a 4, b 2 + 3 = 5."""
    root = _tree(tmp_path / "data", {"a": 4, "b": 2})
    os.symlink(".", root / "a" / "self1")
    os.symlink("../a", root / "a" / "self2")
    os.symlink("..", root / "a" / "up")
    os.symlink("/", root / "a" / "slash")
    os.symlink("00.png", root / "b" / "again.png")
    outside = _tree(tmp_path / "elsewhere", {"more": 3}) / "more"
    os.symlink(outside, root / "b" / "more1")
    os.symlink(outside, root / "b" / "more2")
    return root


# ------------------------------------------------------------------------------------------------- walks


def test_walk_order_is_torchvisions_on_a_tree_without_links(tmp_path):
    """Without links the walk lists exactly what torchvision's make_dataset lists, in the same order (so the
    splits of existing trees do not move): nested folders, a '-' that sorts before '/', upper-case names."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    root = tmp_path / "t"
    for rel in ["c/b/x.png", "c/b-c/y.png", "c/b.png", "c/A.PNG", "c/z/deep/q.jpg", "c/note.txt"]:
        _png(root / rel, len(rel)) if not rel.endswith(".txt") else (root / rel).write_text("x")
    want = [p for p, _ in make_dataset(str(root), {"c": 0}, extensions=IMG_EXTENSIONS)]
    got = walk_image_files(root / "c").files
    assert got == want and len(got) == 5


def test_two_self_links_end_and_count_each_image_once(tmp_path):
    """The issue's hang: a class folder with two links to itself (os.walk(followlinks=True) grows as 2^depth)."""
    root = _tree(tmp_path / "d", {"a": 4})
    os.symlink(".", root / "a" / "l1")
    os.symlink(".", root / "a" / "l2")
    report, err = _stats_counts(root, tmp_path)
    assert report["num_images"] == 4 and err == []


def test_links_to_self_parent_root_and_twice_outside_count_real_images_once(cyclic_tree, tmp_path):
    before = _snapshot(cyclic_tree)
    report, err = _stats_counts(cyclic_tree, tmp_path)
    assert _class_counts(report) == {"a": 4, "b": 5}
    assert report["num_images"] == 9 and err == []
    assert _snapshot(cyclic_tree) == before


def test_walk_lists_the_path_met_first_for_a_file_reached_twice(cyclic_tree):
    files = walk_image_files(cyclic_tree / "b").files
    rel = [os.path.relpath(f, cyclic_tree) for f in files]
    # entries are met in name order: 00.png before its link again.png ('0' < 'a'), more1 before more2
    assert rel == ["b/00.png", "b/01.png", "b/more1/00.png", "b/more1/01.png", "b/more1/02.png"]


def test_fifo_and_socket_named_like_images_skipped_with_one_warning(tmp_path):
    root = _tree(tmp_path / "d", {"a": 3, "b": 2})
    os.mkfifo(root / "a" / "pipe.png")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(root / "b" / "sock.jpg"))
        report, err = _stats_counts(root, tmp_path)
    finally:
        sock.close()
    assert _class_counts(report) == {"a": 3, "b": 2}
    assert len(err) == 1 and err[0].startswith("iif stats: warning: ")
    assert "skipped 2 file(s)" in err[0] and "pipe.png (FIFO)" in err[0]


def test_walk_reports_special_files_without_opening_them(tmp_path):
    root = _tree(tmp_path / "d", {"a": 1})
    os.mkfifo(root / "a" / "x.PNG")
    os.symlink("x.PNG", root / "a" / "y.png")  # a link to the FIFO is a FIFO too
    walk = walk_image_files(root / "a")  # would block in open() if it opened the FIFO
    assert walk.files == [str(root / "a" / "00.png")]
    assert sorted(os.path.basename(p) for p, _ in walk.special) == ["x.PNG", "y.png"]
    assert {kind for _, kind in walk.special} == {"FIFO"}


def test_image_check_names_a_fifo_instead_of_waiting_on_it(tmp_path):
    """A list dataset can name a FIFO directly: the image check reports it (in a subprocess: a regression
    blocks in open() forever)."""
    fifo = tmp_path / "f.png"
    os.mkfifo(fifo)
    code = ("from iif.data.verify import check_image; import sys; "
            f"print(check_image({str(fifo)!r}), check_image({str(tmp_path)!r}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.stdout.strip() == "not a regular file (a FIFO) not a regular file (a folder)", proc.stderr


# ------------------------------------------------------------------------------------------------- CLI runs


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``iif train folder`` (one epoch per stage) on a tree with a self-link cycle and a FIFO, with
    ``--threads 100000``: the run finishes, one warning each for the FIFO and the thread count."""
    base = tmp_path_factory.mktemp("walks")
    root = _tree(base / "data", {"a": 6, "b": 5})
    os.symlink(".", root / "a" / "again")
    os.symlink("../a", root / "a" / "again2")
    os.mkfifo(root / "b" / "pipe.png")
    before = _snapshot(root)
    proc = _iif("train", "folder", f"data.root={root}", "schedule.epochs=1", "decoupled.epochs=1",
                "--out", str(base / "run"), "--quiet", "--threads", "100000", cwd=base)
    return base, root, before, proc


def test_train_folder_with_cycle_and_fifo_finishes_with_one_warning_each(trained):
    base, root, before, proc = trained
    assert proc.returncode == 0, proc.stderr
    warnings = [ln for ln in proc.stderr.splitlines() if "warning" in ln]
    fifo = [ln for ln in warnings if "pipe.png" in ln]
    assert len(fifo) == 1 and "skipped 1 file(s)" in fifo[0]
    cpus = len(os.sched_getaffinity(0))
    thread = [ln for ln in warnings if "--threads" in ln]
    assert thread == [f"iif: warning: --threads 100000 is more than the {cpus} CPU(s) this process may use; "
                      f"using {cpus}"]
    assert "Traceback" not in proc.stderr
    assert _snapshot(root) == before


def test_train_records_the_clamped_threads_and_every_real_image_once(trained):
    import csv

    import yaml

    base, root, _, proc = trained
    cfg = yaml.safe_load((base / "run" / "config.yaml").read_text())
    assert cfg["runtime"]["threads"] == len(os.sched_getaffinity(0))
    # the splits train builds (same route, in a subprocess: a cycle regression hangs): 11 real images (6 + 5)
    code = ("import os; from iif.train import build_splits, load_config; "
            f"s = build_splits(load_config('folder', ['data.root={root}'])); "
            "parts = [s.train, s.val, s.test]; paths = [p for d in parts if d is not None for p, _ in d.samples]; "
            "print(len(s.train), len(s.val or []), len(paths), len({os.path.realpath(p) for p in paths}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT, cwd=base)
    n_train, n_val, n_all, n_real = map(int, out.stdout.split())
    assert n_all == n_real == 11, out.stderr
    with open(base / "run" / "stage1" / "metrics.csv", newline="") as f:
        assert {int(r["images"]) for r in csv.DictReader(f)} == {n_train}
    final = json.loads((base / "run" / "final_metrics.json").read_text())
    assert sum(final.get("val_counts", [n_val])) == n_val


def test_predict_walks_the_cyclic_folder_once_and_warns_once(trained):
    base, root, before, _ = trained
    proc = _iif("predict", str(base / "run"), str(root), "--threads", "1", cwd=base)
    assert proc.returncode == 0, proc.stderr
    paths = [ln.split()[0] for ln in proc.stdout.splitlines() if ln.startswith(str(root))]
    # 6 + 5 real images, none through the cycle's links, the FIFO not opened
    assert sorted(os.path.relpath(p, root) for p in paths) == [f"a/{j:02d}.png" for j in range(6)] + [
        f"b/{j:02d}.png" for j in range(5)]
    err = proc.stderr.splitlines()
    assert len(err) == 1 and err[0].startswith("iif predict: warning: ") and "pipe.png (FIFO)" in err[0]
    assert _snapshot(root) == before


def test_predict_refuses_a_fifo_given_as_a_file(trained):
    base, root, before, _ = trained
    proc = _iif("predict", str(base / "run"), str(root / "b" / "pipe.png"), cwd=base)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("iif predict: error: ")
    assert "not a regular file" in proc.stderr
    assert _snapshot(root) == before


@pytest.mark.parametrize("argv, message", [
    (["--threads", "0"], "--threads must be >= 1"),
    (["--threads", "-3"], "--threads must be >= 1"),
    (["runtime.threads=0"], "'runtime.threads'"),
])
def test_train_threads_below_one_is_one_line(argv, message, tmp_path):
    root = _tree(tmp_path / "d", {"a": 3, "b": 3})
    before = _snapshot(root)
    overrides = [a for a in argv if "=" in a]
    flags = [a for a in argv if "=" not in a]
    proc = _iif("train", "folder", f"data.root={root}", *overrides, "--quiet", "--out", str(tmp_path / "run"),
                *flags, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("iif train: error: ") and message in proc.stderr
    assert not (tmp_path / "run").exists() and _snapshot(root) == before


def test_image_size_that_cannot_fit_in_memory_is_one_line_with_the_estimate(tmp_path):
    root = _tree(tmp_path / "d", {"a": 3, "b": 3})
    before = _snapshot(root)
    proc = _iif("train", "folder", f"data.root={root}", "data.options.image_size=1000000", "optim.batch_size=8",
                "--quiet", "--out", str(tmp_path / "run"), cwd=tmp_path)
    # by hand: 8 images x 3 channels x 10^12 pixels x 4 bytes, plus one decoded uint8 image (3 x 10^12)
    need = 8 * 3 * 10**12 * 4 + 3 * 10**12
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("iif train: error: a training batch of 8 images at 1000000x1000000 px")
    assert f"({need} bytes" in proc.stderr and "data.options.image_size" in proc.stderr
    assert not (tmp_path / "run").exists() and _snapshot(root) == before


# ------------------------------------------------------------------------------------------------- the rules


def test_thread_rule_values(capsys):
    assert check_threads(None) is None
    assert [check_threads(n, cpus=4) for n in (1, 3, 4)] == [1, 3, 4]
    assert check_threads(np.int64(2), cpus=4) == 2
    assert capsys.readouterr().err == ""
    assert check_threads(5, "--threads", cpus=4) == 4
    assert check_threads(5, "--threads", cpus=4) == 4  # the same warning is printed once per process
    assert capsys.readouterr().err == "iif: warning: --threads 5 is more than the 4 CPU(s) this process may use; using 4\n"
    for bad in (0, -1, True, 2.0, "3"):
        with pytest.raises(IIFError, match="--threads"):
            check_threads(bad)


def test_usable_cpus_is_the_affinity_mask_else_the_cpu_count(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    assert usable_cpus() == 3
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 7)
    assert usable_cpus() == 7
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert usable_cpus() == 1


def test_default_threads_one_for_small_cpu_training_sets(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert default_threads(9_999, "cpu") == 1
    assert default_threads(10_000, "cpu") is None
    assert default_threads(50, "cuda") is None
    assert resources.training_threads(None, 50, "cpu") == 1
    assert resources.training_threads(1, 50_000, "cpu") == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's own setting wins: torch already follows it
    assert default_threads(50, "cpu") is None


def test_thread_limit_restores_the_count():
    import torch

    old = torch.get_num_threads()
    with resources.thread_limit(2 if old != 2 else 1):
        assert torch.get_num_threads() == (2 if old != 2 else 1)
    assert torch.get_num_threads() == old


def test_memory_estimate_and_limit():
    # 2 images x 3 x 10 x 10 float32 + one uint8 image: 2 * 300 * 4 + 300
    assert image_batch_bytes(2, 10, 3) == 2700
    assert check_image_memory(2, 10, 3, limit=2700) == 2700
    with pytest.raises(IIFError, match=r"needs at least 2\.6 KiB \(2700 bytes.*2\.6 KiB of memory; lower"):
        check_image_memory(2, 10, 3, limit=2699)
    assert resources.memory_limit() is None or resources.memory_limit() > 2**20


def test_predict_refuses_a_checkpoint_image_size_that_cannot_fit(trained, tmp_path):
    """A checkpoint whose preprocess asks for 10^6 px images: one line with the estimate before any image is
    decoded (it used to end in a torch allocator traceback)."""
    import torch

    base, root, before, _ = trained
    ckpt = torch.load(base / "run" / "best.pt", map_location="cpu", weights_only=True)
    ckpt["preprocess"]["image_size"] = 10**6
    torch.save(ckpt, tmp_path / "big.pt")
    proc = _iif("predict", str(tmp_path / "big.pt"), str(root / "a" / "00.png"), cwd=tmp_path)
    need = 1 * 3 * 10**12 * 4 + 3 * 10**12  # one image (the batch is cut to the images given), by hand
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("iif predict: error: a prediction batch of 1 images") and f"({need} bytes" in proc.stderr
    assert proc.stdout == "" and _snapshot(root) == before


def test_list_file_naming_a_fifo_says_so_instead_of_missing(tmp_path):
    from iif.data.lists import validate_list

    _png(tmp_path / "img" / "ok.png", 0)
    os.mkfifo(tmp_path / "img" / "pipe.png")
    (tmp_path / "train.txt").write_text("ok.png 0\npipe.png 1\ngone.png 1\n")
    with pytest.raises(IIFError) as e:
        validate_list(str(tmp_path / "train.txt"), str(tmp_path / "img"), 2)
    msg = str(e.value)
    assert "2 bad line(s)" in msg
    assert f"line 2: not a regular file {tmp_path / 'img' / 'pipe.png'}" in msg and "line 3: missing file" in msg


def test_fit_default_threads_only_for_runs_that_write_a_folder(tmp_path, monkeypatch):
    """``iif train`` (a run with a folder) takes the default rule: 1 thread for a small CPU set. A call without
    a folder (the bench's rows, run inside the bench's own ``--threads``) keeps the caller's count; an explicit
    ``runtime.threads`` is applied either way."""
    from iif.train import engine, load_config

    seen = []
    monkeypatch.setattr(engine, "set_threads", lambda n: seen.append(n) or 1)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    over = ["schedule.epochs=1", "runtime.device=cpu", "runtime.progress=false", "runtime.tensorboard=false"]
    engine.fit(load_config("digits_lt_e2e", over), out_dir=None)
    engine.fit(load_config("digits_lt_e2e", over), out_dir=tmp_path / "run")
    engine.fit(load_config("digits_lt_e2e", over + ["runtime.threads=1"]), out_dir=None)
    assert seen == [None, 1, 1]
