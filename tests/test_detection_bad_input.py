"""Bad detection input through the CLI (issue 14, items 2-4): every crafted annotation, image, setting or source
file is refused before training with exit 2 and exactly one stderr line naming the problem (and no traceback),
and every file the command was given is byte-identical afterwards (sha256 before and after).

The data are a tiny COCO json pair (two 40x32 PNG images per split, two categories, polygon, RLE-string and
uncompressed-RLE masks) written per test; nothing here trains a detector except the worker-error case, which
stops at its first batch."""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from iif.cli import main, original_message
from iif.detection.data import _decode_rle_strings, rle_string_counts_ok, validate_annotations
from iif.errors import IIFError

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

H, W = 32, 40  # every image: 32 rows, 40 columns


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _split(first_image: int, first_ann: int) -> dict:
    m = np.zeros((H, W), np.uint8)
    m[4:12, 6:20] = 1
    images = [{"id": first_image + i, "file_name": f"{first_image + i}.png", "width": W, "height": H}
              for i in range(2)]
    anns = [
        {"id": first_ann, "image_id": first_image, "category_id": 1, "bbox": [2, 3, 10, 8],
         "segmentation": [[2, 3, 12, 3, 12, 11, 2, 11]], "area": 80, "iscrowd": 0},
        {"id": first_ann + 1, "image_id": first_image, "category_id": 2, "bbox": [6, 4, 14, 8],
         "segmentation": _rle(m), "area": 112, "iscrowd": 0},
        {"id": first_ann + 2, "image_id": first_image + 1, "category_id": 1, "bbox": [0, 0, 40, 32],
         "segmentation": {"size": [H, W], "counts": [0, H * W]}, "area": H * W, "iscrowd": 1},
        {"id": first_ann + 3, "image_id": first_image + 1, "category_id": 2, "bbox": [20, 10, 10, 10],
         "segmentation": [[20, 10, 30, 10, 30, 20, 20, 20]], "area": 100, "iscrowd": 0},
    ]
    return {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}]}


def _write(root: Path, train: dict | None = None, val: dict | None = None) -> Path:
    """root/annotations/instances_{train,val}2017.json and root/{train,val}2017/*.png (the COCO layout)."""
    train = train if train is not None else _split(1, 101)
    val = val if val is not None else _split(11, 201)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, ann in (("train", train), ("val", val)):
        (root / "annotations" / f"instances_{name}2017.json").write_text(json.dumps(ann))
        folder = root / f"{name}2017"
        folder.mkdir(exist_ok=True)
        for im in ann["images"]:
            if not (folder / im["file_name"]).exists():
                Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(folder / im["file_name"])
    return root


def _hashes(*roots: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for root in roots for p in sorted(Path(root).rglob("*")) if p.is_file()}


def _run(argv: list[str], capsys, *given: Path) -> str:
    """Run ``iif argv`` in process; assert exit 2, exactly one stderr line, no traceback and every file under
    ``given`` byte-identical; return that line."""
    before = _hashes(*given)
    assert before, "the test gave no files to check"
    code = main(argv)
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert code == 2, (code, out.err)
    assert len(lines) == 1, out.err
    assert "Traceback" not in out.err and "File \"" not in out.err, out.err
    assert _hashes(*given) == before
    return lines[0]


def _det_train(root: Path, out: Path, *extra: str) -> list[str]:
    return ["det-train", "det_bench_softmax", f"data.root={root}", "runtime.workers=0", *extra, "--out", str(out),
            "--quiet"]


def _edit(split: dict, ann_id: int, **changes) -> dict:
    split = copy.deepcopy(split)
    for a in split["annotations"]:
        if a["id"] == ann_id:
            for k, v in changes.items():
                if v is _DROP:
                    a.pop(k, None)
                else:
                    a[k] = v
    return split


_DROP = object()

# (train annotation 101, 102 or 104 changed as given) -> words the one line must hold, with the id named.
ANNOTATION_CASES = {
    "mask missing": (101, {"segmentation": _DROP}, "no 'segmentation'"),
    "mask null": (101, {"segmentation": None}, "no 'segmentation'"),
    "mask []": (104, {"segmentation": []}, "empty 'segmentation'"),
    "polygon NaN": (101, {"segmentation": [[2, 3, float("nan"), 3, 12, 11, 2, 11]]}, "not finite"),
    "polygon inf": (101, {"segmentation": [[2, 3, float("inf"), 3, 12, 11, 2, 11]]}, "not finite"),
    "polygon beyond float32": (101, {"segmentation": [[2, 3, 1e39, 3, 12, 11, 2, 11]]}, "not finite"),
    "polygon text": (101, {"segmentation": [[2, 3, "x", 3, 12, 11, 2, 11]]}, "not finite"),
    "polygon odd count": (101, {"segmentation": [[2, 3, 12, 3, 12, 11, 2]]}, "neither polygons nor an RLE"),
    "polygon of 4 numbers": (101, {"segmentation": [[2, 3, 12, 3]]}, "neither polygons nor an RLE"),
    "polygon outside": (101, {"segmentation": [[2, 3, 90, 3, 90, 11, 2, 11]]}, "points outside their image"),
    "RLE garbage string": (102, {"segmentation": {"size": [H, W], "counts": "garbage!!"}}, "do not decode"),
    "RLE string cut short": (102, {"segmentation": {"size": [H, W], "counts": "0T5"}}, "do not decode"),
    "RLE list short": (102, {"segmentation": {"size": [H, W], "counts": [10, 20, 30]}}, "do not decode"),
    "RLE list negative": (102, {"segmentation": {"size": [H, W], "counts": [H * W + 5, -5]}}, "do not decode"),
    "RLE size other": (102, {"segmentation": _rle(np.ones((H + 1, W), np.uint8))}, "'size' other than"),
    "RLE no counts": (102, {"segmentation": {"size": [H, W]}}, "neither polygons nor an RLE"),
    "box 1e39": (101, {"bbox": [2, 3, 1e39, 8]}, "do not fit in float32"),
    "box NaN": (101, {"bbox": [2, float("nan"), 10, 8]}, "not 4 finite numbers"),
    "box 400-digit int": (101, {"bbox": [2, 3, 10 ** 400, 8]}, "not 4 finite numbers"),
    "polygon 400-digit int": (101, {"segmentation": [[2, 3, 10 ** 400, 3, 12, 11, 2, 11]]}, "not finite"),
    "box far outside": (101, {"bbox": [500, 3, 10, 8]}, "reach outside their image"),
    "box negative corner": (101, {"bbox": [-5, 3, 10, 8]}, "reach outside their image"),
    "iscrowd no": (104, {"iscrowd": "no"}, "'iscrowd' other than 0 or 1"),
    "iscrowd 2": (104, {"iscrowd": 2}, "'iscrowd' other than 0 or 1"),
}


@pytest.mark.parametrize("case", list(ANNOTATION_CASES))
def test_det_train_refuses_bad_annotations_before_training(case, tmp_path, capsys):
    ann_id, changes, words = ANNOTATION_CASES[case]
    root = _write(tmp_path / "data", train=_edit(_split(1, 101), ann_id, **changes))
    out = tmp_path / "run"
    line = _run(_det_train(root, out), capsys, root)
    assert line.startswith("iif det-train: error: ") and "instances_train2017.json" in line, line
    assert words in line and str(ann_id) in line, line
    assert not out.exists()


@pytest.mark.parametrize("override, words", [
    ("schedule.epohcs=1", "unknown config key 'schedule.epohcs'. Did you mean 'epochs'? Valid keys in 'schedule':"),
    ("train.epochs=1", "unknown config section 'train'."),
    ("model.min_size=0", "'model.min_size' must be a whole number >= 1"),
])
def test_det_train_keys_are_checked(override, words, tmp_path, capsys):
    root = _write(tmp_path / "data")
    line = _run(_det_train(root, tmp_path / "run", override), capsys, root)
    assert words in line, line
    assert not (tmp_path / "run").exists()


def test_val_json_is_checked_as_strictly_and_with_train_in_one_line(tmp_path, capsys):
    bad_rle = {"size": [H, W], "counts": "garbage!!"}
    root = _write(tmp_path / "data", train=_edit(_split(1, 101), 101, iscrowd="no"),
                  val=_edit(_split(11, 201), 202, segmentation=bad_rle))
    line = _run(_det_train(root, tmp_path / "run"), capsys, root)
    assert "instances_train2017.json" in line and "'iscrowd' other than 0 or 1 (annotation ids 101)" in line
    assert "instances_val2017.json" in line and "do not decode" in line and "(annotation ids 202)" in line


def test_val_json_alone(tmp_path, capsys):
    root = _write(tmp_path / "data", val=_edit(_split(11, 201), 201, segmentation=None))
    line = _run(_det_train(root, tmp_path / "run"), capsys, root)
    assert "instances_val2017.json" in line and "no 'segmentation'" in line and "201" in line
    assert "instances_train2017.json" not in line


def test_every_problem_of_a_json_in_one_line(tmp_path, capsys):
    train = _edit(_split(1, 101), 101, bbox=[2, 3, 1e39, 8])
    train = _edit(train, 102, segmentation={"size": [H, W], "counts": "garbage!!"})
    train = _edit(train, 104, iscrowd="no")
    line = _run(_det_train(_write(tmp_path / "data", train=train), tmp_path / "run"), capsys, tmp_path / "data")
    assert "3 kinds of problems" in line, line
    for words in ("float32 (", "do not decode", "'iscrowd'"):
        assert words in line


def test_image_file_smaller_than_the_json_says(tmp_path, capsys):
    root = _write(tmp_path / "data")
    Image.fromarray(np.zeros((5, 7, 3), np.uint8)).save(root / "train2017" / "2.png")
    line = _run(_det_train(root, tmp_path / "run"), capsys, root)
    assert "differ in size" in line and "is 7x5, the json says 40x32" in line and "(image ids 2)" in line


def test_decompression_bomb_header(tmp_path, capsys):
    root = _write(tmp_path / "data")
    # A PNG header claiming 20000 x 20000 pixels (400 M > PIL's limit of ~89 M); nothing after it is read.
    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    head = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    (root / "train2017" / "2.png").write_bytes(head)
    line = _run(_det_train(root, tmp_path / "run"), capsys, root)
    assert "decompression-bomb limit" in line and "(image ids 2)" in line, line


def test_a_file_that_is_not_an_image(tmp_path, capsys):
    root = _write(tmp_path / "data")
    (root / "val2017" / "12.png").write_text("not an image")
    line = _run(_det_train(root, tmp_path / "run"), capsys, root)
    assert "not readable images" in line and "(image ids 12)" in line and "instances_val2017.json" in line


def test_min_size_that_cannot_fit_is_refused_with_the_estimate(tmp_path, capsys):
    root = _write(tmp_path / "data")
    line = _run(_det_train(root, tmp_path / "run", "model.min_size=100000", "model.max_size=100000"), capsys, root)
    # 40x32 images -> short side 100000, long side 125000 (padded to 125024): 8 x 3 x 100000 x 125024 x 4 B of
    # image tensor alone is 1118 GiB.
    assert "model.min_size=100000" in line and "GiB" in line and "lower model.min_size" in line, line
    need = float(line.split("needs at least ")[1].split(" GiB")[0])
    image_only = 8 * 3 * 100000 * 125024 * 4 / 1024 ** 3
    assert image_only < need < 2 * image_only


def test_det_bench_misspelt_keys_name_the_close_match(tmp_path, capsys):
    root = _write(tmp_path / "data")
    line = _run(["det-bench", "--data", str(root), "--out", str(tmp_path / "o"), "train.epohcs=1"], capsys, root)
    assert "unknown det-bench override 'train.epohcs'" in line and "Did you mean 'train.epochs'?" in line
    assert "Valid keys:" in line and "model.min_size" in line
    line = _run(["det-bench", "--data", str(root), "--out", str(tmp_path / "o"), "model.bogus=3"], capsys, root)
    assert "unknown det-bench override 'model.bogus'" in line and "train.lr" in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("override, words", [
    ("model.min_size=abc", "'model.min_size' must be a whole number"),
    ("train.lr=-1", "'train.lr' must be a positive"),
    ("train.amp=fp64", "'train.amp' is 'fp64'"),
    ("arch=maskrcnn_r9000", "'arch' is 'maskrcnn_r9000'"),
    ("hflip=3", "hflip must be true, false or null"),
    ("model.masks=false", "unknown det-bench override 'model.masks'"),
])
def test_det_bench_values_are_checked(override, words, tmp_path, capsys):
    root = _write(tmp_path / "data")
    line = _run(["det-bench", "--data", str(root), "--out", str(tmp_path / "o"), override], capsys, root)
    assert words in line, line


def test_det_bench_refuses_bad_annotations_and_sizes_that_cannot_fit(tmp_path, capsys):
    root = _write(tmp_path / "data", train=_edit(_split(1, 101), 102, segmentation={"size": [H, W], "counts": "zz"}))
    line = _run(["det-bench", "--data", str(root), "--out", str(tmp_path / "o")], capsys, root)
    assert "iif det-bench: error:" in line and "do not decode" in line and "(annotation ids 102)" in line
    good = _write(tmp_path / "good")
    line = _run(["det-bench", "--data", str(good), "--out", str(tmp_path / "o"), "model.min_size=100000",
                 "model.max_size=100000"], capsys, good)
    assert "needs at least" in line and "lower model.min_size/model.max_size" in line, line


# ------------------------------------------------------------------------------------------------ det-eval


def _fake_run(tmp_path: Path, root: Path) -> Path:
    """A det-train run folder as far as det-eval reads it before loading weights: config.yaml (of
    det_bench_softmax on ``root``) and a last.pt (these cases are all refused before it is opened)."""
    from iif.detection.config import load_detection_config
    from iif.train.config import save_config

    run = tmp_path / "run"
    run.mkdir()
    save_config(load_detection_config("det_bench_softmax", [f"data.root={root}"]), run / "config.yaml")
    (run / "last.pt").write_bytes(b"not read by these cases")
    return run


@pytest.mark.parametrize("override, words", [
    ("model.fpn_channels=64", "det-eval cannot apply model.fpn_channels"),
    ("model.arch=fasterrcnn_r10_fpn", "det-eval cannot apply model.arch"),
    ("schedule.lr=0.1", "det-eval cannot apply schedule.lr"),
    ("data.sampler=rfs", "det-eval cannot apply data.sampler"),
    ("model.bogus=3", "unknown config key 'model.bogus'"),
    ("schedule.epohcs=1", "Did you mean 'epochs'? Valid keys in 'schedule': epochs, batch_size"),
])
def test_det_eval_overrides_are_applied_or_refused(override, words, tmp_path, capsys):
    root = _write(tmp_path / "data")
    run = _fake_run(tmp_path, root)
    line = _run(["det-eval", str(run), override], capsys, root, run)
    assert words in line, line


def test_det_eval_applies_prediction_time_model_keys(tmp_path, capsys):
    # model.min_size is applied (not ignored): at 100000 it is refused by the memory estimate before any build.
    root = _write(tmp_path / "data")
    run = _fake_run(tmp_path, root)
    line = _run(["det-eval", str(run), "model.min_size=100000", "model.max_size=100000"], capsys, root, run)
    assert "evaluation with model.min_size=100000" in line and "eval.batch_size" in line, line


def test_det_eval_checks_the_json_it_scores(tmp_path, capsys):
    root = _write(tmp_path / "data")
    run = _fake_run(tmp_path, root)
    other = _write(tmp_path / "other", val=_edit(_split(11, 201), 203, iscrowd="no"))
    line = _run(["det-eval", str(run), "--data", str(other)], capsys, root, run, other)
    assert "instances_val2017.json" in line and "'iscrowd' other than 0 or 1 (annotation ids 203)" in line


def test_det_eval_names_the_problems_of_both_jsons(tmp_path, capsys):
    root = _write(tmp_path / "data")
    run = _fake_run(tmp_path, root)
    other = _write(tmp_path / "other", train=_edit(_split(1, 101), 101, bbox=[2, 3, 1e39, 8]),
                   val=_edit(_split(11, 201), 203, iscrowd="no"))
    line = _run(["det-eval", str(run), "--data", str(other)], capsys, root, run, other)
    assert "'iscrowd' other than 0 or 1 (annotation ids 203)" in line
    assert "instances_train2017.json" in line and "do not fit in float32" in line and "(annotation ids 101)" in line


# ------------------------------------------------------------------------------------------------ det-data


def _idx(dims: tuple[int, ...], data: bytes) -> bytes:
    return bytes([0, 0, 8, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + data


def _sources(root: Path, images: bytes, labels: bytes, gz: bool = False) -> Path:
    for sub in ("FashionMNIST", "MNIST"):
        raw = root / sub / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        for stem, payload in (("train-images-idx3-ubyte", images), ("train-labels-idx1-ubyte", labels),
                              ("t10k-images-idx3-ubyte", images), ("t10k-labels-idx1-ubyte", labels)):
            if gz:
                (raw / (stem + ".gz")).write_bytes(payload)
            else:
                (raw / stem).write_bytes(payload)
    return root


_IMAGES = _idx((20, 28, 28), bytes(20 * 28 * 28))
_LABELS = _idx((20,), bytes(range(10)) * 2)


@pytest.mark.parametrize("case, words", [
    ("not gzip", "Not a gzipped file"),
    ("gzip cut short", "cannot be read"),
    ("header past the end", "cannot be read"),
    ("wrong image shape", "not 28x28 bytes"),
    ("labels missing classes", "do not cover the classes 0..9"),
])
def test_det_data_corrupt_sources_are_one_line(case, words, tmp_path, capsys):
    src = tmp_path / "src"
    if case == "not gzip":
        _sources(src, b"garbage", b"garbage", gz=True)
    elif case == "gzip cut short":
        _sources(src, gzip.compress(_IMAGES)[:40], gzip.compress(_LABELS), gz=True)
    elif case == "header past the end":
        _sources(src, bytes([0, 0, 8, 3, 0, 0]), _LABELS)
    elif case == "wrong image shape":
        _sources(src, _idx((20, 14, 56), bytes(20 * 28 * 28)), _LABELS)
    else:
        _sources(src, _IMAGES, _idx((20,), bytes(20)))
    out = tmp_path / "bench"
    line = _run(["det-data", "--out", str(out), "--source-root", str(src)], capsys, src)
    assert line.startswith("iif det-data: error: the fashion-mnist source files under ") and words in line, line
    assert "re-download" in line and not out.exists()


# ------------------------------------------------------------------------------------------ one line, workers


def test_a_worker_error_reaches_the_cli_as_its_own_message(tmp_path, capsys):
    # The header is a valid PNG's (so the check before training passes) but the pixel data is cut off: the
    # image fails when a DataLoader worker decodes it, and torch wraps the worker's traceback into the text.
    root = _write(tmp_path / "data")
    path = root / "train2017" / "1.png"
    path.write_bytes(path.read_bytes()[:60])
    line = _run(_det_train(root, tmp_path / "run", "runtime.workers=1", "schedule.epochs=1", "schedule.batch_size=2",
                           "schedule.warmup_iters=0", "schedule.milestones=[]"), capsys, root)
    assert line.startswith("iif det-train: error: image id 1: cannot read ") and "1.png" in line, line
    assert "DataLoader worker" not in line and "Original Traceback" not in line


def test_original_message_by_hand():
    text = ("Caught IIFError in DataLoader worker process 3.\nOriginal Traceback (most recent call last):\n"
            "  File \"x.py\", line 1, in f\n    raise IIFError('a: b')\niif.errors.IIFError: image 7: bad; fix it\n")
    assert original_message(text) == "image 7: bad; fix it"
    assert original_message("plain text: stays") == "plain text: stays"


# --------------------------------------------------------------------------------- the checks, independently


def test_rle_strings_decode_as_pycocotools_encodes_them():
    rng = np.random.default_rng(1)
    strings, sizes, areas, masks = [], [], [], []
    for i in range(40):
        h, w = (int(v) for v in rng.integers(1, 70, 2))
        m = (rng.random((h, w)) < [0.0, 0.02, 0.5, 1.0][i % 4]).astype(np.uint8)
        r = mask_utils.encode(np.asfortranarray(m))
        strings.append(r["counts"].decode("ascii"))
        sizes.append(h * w)
        areas.append(int(m.sum()))
        masks.append(m)
    counts, which, ok = _decode_rle_strings(strings)
    assert ok.all() and rle_string_counts_ok(strings, sizes).all()
    for i, m in enumerate(masks):
        runs = counts[which == i]
        # Runs alternate 0s and 1s in column-major order, starting with 0s: rebuild the mask from them.
        flat = np.repeat(np.arange(len(runs)) % 2, runs).astype(np.uint8)
        assert np.array_equal(flat.reshape(m.shape[1], m.shape[0]).T, m)
        assert runs[1::2].sum() == areas[i]
    assert not rle_string_counts_ok(strings[:3], [s + 1 for s in sizes[:3]]).any()  # another image size
    assert not rle_string_counts_ok([strings[1][:-1] + "o"], [sizes[1]]).any()  # last group says "more follows"


def test_box_and_polygon_tolerance_is_two_percent_or_one_pixel():
    base = _split(1, 101)
    validate_annotations(_edit(base, 101, bbox=[-0.9, 3, 10, 8]))  # 1 px slack on a 40-px side
    validate_annotations(_edit(base, 101, bbox=[30, 3, 10.9, 8]))
    with pytest.raises(IIFError, match="reach outside"):
        validate_annotations(_edit(base, 101, bbox=[30, 3, 11.1, 8]))
    validate_annotations(_edit(base, 101, segmentation=[[2, 3, 40.9, 3, 12, 11, 2, 11]]))
    with pytest.raises(IIFError, match="points outside"):
        validate_annotations(_edit(base, 101, segmentation=[[2, 3, 41.1, 3, 12, 11, 2, 11]]))


def test_masks_are_required_only_for_mask_models():
    base = _edit(_split(1, 101), 101, segmentation=_DROP)
    validate_annotations(base)  # box-only model: fine
    with pytest.raises(IIFError, match=r"no 'segmentation' .*\(annotation ids 101\): .*fasterrcnn_\*"):
        validate_annotations(base, masks=True)


def test_data_masks_false_on_a_mask_arch_builds_it_without_the_mask_branch(tmp_path):
    from iif.detection.config import load_detection_config
    from iif.detection.runs import build_from_config, load_train_set

    root = _write(tmp_path / "data", train=_edit(_split(1, 101), 101, segmentation=_DROP))
    cfg = load_detection_config("det_bench_softmax", [f"data.root={root}", "data.masks=false"])
    train = load_train_set(cfg)
    assert train.masks is False and "masks" not in train[0][1]
    model = build_from_config(cfg, train.num_classes, train.freq, log=lambda line: None)
    assert not model.roi_heads.has_mask()
    with_masks = build_from_config(load_detection_config("det_bench_softmax", [f"data.root={root}"]),
                                   train.num_classes, train.freq, log=lambda line: None)
    assert with_masks.roi_heads.has_mask()


@pytest.mark.slow
def test_a_json_without_masks_trains_a_mask_arch_with_data_masks_false(tmp_path, capsys):
    # The decision for data.masks=false on a maskrcnn_* arch: train the same detector without its mask branch
    # (a box model), end to end through det-train and det-eval, instead of the traceback it gave.
    train, val = _split(1, 101), _split(11, 201)
    for a in train["annotations"] + val["annotations"]:
        a.pop("segmentation")
    root = _write(tmp_path / "data", train=train, val=val)
    run = tmp_path / "run"
    argv = _det_train(root, run, "data.masks=false", "schedule.epochs=1", "schedule.batch_size=2",
                      "schedule.warmup_iters=0", "schedule.milestones=[]")
    assert main(argv) == 0, capsys.readouterr().err
    metrics = json.loads((run / "final_metrics.json").read_text())
    assert metrics["iou_type"] == "bbox" and metrics["segm"] is None
    import torch

    state = torch.load(run / "last.pt", weights_only=True)["model"]
    assert not any(k.startswith("roi_heads.mask_") for k in state) and "roi_heads.box_predictor.cls_score.weight" in state
    capsys.readouterr()
    assert main(["det-eval", str(run)]) == 0
    assert capsys.readouterr().out.startswith("AP ")
