"""Every malformed input to every command ends in exactly one stderr line and exit status 2, and changes nothing.

Table-driven: each case is an ``iif`` command line (``{d}`` is a folder of prepared bad inputs, also the
working directory) run in-process through :func:`iif.cli.main`. For each case the folder is snapshotted
(path, size, mtime) before and after: no output may appear and no input may change.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import zlib

import numpy as np
import pytest
import torch

from iif.cli import EXTRAS, error_line, main
from iif.errors import IIFError


def _png(path, w=4, h=4) -> None:
    """A valid RGB PNG written by hand (no PIL), so the fixture is independent of the checker."""
    raw = b"".join(b"\x00" + bytes([40, 80, 120] * w) for _ in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    with open(path, "wb") as f:
        f.write(data)


def _write(path, data) -> None:
    with open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad_inputs")
    w = lambda name, data: _write(d / name, data)  # noqa: E731
    w("big_label.txt", "99999999999999999999\n")
    w("billion_label.lst", "a.jpg 5000000000\nb.jpg 1\n")
    w("neg_label.txt", "3\n-1\n")
    w("latin1.lst", b"a.jpg 1\n\xe9t\xe9.jpg 2\n")
    w("latin1.json", b'{"categories": [{"id": 1, "name": "caf\xe9"}]}')
    w("truncated.json", '{"categories": [{"id": 1')
    w("list_top.json", "[1, -2]")  # a JSON list of counts is a source; a negative count is not
    freq = {"format": "iif.ClassFrequency", "version": 1, "task": "classification", "num_images": 3,
            "num_instances": 3, "image_counts": [2, 1], "object_counts": [2, 1]}
    w("counts_version.json", json.dumps({**freq, "version": "abc"}))
    w("counts_strings.json", json.dumps({**freq, "image_counts": ["a", 1]}))
    w("counts_numimg.json", json.dumps({**freq, "num_images": "x"}))
    w("counts_names.json", json.dumps({**freq, "class_names": 5}))
    w("counts_groups.json", json.dumps({**freq, "groups": 7}))
    w("counts_float_big.json", json.dumps({**freq, "image_counts": [1e300, 1]}))
    w("coco_bad.json", json.dumps({"categories": {"id": 1}, "annotations": []}))
    w("coco_id_2_70.json", json.dumps({"categories": [{"id": 1}], "images": [{"id": 1}],
                                       "annotations": [{"image_id": 1, "category_id": 2**70}]}))
    w("nested.json", "[" * 100_000 + "]" * 100_000)
    np.save(d / "label_huge.npy", np.array([2**62, 0]))
    np.save(d / "label_float.npy", np.array([1e300, 0.0]))
    np.save(d / "label_str.npy", np.array(["a", "b", "c", "d"]))
    np.save(d / "label_2d.npy", np.zeros((2, 2), dtype=np.int64))
    np.save(d / "object.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    np.savez(d / "arch.npz", x=np.zeros(3))
    torch.save({"w": torch.zeros(2)}, d / "weights.pt")
    w("count_huge.csv", "img_freq,instance_freq\n99999999999999999999,3\n")
    w("raw_huge.csv", "img_freq,instance_freq,raw\n5,5,1e308\n")
    w("no_columns.csv", "a,b\n1,2\n")
    w("empty.txt", "")
    (d / "empty_dir").mkdir()
    (d / "a_folder").mkdir()
    w("a_file", "not a folder")
    np.save(d / "logits.npy", np.zeros((4, 3)))
    np.save(d / "logits_nan.npy", np.array([[0.0, np.nan, 1.0]] * 4))
    np.save(d / "logits_1d.npy", np.zeros(4))
    np.save(d / "labels.npy", np.array([0, 1, 2, 0]))
    np.save(d / "labels_frac.npy", np.array([0.5, 1, 2, 0]))
    np.save(d / "labels_huge.npy", np.array([1e300, 1, 2, 0]))
    np.save(d / "labels_out.npy", np.array([0, 1, 7, 0]))
    np.save(d / "labels_3.npy", np.array([0, 1, 2]))
    w("counts.json", "[10, 5, 2]")
    w("counts_2.json", "[10, 5]")
    w("counts_huge.json", "[1e30, 5, 2]")
    w("counts_neg.json", "[10, -5, 2]")
    w("counts_nested.json", "[[1, 2], [3]]")
    w("counts_null.json", "null")
    w("latin1.yaml", b"optim:\n  lr: 0.1 # caf\xe9\n")
    w("broken.yaml", "optim: [\n")
    w("list.yaml", "- 1\n- 2\n")
    w("deep.yaml", "optim: " + "[" * 50_000 + "]" * 50_000 + "\n")
    # An ImageFolder tree with 3 bad files among good PNGs: truncated, empty, text named .jpg.
    tree = d / "tree"
    for k in range(3):
        (tree / f"c{k}").mkdir(parents=True)
        for i in range(6):
            _png(tree / f"c{k}" / f"{i}.png")
    good = (tree / "c0" / "0.png").read_bytes()
    _write(tree / "c0" / "trunc.png", good[: len(good) // 2])
    _write(tree / "c1" / "empty.png", b"")
    _write(tree / "c2" / "text.jpg", "this is not an image\n")
    # ImageNet-LT style list datasets whose train list escapes the root, is absolute, is latin-1, or has a
    # label in the billions.
    for name, line in (("lt_up", "../tree/c0/0.png 0"), ("lt_abs", f"{tree / 'c0' / '0.png'} 0"),
                       ("lt_latin", b"caf\xe9.png 0"), ("lt_big", "c0/0.png 5000000000")):
        root = d / name
        root.mkdir()
        _png(root / "ok.png")
        head = line if isinstance(line, bytes) else line.encode()
        _write(root / "ImageNet_LT_train.txt", b"ok.png 0\n" + head + b"\n")
        for split in ("val", "test"):
            _write(root / f"ImageNet_LT_{split}.txt", "ok.png 0\n")
    return d


def T(*overrides: str) -> list[str]:
    """``iif train digits_lt_e2e OVERRIDES --quiet --out {d}/train_out`` (overrides before the options)."""
    return ["train", "digits_lt_e2e", *overrides, "--quiet", "--out", "{d}/train_out"]



P = ["posthoc", "--logits", "{d}/logits.npy", "--labels", "{d}/labels.npy", "--counts", "{d}/counts.json"]
LT = ["data.name=imagenet-lt", "data.options.num_classes=3"]

CASES = {
    # iif stats
    "stats/missing": ["stats", "{d}/nope.txt"],
    "stats/label-too-large-for-int64": ["stats", "{d}/big_label.txt"],
    "stats/label-in-billions": ["stats", "{d}/billion_label.lst"],
    "stats/negative-label": ["stats", "{d}/neg_label.txt"],
    "stats/latin1-list": ["stats", "{d}/latin1.lst"],
    "stats/latin1-json": ["stats", "{d}/latin1.json"],
    "stats/truncated-json": ["stats", "{d}/truncated.json"],
    "stats/json-list": ["stats", "{d}/list_top.json"],
    "stats/counts-version-string": ["stats", "{d}/counts_version.json"],
    "stats/counts-strings": ["stats", "{d}/counts_strings.json"],
    "stats/counts-num-images-string": ["stats", "{d}/counts_numimg.json"],
    "stats/counts-names-int": ["stats", "{d}/counts_names.json"],
    "stats/counts-groups-int": ["stats", "{d}/counts_groups.json"],
    "stats/counts-float-huge": ["stats", "{d}/counts_float_big.json"],
    "stats/coco-categories-dict": ["stats", "{d}/coco_bad.json"],
    "stats/coco-id-beyond-int64": ["stats", "{d}/coco_id_2_70.json"],
    "stats/json-nested-100k-deep": ["stats", "{d}/nested.json"],
    "stats/npy-label-2**62": ["stats", "{d}/label_huge.npy"],
    "stats/npy-label-1e300": ["stats", "{d}/label_float.npy"],
    "stats/npy-strings": ["stats", "{d}/label_str.npy"],
    "stats/npy-2d": ["stats", "{d}/label_2d.npy"],
    "stats/npy-pickle": ["stats", "{d}/object.npy"],
    "stats/npz": ["stats", "{d}/arch.npz"],
    "stats/pt": ["stats", "{d}/weights.pt"],
    "stats/csv-count-too-large": ["stats", "{d}/count_huge.csv"],
    "stats/csv-raw-overflow": ["stats", "{d}/raw_huge.csv"],
    "stats/csv-no-columns": ["stats", "{d}/no_columns.csv"],
    "stats/empty-file": ["stats", "{d}/empty.txt"],
    "stats/folder-without-classes": ["stats", "{d}/empty_dir"],
    "stats/negative-many": ["stats", "{d}/labels.npy", "--many", "-1"],
    "stats/few-above-many": ["stats", "{d}/labels.npy", "--many", "5", "--few", "10"],
    # iif weights
    "weights/unknown-variant": ["weights", "{d}/labels.npy", "--variant", "nope"],
    "weights/total-nan": ["weights", "{d}/labels.npy", "--total", "nan"],
    "weights/total-negative": ["weights", "{d}/labels.npy", "--total", "-5"],
    "weights/total-overflow": ["weights", "{d}/labels.npy", "--total", "1e400"],
    "weights/total-word": ["weights", "{d}/labels.npy", "--total", "abc"],
    "weights/norm-zero": ["weights", "{d}/labels.npy", "--norm", "0"],
    "weights/output-is-folder": ["weights", "{d}/labels.npy", "--output", "{d}/a_folder"],
    "weights/output-folder-missing": ["weights", "{d}/labels.npy", "--output", "{d}/nowhere/w.csv"],
    "weights/output-under-file": ["weights", "{d}/labels.npy", "--output", "{d}/a_file/w.csv"],
    "weights/label-too-large": ["weights", "{d}/big_label.txt"],
    "weights/latin1-list": ["weights", "{d}/latin1.lst", "--output", "{d}/w_out.csv"],
    # iif posthoc
    "posthoc/logits-npz": [*P[:1], "--logits", "{d}/arch.npz", *P[3:]],
    "posthoc/logits-pt": [*P[:1], "--logits", "{d}/weights.pt", *P[3:]],
    "posthoc/logits-strings": [*P[:1], "--logits", "{d}/label_str.npy", *P[3:]],
    "posthoc/logits-nan": [*P[:1], "--logits", "{d}/logits_nan.npy", *P[3:]],
    "posthoc/logits-1d": [*P[:1], "--logits", "{d}/logits_1d.npy", *P[3:]],
    "posthoc/logits-missing": [*P[:1], "--logits", "{d}/nope.npy", *P[3:]],
    "posthoc/logits-folder": [*P[:1], "--logits", "{d}/a_folder", *P[3:]],
    "posthoc/labels-strings": [*P[:3], "--labels", "{d}/label_str.npy", *P[5:]],
    "posthoc/labels-fractional": [*P[:3], "--labels", "{d}/labels_frac.npy", *P[5:]],
    "posthoc/labels-1e300": [*P[:3], "--labels", "{d}/labels_huge.npy", *P[5:]],
    "posthoc/labels-out-of-range": [*P[:3], "--labels", "{d}/labels_out.npy", *P[5:]],
    "posthoc/labels-wrong-length": [*P[:3], "--labels", "{d}/labels_3.npy", *P[5:]],
    "posthoc/counts-wrong-length": [*P[:5], "--counts", "{d}/counts_2.json"],
    "posthoc/counts-1e30": [*P[:5], "--counts", "{d}/counts_huge.json"],
    "posthoc/counts-negative": [*P[:5], "--counts", "{d}/counts_neg.json"],
    "posthoc/counts-nested": [*P[:5], "--counts", "{d}/counts_nested.json"],
    "posthoc/counts-null": [*P[:5], "--counts", "{d}/counts_null.json"],
    "posthoc/counts-latin1": [*P[:5], "--counts", "{d}/latin1.lst"],
    "posthoc/counts-truncated-json": [*P[:5], "--counts", "{d}/truncated.json"],
    "posthoc/counts-nested-100k-deep": [*P[:5], "--counts", "{d}/nested.json"],
    "posthoc/counts-saved-wrong-types": [*P[:5], "--counts", "{d}/counts_names.json"],
    "posthoc/val-logits-alone": [*P, "--val-logits", "{d}/logits.npy"],
    "posthoc/few-above-many": [*P, "--many", "5", "--few", "10"],
    # iif train: config ranges (the first six are the reproductions)
    "train/epochs-0": T("schedule.epochs=0"),
    "train/epochs-negative": T("schedule.epochs=-3"),
    "train/lr-negative": T("optim.lr=-0.1"),
    "train/lr-overflow": T("optim.lr=1e400"),
    "train/weight-decay-negative": T("optim.weight_decay=-1e-4"),
    "train/momentum-above-1": T("optim.momentum=1.5"),
    "train/mixup-negative": T("data.mixup_alpha=-0.2"),
    "train/batch-size-0": T("optim.batch_size=0"),
    "train/workers-negative": T("data.num_workers=-1"),
    "train/imbalance-below-1": T("data.imbalance_ratio=0.5"),
    "train/label-smoothing-1": T("loss.label_smoothing=1.0"),
    "train/seed-beyond-int64": T("data.seed=99999999999999999999999"),
    "train/device-unknown": T("runtime.device=foo"),
    "train/amp-unknown": T("runtime.amp=fp8"),
    "train/eval-few-above-many": T("eval.many=5", "eval.few=10"),
    "train/warmup-beyond-epochs": T("schedule.epochs=2", "schedule.warmup_epochs=5"),
    "train/decoupled-momentum-1": T("decoupled.momentum=1"),
    "train/nesterov-without-momentum": T("optim.nesterov=true", "optim.momentum=0"),
    "train/unknown-key": T("optim.lrr=0.1"),
    "train/milestone-fraction": T("schedule.milestones=[0.5]"),
    "train/adjuster-infinite-tau": T("strategy.name=posthoc", "posthoc.adjusters=[la:inf]"),
    "train/options-not-a-mapping": T("data.options=5"),
    "train/override-bad-yaml": T("schedule.milestones=[3,"),
    "train/latin1-config": ["train", "{d}/latin1.yaml", "--quiet", "--out", "{d}/train_out"],
    "train/broken-yaml": ["train", "{d}/broken.yaml", "--quiet", "--out", "{d}/train_out"],
    "train/config-is-list": ["train", "{d}/list.yaml", "--quiet", "--out", "{d}/train_out"],
    "train/no-config": ["train", "--quiet"],
    "train/yaml-nested-50k-deep": ["train", "{d}/deep.yaml", "--quiet", "--out", "{d}/train_out"],
    "train/out-is-file": ["train", "digits_lt_e2e", "--quiet", "--out", "{d}/a_file"],
    # iif train: data checked before training
    "train/folder-bad-images": T("data.name=folder", "data.root={d}/tree", "data.imbalance_ratio=null"),
    "train/list-path-escapes-root": T(*LT, "data.root={d}/lt_up"),
    "train/list-absolute-path": T(*LT, "data.root={d}/lt_abs"),
    "train/list-latin1": T(*LT, "data.root={d}/lt_latin"),
    "train/list-label-in-billions": T(*LT, "data.root={d}/lt_big"),
    # iif eval
    "eval/text-file": ["eval", "{d}/latin1.lst"],
    "eval/folder-without-checkpoint": ["eval", "{d}/empty_dir"],
    "eval/missing": ["eval", "{d}/nope.pt"],
    "eval/weights-only-pt": ["eval", "{d}/weights.pt"],
    "eval/batch-size-0": ["eval", "{d}/weights.pt", "--batch-size", "0"],
    "eval/json-under-a-file": ["eval", "{d}/weights.pt", "--json", "{d}/a_file/m.json"],
    # iif bench
    "bench/seeds-0": ["bench", "--seeds", "0", "--out", "{d}/bench_out"],
    "bench/heads-unknown": ["bench", "--heads", "nope", "--out", "{d}/bench_out"],
    "bench/dataset-unknown": ["bench", "--dataset", "nope", "--out", "{d}/bench_out"],
    "bench/out-is-file": ["bench", "--quick", "--out", "{d}/a_file"],
    "bench/epochs-0": ["bench", "schedule.epochs=0", "--quick", "--out", "{d}/bench_out"],
    "bench/threads-0": ["bench", "--threads", "0", "--out", "{d}/bench_out"],
    "bench/many-negative": ["bench", "--many", "-1", "--out", "{d}/bench_out"],
    "bench/device-unknown": ["bench", "--device", "foo", "--quick", "--out", "{d}/bench_out"],
    "bench/lr-negative": ["bench", "optim.lr=-1", "--quick", "--out", "{d}/bench_out"],
}

# What the one line must mention, where a case's point is a specific diagnosis.
EXPECT = {
    "train/epochs-0": "'schedule.epochs'",
    "train/momentum-above-1": "'optim.momentum'",
    "train/folder-bad-images": "3 of 21 image file(s)",
    "train/list-path-escapes-root": "leaves the image root",
    "train/list-absolute-path": "leaves the image root",
    "train/list-latin1": "not UTF-8",
    "stats/label-in-billions": "10,000,000",
    "stats/npy-label-2**62": "10,000,000",
    "stats/coco-id-beyond-int64": "category_id",
    "posthoc/logits-pt": "2-D array",  # a .pt of tensors is read now; this one holds a 1-D tensor
    "bench/epochs-0": "'schedule.epochs'",
    "eval/batch-size-0": "--batch-size",
    "train/milestone-fraction": "'schedule.milestones'",
}


def _snapshot(root) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            out[os.path.relpath(p, root)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture
def isolated(inputs, tmp_path, monkeypatch):
    monkeypatch.chdir(inputs)
    monkeypatch.setenv("IIF_CACHE_DIR", str(tmp_path / "cache"))  # the image-check cache lives outside {d}
    return inputs


def test_at_least_sixty_cases_over_every_command():
    assert len(CASES) >= 60
    assert {c[0] for c in CASES.values()} == {"stats", "weights", "posthoc", "train", "eval", "bench"}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_one_line_and_exit_2(case, isolated, capsys):
    d = isolated
    argv = [a.replace("{d}", str(d)) for a in CASES[case]]
    before = _snapshot(d)
    rc = main(argv)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert rc == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"iif {argv[0]}: error: "), err
    assert "Traceback" not in err
    if case in EXPECT:
        assert EXPECT[case] in lines[0], lines[0]
    assert _snapshot(d) == before, "the command created or changed files"


def test_missing_extra_names_the_pip_install(isolated, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml now raises ModuleNotFoundError(name="yaml")
    before = _snapshot(isolated)
    rc = main(["train", "digits_lt_e2e", "--quiet", "--out", str(isolated / "train_out")])
    lines = capsys.readouterr().err.splitlines()
    assert rc == 2 and len(lines) == 1
    assert lines[0].endswith('pip install "iif[train]"'), lines[0]
    assert _snapshot(isolated) == before


@pytest.mark.parametrize("module,extra", [("torchvision", "train"), ("matplotlib", "train"),
                                          ("pycocotools", "coco"), ("faster_coco_eval", "detection"),
                                          ("tidecv", "detection")])
def test_error_line_of_each_missing_extra(module, extra):
    assert EXTRAS[module] == extra
    line = error_line(ModuleNotFoundError(f"No module named '{module}'", name=f"{module}.sub"))
    assert line.endswith(f'pip install "iif[{extra}]"') and "\n" not in line


def test_error_line_flattens_every_boundary_error():
    cases = [IIFError("a\nb"), FileNotFoundError(2, "No such file or directory", "x.txt"),
             OverflowError("int too big"), MemoryError(), json.JSONDecodeError("Expecting value", "{\n]", 2),
             UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")]
    lines = [error_line(e) for e in cases]
    assert lines[0] == "a b"
    assert lines[1].startswith("x.txt: No such file or directory")
    assert "line 2 column 1" in lines[4]
    assert "not UTF-8" in lines[5] and "byte 0" in lines[5]
    assert all("\n" not in line and line for line in lines)


def test_labels_and_counts_are_bounded_in_the_library():
    from iif import ClassFrequency
    from iif.frequency import MAX_CLASSES

    with pytest.raises(IIFError, match="10,000,000"):
        ClassFrequency.from_labels(np.array([MAX_CLASSES]))  # would otherwise allocate 80 MB; 5e9 -> 40 GB
    assert ClassFrequency.from_labels(np.array([2, 0])).image_counts.tolist() == [1, 0, 1]
    with pytest.raises(IIFError, match="2\\*\\*53"):
        ClassFrequency([2**60, 1], [1, 1], 2, 2)


def test_image_check_reports_all_bad_files_and_caches_good_ones(tmp_path):
    from PIL import Image

    from iif.data.verify import verify_images

    good = []
    for i in range(40):
        p = tmp_path / f"g{i}.jpg"
        Image.new("RGB", (64, 48), (i, 2 * i, 3 * i)).save(p, quality=90)
        good.append(str(p))
    jpeg = (tmp_path / "g0.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(jpeg[: len(jpeg) - 200])  # header intact, scan data cut short
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "notes.png").write_text("hello")
    bad = [str(tmp_path / n) for n in ("cut.jpg", "zero.png", "notes.png")]
    cache = tmp_path / "cache"
    with pytest.raises(IIFError) as info:
        verify_images(good + bad, cache_dir=cache, show=2)
    msg = str(info.value)
    assert "3 of 43 image file(s)" in msg and "(and 1 more)" in msg and "\n" not in msg
    listing = msg.split("the full list is in ")[1].split(".txt")[0] + ".txt"
    reasons = dict(line.split("\t") for line in open(listing).read().splitlines())
    assert reasons == {bad[0]: "truncated", bad[1]: "empty file", bad[2]: "not an image PIL can read"}
    first = verify_images(good, cache_dir=cache)
    assert (first.files, first.decoded, first.cached) == (40, 0, 40)  # the good ones were cached by the failed run
    os.utime(good[3], ns=(1, 1))  # a changed mtime is decoded again
    again = verify_images(good, cache_dir=cache)
    assert (again.decoded, again.cached) == (1, 39)
    assert verify_images(good, cache=False, cache_dir=cache).decoded == 40


def test_list_paths_are_confined_to_the_root(tmp_path):
    from iif.data.lists import inside_root, validate_list

    assert inside_root("a/b.jpg", "/r") and inside_root("a/../b.jpg", "/r")
    assert not inside_root("../b.jpg", "/r") and not inside_root("a/../../b.jpg", "/r")
    assert not inside_root("/etc/passwd", "/r")
    root = tmp_path / "root"
    root.mkdir()
    _png(root / "in.png")
    _png(tmp_path / "out.png")
    (tmp_path / "l.txt").write_text(f"in.png 0\n../out.png 1\n{tmp_path / 'out.png'} 1\n")
    with pytest.raises(IIFError, match="2 bad line"):
        validate_list(str(tmp_path / "l.txt"), str(root), 2)
    samples = validate_list(str(tmp_path / "l.txt"), str(root), 2, allow_outside_root=True)
    assert [y for _, y in samples] == [0, 1, 1]


def test_installed_command_prints_one_line_and_exits_2(inputs, tmp_path):
    """The real process (``python -m iif.cli``, what the ``iif`` script runs): one stderr line, status 2."""
    import subprocess

    env = {**os.environ, "IIF_CACHE_DIR": str(tmp_path / "cache")}
    before = _snapshot(inputs)
    proc = subprocess.run([sys.executable, "-m", "iif.cli", "stats", str(inputs / "billion_label.lst")],
                          capture_output=True, text=True, cwd=inputs, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("iif stats: error: ")
    assert proc.stdout == ""
    assert _snapshot(inputs) == before
