"""Outputs never touch inputs (issue 14, item 1; docs/reliability.md, "Outputs never touch inputs").

A table of command x input kind: every output option of every command (``--out``, ``--json``,
``--save-logits``, ``--output``, ``--detections``) pointed at, around, into or through a symbolic link to
something the same command reads (checkpoint, run folder and its files, config file, data root, image folder,
image, annotation json, det-data benchmark, logits folder, --source-root). Each case runs the real CLI
in-process and must exit 2 with exactly one stderr line, no traceback, and leave every file of the workspace
and of the shared benchmark byte-identical (sha256 before and after).

Then: ``--force`` and ``--resume`` only over the same command's output; the final swap's re-check (a user
folder put in place between staging and swap is never moved aside, also after a SIGKILL and ``--resume``);
a failed start leaves nothing behind; the documented exception (new files inside the run folder of the
checkpoint read) still works.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from iif import outputs as O
from iif.outputs import atomic as OA, run_folder as OR
from iif.cli import main
from iif.errors import IIFError
from iif.outputs import MARKER, read_marker, refuse_overlap, write_marker
from iif.train import fit, load_config

pytest.importorskip("torchvision")

# One epoch of a 4-wide small CNN on a 3-class tree of 8x8 images (a few CPU-seconds).
FOLDER = ["strategy.name=e2e", "schedule.epochs=1", "model.backbone_kwargs.width=4", "eval.every=0",
          "runtime.device=cpu", "runtime.progress=false", "runtime.tensorboard=false", "data.num_workers=0",
          "schedule.warmup_epochs=0"]
TINY = ["runtime.progress=false", "runtime.tensorboard=false", "schedule.epochs=1", "eval.every=0",
        "model.backbone_kwargs.width=4", "runtime.device=cpu"]
# tests/test_detection_config.py's tiny detector: one epoch of 24 images, boxes only.
DET_TINY = ["data.max_train_images=24", "data.max_val_images=8", "model.min_size=64", "model.max_size=64",
            "model.fpn_channels=16", "model.representation_size=32", "model.mask_layers=[8]",
            "model.box_detections_per_img=20", "schedule.batch_size=4", "schedule.warmup_iters=2",
            "schedule.milestones=[1]", "eval.batch_size=4", "runtime.threads=1", "schedule.epochs=1",
            "eval.masks=false"]


# --------------------------------------------------------------------------------------------- workspace


def _tree(root: Path, per_class: dict[str, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    for c, n in per_class.items():
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(root / c / f"{i}.png")


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """The workspace every case reads: a folder dataset, a run trained on it, its --save-logits folder, a
    config file, a counts json, a folder another command (det-data) wrote, a --source-root folder and links."""
    d = tmp_path_factory.mktemp("overlap")
    tree = d / "tree"
    _tree(tree / "train", {"a": 10, "b": 6, "c": 4}, seed=0)
    _tree(tree / "test", {"a": 3, "b": 3, "c": 3}, seed=1)
    run = d / "run"
    res = fit(load_config("folder", [f"data.root={tree}", *FOLDER]), out_dir=run)
    ckpt = Path(res.checkpoint)
    assert ckpt.is_file() and ckpt.parent == run
    assert main(["eval", str(ckpt), "--save-logits", str(d / "logits"), "--json", str(d / "e.json")]) == 0
    cfgdir = d / "cfg"
    cfgdir.mkdir()
    (cfgdir / "tiny.yaml").write_text("base: digits_lt_e2e\n")
    (d / "counts.json").write_text(json.dumps([50, 10, 2]))
    other = d / "detdata"  # what an earlier `iif det-data` left: ours, but another command's
    other.mkdir()
    (other / "BENCHMARK.json").write_text("{}")
    write_marker(other, "det-data", complete=True)
    src = d / "sources"
    (src / "MNIST" / "raw").mkdir(parents=True)
    (src / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01")
    for name, target in (("link_run", run), ("link_tree", tree), ("link_ckpt", ckpt),
                         ("link_img", tree / "test" / "a" / "0.png"), ("link_counts", d / "counts.json")):
        os.symlink(target, d / name)
    return {"d": d, "tree": tree, "run": run, "ckpt": ckpt, "logits": d / "logits", "cfg": cfgdir / "tiny.yaml",
            "cfgdir": cfgdir, "counts": d / "counts.json", "detdata": other, "src": src,
            "img": tree / "test" / "a" / "0.png"}


@pytest.fixture(scope="module")
def bench(detection_benchmark):
    """The session's shared tiny det-data benchmark (read only: conftest checks it at teardown)."""
    return detection_benchmark[0]


@pytest.fixture(scope="module")
def detrun(bench, tmp_path_factory):
    """One det-train run of one epoch on the benchmark (box evaluation only)."""
    out = tmp_path_factory.mktemp("overlap-det") / "detrun"
    assert main(["det-train", "det_bench_softmax", f"data.root={bench}", *DET_TINY, "--out", str(out), "--quiet"]) == 0
    return out


def _state(*roots: Path) -> dict:
    """sha256 of every file, the target of every link and the list of folders under ``roots``."""
    found = {}
    for root in roots:
        for dirpath, dirnames, files in os.walk(root):
            found[dirpath] = ("dir", sorted(dirnames), sorted(files))
            for name in dirnames + files:
                p = os.path.join(dirpath, name)
                if os.path.islink(p):
                    found[p] = ("link", os.readlink(p))
                elif name in files:
                    with open(p, "rb") as fh:
                        found[p] = ("file", hashlib.sha256(fh.read()).hexdigest())
    return found


def _refused(argv: list[str], capsys, *roots: Path) -> str:
    """Run ``iif argv``: exit 2, one stderr line (advice lines aside), no traceback, nothing under ``roots``
    changed. Returns the line."""
    before = _state(*roots)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if not ln.startswith(("iif: warning:", "iif: folder tree:"))]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith(f"iif {argv[0]}: error: "), err
    assert "Traceback" not in err
    assert _state(*roots) == before
    return lines[0]


# --------------------------------------------------------------------------------------------- the table

# (command, input kind, argv builder, what the message must name). ``w`` is the workspace, ``b`` the
# benchmark, ``r`` the det-train run (built only for the cases that need it).
# The refusal of --force over another command's output, made before any work (the swap's re-check, made
# after the work, says "now holds" instead).
SAME = "only applies to an output of the same command"
CASES = [
    # iif train
    ("train", "data root (equal)", lambda w, b, r: ["train", "folder", f"data.root={w['tree']}", *FOLDER, "--out", str(w["tree"])], "data.root"),
    ("train", "data root (inside)", lambda w, b, r: ["train", "folder", f"data.root={w['tree']}", *FOLDER, "--out", str(w["tree"] / "run")], "lies inside"),
    ("train", "data root (contains)", lambda w, b, r: ["train", "folder", f"data.root={w['tree'] / 'train'}", *FOLDER, "--out", str(w["tree"])], "would replace"),
    ("train", "data root (symlink)", lambda w, b, r: ["train", "folder", f"data.root={w['tree']}", *FOLDER, "--out", str(w["d"] / "link_tree")], "data.root"),
    ("train", "data root (a/../b)", lambda w, b, r: ["train", "folder", f"data.root={w['tree']}", *FOLDER, "--out", str(w["run"] / ".." / "tree")], "data.root"),
    ("train", "config file (equal)", lambda w, b, r: ["train", str(w["cfg"]), *TINY, "--out", str(w["cfg"])], "the config"),
    ("train", "config file (contains)", lambda w, b, r: ["train", str(w["cfg"]), *TINY, "--out", str(w["cfgdir"]), "--force"], "the config"),
    ("train", "posthoc.checkpoint", lambda w, b, r: ["train", "folder", f"data.root={w['tree']}", *FOLDER, "strategy.name=posthoc", f"posthoc.checkpoint={w['ckpt']}", "--out", str(w["run"]), "--force"], "posthoc.checkpoint"),
    ("train", "decoupled.stage1_checkpoint", lambda w, b, r: ["train", "folder", f"data.root={w['tree']}", *FOLDER, "strategy.name=decoupled", f"decoupled.stage1_checkpoint={w['ckpt']}", "--out", str(w["d"] / "link_run"), "--force"], "decoupled.stage1_checkpoint"),
    ("train", "another command's output (--resume)", lambda w, b, r: ["train", "digits_lt_e2e", *TINY, "--out", str(w["logits"]), "--resume"], "eval-logits"),
    ("train", "another command's output (--force)", lambda w, b, r: ["train", "digits_lt_e2e", *TINY, "--out", str(w["detdata"]), "--force"], SAME),
    # iif eval
    ("eval", "checkpoint (--json equal)", lambda w, b, r: ["eval", str(w["ckpt"]), "--json", str(w["ckpt"])], "the checkpoint"),
    ("eval", "checkpoint (--json via symlink)", lambda w, b, r: ["eval", str(w["ckpt"]), "--json", str(w["d"] / "link_ckpt")], "the checkpoint"),
    ("eval", "run's config.yaml (--json)", lambda w, b, r: ["eval", str(w["run"]), "--json", str(w["run"] / "config.yaml")], "config.yaml"),
    ("eval", "run's last.pt (--json)", lambda w, b, r: ["eval", str(w["ckpt"]), "--json", str(w["run"] / "last.pt")], "last.pt"),
    ("eval", "run folder (--save-logits --force)", lambda w, b, r: ["eval", str(w["ckpt"]), "--save-logits", str(w["run"]), "--force"], "would replace"),
    ("eval", "run folder (--save-logits via symlink)", lambda w, b, r: ["eval", str(w["ckpt"]), "--save-logits", str(w["d"] / "link_run")], "would replace"),
    ("eval", "data root (--save-logits inside)", lambda w, b, r: ["eval", str(w["ckpt"]), "--save-logits", str(w["tree"] / "logits")], "data.root"),
    ("eval", "data root (--json inside)", lambda w, b, r: ["eval", str(w["ckpt"]), "--json", str(w["tree"] / "test" / "e.json")], "data.root"),
    ("eval", "det-data output (--save-logits --force)", lambda w, b, r: ["eval", str(w["ckpt"]), "--save-logits", str(w["detdata"]), "--force"], SAME),
    ("eval", "--json inside --save-logits", lambda w, b, r: ["eval", str(w["ckpt"]), "--save-logits", str(w["d"] / "new_logits"), "--json", str(w["d"] / "new_logits" / "m.json")], "overlap"),
    # iif predict
    ("predict", "image (equal)", lambda w, b, r: ["predict", str(w["ckpt"]), str(w["img"]), "--out", str(w["img"])], "the image input"),
    ("predict", "image (symlink)", lambda w, b, r: ["predict", str(w["ckpt"]), str(w["img"]), "--out", str(w["d"] / "link_img")], "the image input"),
    ("predict", "image folder (inside)", lambda w, b, r: ["predict", str(w["ckpt"]), str(w["tree"] / "test"), "--out", str(w["tree"] / "test" / "p.csv")], "lies inside"),
    ("predict", "checkpoint (equal)", lambda w, b, r: ["predict", str(w["ckpt"]), str(w["img"]), "--out", str(w["ckpt"])], "the checkpoint"),
    ("predict", "run's config.yaml", lambda w, b, r: ["predict", str(w["run"]), str(w["img"]), "--out", str(w["run"] / "config.yaml")], "config.yaml"),
    # iif weights
    ("weights", "counts json (equal)", lambda w, b, r: ["weights", str(w["counts"]), "--output", str(w["counts"])], "SOURCE"),
    ("weights", "counts json (symlink)", lambda w, b, r: ["weights", str(w["counts"]), "--output", str(w["d"] / "link_counts")], "SOURCE"),
    ("weights", "image folder (inside)", lambda w, b, r: ["weights", str(w["tree"]), "--output", str(w["tree"] / "w.csv")], "lies inside"),
    ("weights", "logits folder's counts (equal)", lambda w, b, r: ["weights", str(w["logits"] / "counts.json"), "--output", str(w["logits"] / "counts.json")], "SOURCE"),
    # iif bench
    ("bench", "config file (contains)", lambda w, b, r: ["bench", "--config", str(w["cfg"]), "--quick", "--out", str(w["cfgdir"]), "--force"], "--config"),
    ("bench", "data root (inside)", lambda w, b, r: ["bench", "--config", "folder", f"data.root={w['tree']}", "--quick", "--out", str(w["tree"] / "b")], "data.root"),
    ("bench", "another command's output (--force)", lambda w, b, r: ["bench", "--quick", "--out", str(w["logits"]), "--force"], SAME),
    ("bench", "a training run (--force)", lambda w, b, r: ["bench", "--quick", "--out", str(w["run"]), "--force"], SAME),
    # iif det-data
    ("det-data", "--source-root (equal)", lambda w, b, r: ["det-data", "--out", str(w["src"]), "--source-root", str(w["src"])], "--source-root"),
    ("det-data", "--source-root (inside)", lambda w, b, r: ["det-data", "--out", str(w["src"] / "bench"), "--source-root", str(w["src"])], "lies inside"),
    ("det-data", "a training run (--force)", lambda w, b, r: ["det-data", "--out", str(w["run"]), "--force"], SAME),
    # iif det-bench
    ("det-bench", "--data (equal)", lambda w, b, r: ["det-bench", "--data", str(b), "--out", str(b), "--force"], "--data"),
    ("det-bench", "--data (inside)", lambda w, b, r: ["det-bench", "--data", str(b), "--out", str(b / "out")], "lies inside"),
    ("det-bench", "--data (a/../b)", lambda w, b, r: ["det-bench", "--data", str(b), "--out", str(b / "images" / ".." / "annotations")], "lies inside"),
    ("det-bench", "data.val_images given as KEY=VALUE (inside)", lambda w, b, r: ["det-bench", "--quick", *_explicit(b), "--out", str(b / "images" / "val" / "o")], "data.val_images"),
    ("det-bench", "another command's output (--force)", lambda w, b, r: ["det-bench", "--data", str(b), "--out", str(w["detdata"]), "--force"], SAME),
    # iif det-train
    ("det-train", "data.root (equal, --force)", lambda w, b, r: ["det-train", "det_bench_softmax", f"data.root={b}", *DET_TINY, "--out", str(b), "--force"], "data.root"),
    ("det-train", "data.root (inside)", lambda w, b, r: ["det-train", "det_bench_softmax", f"data.root={b}", *DET_TINY, "--out", str(b / "run")], "lies inside"),
    ("det-train", "data.train_images (equal)", lambda w, b, r: ["det-train", "det_bench_softmax", *_explicit(b), *DET_TINY, "--out", str(b / "images" / "train")], "data.train_images"),
    ("det-train", "annotation jsons (contains)", lambda w, b, r: ["det-train", "det_bench_softmax", *_explicit(b), *DET_TINY, "--out", str(b / "annotations"), "--force"], "data.train_json"),
    ("det-train", "model.checkpoint (contains, --force)", lambda w, b, r: ["det-train", "det_bench_softmax", f"data.root={b}", *DET_TINY, f"model.checkpoint={r / 'last.pt'}", "--out", str(r), "--force"], "model.checkpoint"),
    ("det-train", "another command's output (--resume)", lambda w, b, r: ["det-train", "det_bench_softmax", f"data.root={b}", *DET_TINY, "--out", str(w["logits"]), "--resume"], "eval-logits"),
    ("det-train", "another command's output (--force)", lambda w, b, r: ["det-train", "det_bench_softmax", f"data.root={b}", *DET_TINY, "--out", str(w["detdata"]), "--force"], SAME),
    # iif det-eval
    ("det-eval", "checkpoint (--out equal)", lambda w, b, r: ["det-eval", str(r), "--out", str(r / "last.pt")], "the checkpoint"),
    ("det-eval", "run's config (--detections equal)", lambda w, b, r: ["det-eval", str(r), "--detections", str(r / "config.yaml")], "config"),
    ("det-eval", "val json being scored (--detections)", lambda w, b, r: ["det-eval", str(r), "--detections", str(b / "annotations" / "val.json")], "data.root"),
    ("det-eval", "--data (--out inside)", lambda w, b, r: ["det-eval", str(r), "--data", str(b), "--out", str(b / "m.json")], "--data"),
    ("det-eval", "run's config (--out via symlink)", lambda w, b, r: ["det-eval", str(r / "last.pt"), "--out", str(r.parent / "link_detcfg")], "config"),
    ("det-eval", "--out equals --detections", lambda w, b, r: ["det-eval", str(r), "--out", str(r.parent / "x.json"), "--detections", str(r.parent / "x.json")], "overlap"),
]


def _explicit(b: Path) -> list[str]:
    return [f"data.train_json={b / 'annotations' / 'train.json'}", f"data.train_images={b / 'images' / 'train'}",
            f"data.val_json={b / 'annotations' / 'val.json'}", f"data.val_images={b / 'images' / 'val'}"]


@pytest.mark.parametrize("command, kind, argv, names", CASES, ids=[f"{c}: {k}" for c, k, _, _ in CASES])
def test_output_over_an_input_is_refused(command, kind, argv, names, ws, bench, request, capsys):
    r = None
    if command == "det-eval" or "model.checkpoint" in kind:
        r = request.getfixturevalue("detrun")
        link = r.parent / "link_detcfg"
        if not os.path.lexists(link):
            os.symlink(r / "config.yaml", link)
    roots = [ws["d"], bench] + ([r.parent] if r is not None else [])
    line = _refused(argv(ws, bench, r), capsys, *roots)
    assert names in line, line
    assert "choose" in line.lower() or "give each output" in line  # the fix is named


def test_the_table_covers_every_command_with_an_output_option():
    assert len(CASES) >= 40
    assert {c for c, *_ in CASES} == {"train", "eval", "predict", "weights", "bench", "det-data", "det-bench",
                                      "det-train", "det-eval"}  # stats and posthoc write no file


# --------------------------------------------------------------------------------------------- the rule itself


def test_refuse_overlap_rule(tmp_path):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (tmp_path / "c.pt").write_bytes(b"x")
    ok = [({"--out": tmp_path / "new"}, {"data.root": data, "ckpt": tmp_path / "c.pt"}),
          ({"--out": tmp_path / "runs" / "x"}, {"data.root": data}),
          ({"--out": tmp_path / "datax"}, {"data.root": data}),  # a sibling sharing a prefix is not inside
          ({"--json": tmp_path / "r" / "e.json"}, {}),
          ({"--out": None}, {"data.root": data})]
    for outs, ins in ok:
        refuse_overlap(outs, ins)
    # new files inside a run folder: allowed; the folder itself and its checkpoint: refused
    refuse_overlap({"--json": tmp_path / "e.json"}, {"the checkpoint": tmp_path / "c.pt"}, run_folders={"run": tmp_path})
    for outs, ins, runs in [({"--out": data / "sub"}, {"data.root": data}, None),
                            ({"--out": tmp_path}, {"data.root": data}, None),
                            ({"--out": tmp_path / "c.pt"}, {"ckpt": tmp_path / "c.pt"}, None),
                            ({"--out": tmp_path}, {}, {"run": tmp_path}),
                            ({"--a": tmp_path / "x", "--b": tmp_path / "x" / "y"}, {}, None)]:
        with pytest.raises(IIFError):
            refuse_overlap(outs, ins, run_folders=runs)


# --------------------------------------------------------------------------------------------- symlinked --out


def test_a_symlinked_out_is_refused_even_when_it_points_at_no_input(tmp_path, capsys):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    for argv in (["train", "digits_lt_e2e", *TINY, "--out", str(tmp_path / "link"), "--quiet"],
                 ["bench", "--quick", "--out", str(tmp_path / "link")]):
        line = _refused(argv, capsys, tmp_path)
        assert "symbolic link" in line
    assert os.listdir(target) == []


# --------------------------------------------------------------------------------------------- --force and --resume


def test_force_and_resume_only_over_the_same_command(ws, tmp_path, capsys):
    # an eval --save-logits output may be replaced by eval --save-logits --force, never by another command
    line = _refused(["train", "digits_lt_e2e", *TINY, "--out", str(ws["logits"]), "--resume", "--quiet"], capsys, ws["d"])
    assert "eval-logits" in line and "not a train run" in line
    assert read_marker(ws["logits"])["command"] == "eval-logits"
    copy = tmp_path / "logits"
    import shutil

    shutil.copytree(ws["logits"], copy)
    assert main(["eval", str(ws["ckpt"]), "--save-logits", str(copy), "--force", "--json", str(tmp_path / "e.json")]) == 0
    assert read_marker(copy)["command"] == "eval-logits" and (copy / "manifest.json").is_file()


# --------------------------------------------------------------------------------------------- the swap's re-check


def _user_folder(path: Path) -> dict:
    if path.exists() or path.is_symlink():
        import shutil

        shutil.rmtree(path)
    path.mkdir()
    (path / "mine.txt").write_text("user data")
    return _state(path)


def test_train_force_swap_rechecks_the_destination(tmp_path, monkeypatch):
    """A user folder put under --out after staging, before the swap: refused, kept, the new run kept beside."""
    out = tmp_path / "run"
    cfg = load_config("digits_lt_e2e", TINY)
    fit(cfg, out_dir=out)
    real = OR._swap_into_place
    seen = {}

    def swap(staging, path):  # the moment between the re-check and the swap must never be reached
        seen["swapped"] = True
        return real(staging, path)

    orig_marker = OR.write_marker

    def marker(folder, command, **extra):
        m = orig_marker(folder, command, **extra)
        if extra.get("complete") and Path(folder).name.startswith(".run.iif-stage-"):
            seen["user"] = _user_folder(out)  # the user's folder appears as the run finishes
        return m

    monkeypatch.setattr(OR, "_swap_into_place", swap)  # both looked up by run_folder.finish_run_folder
    monkeypatch.setattr(OR, "write_marker", marker)
    with pytest.raises(IIFError, match="iif did not write.*nothing was replaced.*finished output stays in"):
        fit(load_config("digits_lt_e2e", TINY), out_dir=out, force=True)
    assert "swapped" not in seen and _state(out) == seen["user"]
    staged = [p for p in tmp_path.iterdir() if p.name.startswith(".run.iif-stage-")]
    assert len(staged) == 1 and (staged[0] / "last.pt").is_file()  # the finished run is kept, not lost


def _in_child(fn, kill_at: int | None = None, trace: Path | None = None) -> int:
    """Run ``fn`` in a forked child with the fault hook armed; the child's wait status."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 98
        try:
            fd = os.open(os.devnull, os.O_WRONLY)
            os.dup2(fd, 1), os.dup2(fd, 2)
            OA._fault_steps = 0
            for key, value in (("IIF_FAULT_KILL_AT", kill_at), ("IIF_FAULT_TRACE", trace)):
                os.environ.pop(key, None)
                if value is not None:
                    os.environ[key] = str(value)
            code = int(fn() or 0)
        except BaseException:  # noqa: BLE001
            code = 97
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status


def test_sigkill_before_the_force_swap_then_a_user_folder_then_resume(tmp_path):
    """Killed just before its swap, a --force run is resumed after the user put their own folder under
    --out: the resumed run finishes beside it and moves nothing."""
    out = tmp_path / "run"
    fit(load_config("digits_lt_e2e", TINY), out_dir=out)

    def forced():
        fit(load_config("digits_lt_e2e", TINY), out_dir=out, force=True)

    trace = tmp_path / "trace.txt"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    import shutil

    shutil.copytree(out, scratch / "run")
    pid_status = _in_child(lambda: fit(load_config("digits_lt_e2e", TINY), out_dir=scratch / "run", force=True) and 0,
                           trace=trace)
    assert os.WIFEXITED(pid_status) and os.WEXITSTATUS(pid_status) == 0
    steps = trace.read_text().splitlines()
    swap = next(i for i, s in enumerate(steps, 1) if s.split(" ", 1)[1].startswith("exchange"))
    status = _in_child(forced, kill_at=swap)  # killed at the swap step, before exchanging
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert read_marker(out)["complete"] is True  # the old run is still in place
    user = _user_folder(out)
    with pytest.raises(IIFError, match="nothing was replaced"):
        fit(load_config("digits_lt_e2e", TINY), out_dir=out, resume=True)
    assert _state(out) == user
    staged = [p for p in tmp_path.iterdir() if p.name.startswith(".run.iif-stage-")]
    assert len(staged) == 1 and read_marker(staged[0])["complete"] is True


def test_det_train_force_swap_rechecks_the_destination(bench, detrun, tmp_path, monkeypatch):
    out = tmp_path / "detrun"
    import shutil

    shutil.copytree(detrun, out)
    real_finish = O.finish_run_folder
    seen = {}

    def finish(work, path, **kw):
        seen["user"] = _user_folder(Path(path))  # the user's folder appears as the run finishes
        return real_finish(work, path, **kw)

    monkeypatch.setattr(O, "finish_run_folder", finish)
    from iif.detection.config import load_detection_config
    from iif.detection.runs import train_from_config

    cfg = load_detection_config("det_bench_softmax", [f"data.root={bench}", *DET_TINY])
    with pytest.raises(IIFError, match="nothing was replaced"):
        train_from_config(cfg, out, force=True, log=lambda s: None)
    assert _state(out) == seen["user"]


# --------------------------------------------------------------------------------------------- failed starts


def test_failed_train_start_leaves_nothing(tmp_path, monkeypatch, capsys):
    """Bad input found in the first epoch, after config.yaml was written: the folder goes with it."""
    import iif.train.engine as E

    def boom(run, epoch):
        assert (run.out / "config.yaml").is_file()  # the run had started writing
        raise IIFError("bad input found in the first epoch (test)")

    monkeypatch.setattr(E, "_train_epoch", boom)
    out = tmp_path / "run"
    assert main(["train", "digits_lt_e2e", *TINY, "--out", str(out), "--quiet"]) == 2
    assert "first epoch" in capsys.readouterr().err
    assert not out.exists()  # a rerun needs neither --force nor --resume


def test_failed_det_train_start_leaves_nothing_and_refusals_name_resume(bench, tmp_path, monkeypatch, capsys):
    import iif.detection.engine as E

    def boom(*a, **k):
        raise IIFError("stopped in the first step (test)")

    monkeypatch.setattr(E, "train_detector", boom)
    out = tmp_path / "detrun"
    argv = ["det-train", "det_bench_softmax", f"data.root={bench}", *DET_TINY, "--out", str(out), "--quiet"]
    assert main(argv) == 2 and "first step" in capsys.readouterr().err
    assert not out.exists()  # nothing a rerun would have to --force
    out.mkdir()
    (out / "config.yaml").write_text("x: 1\n")
    write_marker(out, "det-train", complete=False)
    line = _refused(argv, capsys, out)
    assert "--resume" in line and "--force" in line


# --------------------------------------------------------------------------------------------- the exception


def test_new_files_inside_the_checkpoints_run_folder_are_allowed(ws, tmp_path, capsys):
    """The documented exception: iif eval RUN writes RUN/eval_test.json; predict may write into RUN too."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(ws["run"], run)
    before = _state(run)
    assert main(["eval", str(run)]) == 0
    assert (run / "eval_test.json").is_file()
    assert main(["predict", str(run), str(ws["img"]), "--out", str(run / "pred.csv")]) == 0
    after = _state(run)
    assert {k: v for k, v in after.items() if not k.endswith(("eval_test.json", "pred.csv")) and k != str(run)} == \
        {k: v for k, v in before.items() if k != str(run)}
    assert MARKER in os.listdir(run)
