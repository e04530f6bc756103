"""Generator version 2 of the offline detection benchmark (iif.detection.scenes_v2, ``iif det-data --generator 2``)."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import shutil
from collections import Counter, defaultdict

import numpy as np
import pytest

pytest.importorskip("pycocotools")

from pycocotools import mask as mask_utils  # noqa: E402

from iif.cli import main  # noqa: E402
from iif.detection import scenes_v2, synthetic  # noqa: E402
from iif.detection.data import resolve_detection_data  # noqa: E402
from iif.detection.scenes_v2 import CATEGORIES, HELD_OUT  # noqa: E402
from iif.detection.synthetic import make_benchmark, validate_benchmark  # noqa: E402
from iif.errors import IIFError  # noqa: E402

TINY = {"image_size": 64, "num_train": 171, "num_val": 40, "num_test": 80}
SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def sources(detection_sources):
    return detection_sources


@pytest.fixture(scope="module")
def bench(sources, tmp_path_factory):
    """One tiny v2 benchmark (seed 5) for the module; read-only here."""
    out = tmp_path_factory.mktemp("v2") / "bench"
    summary = make_benchmark(out, seed=5, generator=2, sources=sources, **TINY)
    anns = {s: json.loads((out / "annotations" / f"{s}.json").read_text()) for s in SPLITS}
    hidden = {s: json.loads((out / "unannotated" / f"{s}.json").read_text())["unannotated"] for s in SPLITS}
    return out, summary, anns, hidden


def _decode(seg: dict) -> np.ndarray:
    return mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode("ascii")}).astype(bool)


def _quiet():
    return contextlib.redirect_stdout(io.StringIO())


def test_layout_marker_and_validation(bench):
    out, summary, anns, _ = bench
    assert sorted(p.name for p in (out / "annotations").iterdir()) == ["test.json", "train.json", "val.json"]
    assert sorted(p.name for p in (out / "unannotated").iterdir()) == ["test.json", "train.json", "val.json"]
    for split, n in (("train", 171), ("val", 40), ("test", 80)):
        assert len(list((out / "images" / split).iterdir())) == n == len(anns[split]["images"])
    marker = json.loads((out / "BENCHMARK.json").read_text())
    assert marker == summary and marker["generator_version"] == 2 and marker["seed"] == 5
    assert marker["options"] == {**TINY, "neg_fraction": 0.5, "clutter": 1.0, "distractors": 1.5,
                                 "object_size": [0.125, 0.375]}
    assert marker["roles"]["test"] == "reported" and "tau" in marker["roles"]["val"]
    validate_benchmark(out)
    validate_benchmark(out, generator=2)
    with pytest.raises(IIFError, match="generator version 2, version 1 is needed.*iif det-data --generator 1"):
        validate_benchmark(out, generator=1)


def test_v1_folder_is_refused_where_v2_is_needed(detection_benchmark):
    with pytest.raises(IIFError, match="generator version 1, version 2 is needed.*--generator 2"):
        validate_benchmark(detection_benchmark[0], generator=2)


def test_counts_per_group_exact_as_designed(bench):
    out, summary, anns, _ = bench
    # by hand: 6 frequent at their floor of 101 images, 5 common at their floor of 11, rare 3, 10, 6, 2, 1
    by_hand = {1: 101, 2: 101, 3: 11, 4: 3, 5: 10, 6: 101, 7: 11, 8: 11, 9: 101, 10: 101, 11: 11, 12: 11,
               13: 6, 14: 2, 15: 101, 16: 1}
    images = {s: defaultdict(set) for s in SPLITS}
    instances = {s: Counter() for s in SPLITS}
    for s in SPLITS:
        for a in anns[s]["annotations"]:
            images[s][a["category_id"]].add(a["image_id"])
            instances[s][a["category_id"]] += 1
    assert {c: len(ids) for c, ids in images["train"].items()} == by_hand
    # val and test balanced: max(10, round(0.15 * n)) images per category: 10 of 40 val, 12 of 80 test
    assert {len(ids) for ids in images["val"].values()} == {10} and len(images["val"]) == 16
    assert {len(ids) for ids in images["test"].values()} == {12} and len(images["test"]) == 16
    letters = {c["id"]: c["frequency"] for c in anns["train"]["categories"]}
    assert Counter(letters.values()) == {"f": 6, "c": 5, "r": 5} and summary["groups"] == {"r": 5, "c": 5, "f": 6}
    assert {letters[c] for c in (4, 5, 13, 14, 16)} == {"r"}
    for s in SPLITS:
        assert anns[s]["categories"] == anns["train"]["categories"]  # every split carries the train counts
        for g in "rcf":
            mine = [a for a in anns[s]["annotations"] if letters[a["category_id"]] == g]
            assert summary["splits"][s]["groups"][g] == {
                "categories": sum(1 for v in letters.values() if v == g),
                "images": len({a["image_id"] for a in mine}), "instances": len(mine)}
        assert summary["splits"][s]["images"] == len(anns[s]["images"])
        assert summary["splits"][s]["instances"] == len(anns[s]["annotations"])
    assert summary["splits"]["test"]["groups"]["r"]["instances"] >= 5 * 12
    # the design at the default size: rare 1, 2, 3, 6 and 10 train images; frequent and common as listed
    default = scenes_v2._train_image_counts(2000).tolist()
    assert default == [300, 700, 20, 3, 10, 520, 80, 40, 400, 900, 60, 15, 6, 2, 230, 1]
    assert sorted(n for n in default if n <= 10) == [1, 2, 3, 6, 10]
    assert scenes_v2.minimum_num_train() == 171  # 6 x 101 + 5 x 11 + 22 = 683 categories-in-images <= 4 x 171
    assert not synthetic._feasible(scenes_v2._train_image_counts(170), 170)


def test_federated_fields(bench):
    """neg_category_ids: round(0.5 x absent) of the categories not drawn in the image; not_exhaustive: the
    annotated categories with instances left unannotated, each such pair and no other."""
    _, summary, anns, hidden = bench
    all_ids = set(range(1, 17))
    for s in SPLITS:
        annotated, left_out = defaultdict(set), defaultdict(set)
        for a in anns[s]["annotations"]:
            annotated[a["image_id"]].add(a["category_id"])
        for h in hidden[s]:
            if h["kind"] == "not_exhaustive":
                left_out[h["image_id"]].add(h["category_id"])
        some_neg_left_out = 0
        for im in anns[s]["images"]:
            absent = all_ids - annotated[im["id"]] - left_out[im["id"]]
            neg = im["neg_category_ids"]
            assert neg == sorted(neg) and set(neg) <= absent and len(neg) == round(0.5 * len(absent))
            some_neg_left_out += len(absent) - len(neg)
            assert set(im["not_exhaustive_category_ids"]) == left_out[im["id"]] <= annotated[im["id"]]
        assert some_neg_left_out > 0
        assert summary["splits"][s]["not_exhaustive_pairs"] == sum(len(v) for v in left_out.values()) > 0
        assert summary["splits"][s]["neg_pairs"] == sum(len(im["neg_category_ids"]) for im in anns[s]["images"])


def _official_lvis_ap(gt_json: dict, dets: list, tmp_path) -> float:
    """Box AP (0-1) of the official lvis API; iif's evaluate_lvis (faster-coco-eval) must agree."""
    lvis = pytest.importorskip("lvis")
    pytest.importorskip("faster_coco_eval")
    from iif.detection import evaluate_lvis

    path = tmp_path / f"gt{len(list(tmp_path.iterdir()))}.json"
    path.write_text(json.dumps(gt_json))
    ours = evaluate_lvis(str(path), copy.deepcopy(dets), iou_type="bbox")["AP"] / 100
    had = hasattr(np, "float")
    np.float = float  # lvis 0.5.3 still uses np.float, removed in numpy 2
    try:
        with _quiet():
            gt = lvis.LVIS(str(path))
            ev = lvis.LVISEval(gt, lvis.LVISResults(gt, copy.deepcopy(dets)), "bbox")
            ev.run()
        assert ours == pytest.approx(float(ev.results["AP"]), abs=1e-6)
        return float(ev.results["AP"])
    finally:
        if not had:
            del np.float


def test_both_lvis_rules_act_in_the_official_evaluation(bench, tmp_path):
    """Perfect detections, plus (a) a detection of every instance left out of a not-exhaustive category and
    (b) per image a detection of an absent category not verified negative: both extras are ignored under the
    federated labels (AP 1), and each costs AP once its rule is removed."""
    _, _, anns, hidden = bench
    test = anns["test"]
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
            for a in test["annotations"]]
    left_out = [{"image_id": h["image_id"], "category_id": h["category_id"], "bbox": h["bbox"], "score": 0.95}
                for h in hidden["test"] if h["kind"] == "not_exhaustive"]
    annotated = defaultdict(set)
    for a in test["annotations"]:
        annotated[a["image_id"]].add(a["category_id"])
    unverified = []
    for im in test["images"]:
        free = sorted(set(range(1, 17)) - annotated[im["id"]] - set(im["neg_category_ids"]))
        unverified.append({"image_id": im["id"], "category_id": free[0], "bbox": [2.0, 2.0, 20.0, 20.0],
                           "score": 0.95})
    assert left_out and unverified
    assert _official_lvis_ap(test, dets + left_out + unverified, tmp_path) == pytest.approx(1.0)
    no_neg_rule = copy.deepcopy(test)
    for im in no_neg_rule["images"]:
        im["neg_category_ids"] = sorted(set(range(1, 17)) - annotated[im["id"]])
    assert _official_lvis_ap(no_neg_rule, dets + left_out + unverified, tmp_path) < 0.9
    no_exhaustive_rule = copy.deepcopy(test)
    for im in no_exhaustive_rule["images"]:
        im["not_exhaustive_category_ids"] = []
    assert _official_lvis_ap(no_exhaustive_rule, dets + left_out + unverified, tmp_path) < 0.95


def test_no_source_image_shared_between_splits(bench, sources):
    _, _, anns, hidden = bench
    used = {s: [tuple(a["source"]) for a in anns[s]["annotations"]] + [tuple(h["source"]) for h in hidden[s]]
            for s in SPLITS}
    assert {u[1] for u in used["train"]} == {"train"}
    assert {u[1] for u in used["val"]} == {u[1] for u in used["test"]} == {"test"}
    assert not set(used["val"]) & set(used["test"])
    for s in SPLITS:
        assert len(set(used[s])) == len(used[s])  # each source used once per split at this size
        for a in anns[s]["annotations"]:  # the source image is of the annotated category's class
            cat = CATEGORIES[a["category_id"] - 1]
            dataset, src_split, index = a["source"]
            labels = sources[dataset][1] if src_split == "train" else sources[dataset][3]
            assert dataset == cat.dataset and int(labels[index]) == cat.label
    parts = scenes_v2._partition_test_sources(sources, 5, 40, 80)
    for key, val_idx in parts["val"].items():
        test_idx = parts["test"][key]
        assert not set(val_idx.tolist()) & set(test_idx.tolist())
        assert 0.2 < len(val_idx) / (len(val_idx) + len(test_idx)) < 0.45  # 40 : 80


def test_distractors_are_in_the_pixels_not_in_the_annotations(bench, sources, monkeypatch):
    _, summary, anns, hidden = bench
    held = {(d, label) for _, d, label in HELD_OUT}
    for s in SPLITS:
        dis = [h for h in hidden[s] if h["kind"] == "distractor"]
        assert len(dis) >= len(anns[s]["images"]) // 2 and summary["splits"][s]["unannotated"]["distractor"] == len(dis)
        for h in dis:
            dataset, src_split, index = h["source"]
            labels = sources[dataset][1] if src_split == "train" else sources[dataset][3]
            assert (dataset, int(labels[index])) in held and h["category_id"] is None and h["area"] > 0
        for a in anns[s]["annotations"]:
            dataset, src_split, index = a["source"]
            labels = sources[dataset][1] if src_split == "train" else sources[dataset][3]
            assert (dataset, int(labels[index])) not in held
    # on a black background without clutter, the lit pixels are exactly the annotated objects, the left-out
    # instances and the distractors; the distractors' pixels are outside every annotation
    monkeypatch.setattr(scenes_v2, "_background", lambda size, rng, noise=1.0: np.zeros((size, size, 3), np.float32))
    # one bright colour for every item (the drawn colour contrasts with what lies under it, black over a bright
    # object): every painted pixel is then lit
    monkeypatch.setattr(scenes_v2, "_contrasting_colour", lambda lum, rng: np.array([0.8, 0.7, 0.6]))
    pool = scenes_v2._Pool(sources, "train", None, np.random.default_rng(0))
    seen_dis, cut = 0, 0
    for seed in range(10):
        items = [(scenes_v2._ANNOTATED, 0, synthetic.FASHION, pool.take(synthetic.FASHION, 0)),
                 (scenes_v2._DISTRACTOR, 1, synthetic.FASHION, pool.take(synthetic.FASHION, 4)),
                 (scenes_v2._ANNOTATED, 9, synthetic.MNIST, pool.take(synthetic.MNIST, 1)),
                 (scenes_v2._DISTRACTOR, 3, synthetic.MNIST, pool.take(synthetic.MNIST, 9)),
                 (scenes_v2._LEFT_OUT, 9, synthetic.MNIST, pool.take(synthetic.MNIST, 1))]
        img, drawn, areas = scenes_v2._render(items, 64, pool, np.random.default_rng(seed), 0.0, (0.2, 0.35))
        lit = img.any(axis=-1)
        masks = {role: np.logical_or.reduce([d[4] for d in drawn if d[0] == role] or [np.zeros_like(lit)])
                 for role in (scenes_v2._ANNOTATED, scenes_v2._LEFT_OUT, scenes_v2._DISTRACTOR)}
        np.testing.assert_array_equal(lit, np.logical_or.reduce(list(masks.values())))
        assert not (masks[scenes_v2._DISTRACTOR] & masks[scenes_v2._ANNOTATED]).any()
        seen_dis += int(masks[scenes_v2._DISTRACTOR].sum() > 0)
        for d, area in zip(drawn, areas):
            assert d[4].sum() >= 0.4 * area or d[0] == scenes_v2._ANNOTATED  # forced places may go below
            cut += int(d[4][0].any() or d[4][-1].any() or d[4][:, 0].any() or d[4][:, -1].any())
    assert seen_dis >= 8 and cut >= 3  # distractors drawn; some items touch the border


def test_deterministic_bytes(bench, sources):
    out, _, _, _ = bench
    results, summary = scenes_v2.generate(5, sources=sources, **TINY)
    for s in SPLITS:
        ann, files, unannotated = results[s]
        assert synthetic._dump(ann) == (out / "annotations" / f"{s}.json").read_bytes()
        assert synthetic._dump(unannotated) == (out / "unannotated" / f"{s}.json").read_bytes()
        assert [name for name, _ in files] == sorted(p.name for p in (out / "images" / s).iterdir())
        for name, data in files:
            assert data == (out / "images" / s / name).read_bytes()
    assert json.dumps(summary, indent=1) + "\n" == (out / "BENCHMARK.json").read_text()
    other, _ = scenes_v2.generate(6, sources=sources, **TINY)
    assert synthetic._dump(other["train"][0]) != synthetic._dump(results["train"][0])


# sha256 of the v1 benchmark generate(3, image_size=64, num_train=231, num_val=50) with the real sources,
# recorded before generator 2 existed (commit 6e8e275): version 1 must keep giving these bytes.
V1_SHA = {"train": ("f25340ae34b40eca0786e0a60889fdeb604b50f6a6e6390bc1f2cf8cd13abb8e",
                    "cb09e2a67ec1e4102786df3cc82d43c1383d66c8bfb4b4c04a4e07ae0569d198"),
          "val": ("2e1e048a997b1ab17503ca6ec2a879f29e759a3dc7d09e87345c32b6a7a0c038",
                  "17d00b7f89d481a8e2eefc312b9fe3ea8f88c612c33927865aa35e17f4cc3dcf")}


def test_version_1_is_unchanged_and_version_2_the_default(sources, detection_benchmark, tmp_path):
    assert synthetic.DEFAULT_GENERATOR == 2
    assert json.loads((detection_benchmark[0] / "BENCHMARK.json").read_text())["generator_version"] == 1
    with pytest.raises(IIFError, match="num_test exists only in generator 2"):
        make_benchmark(tmp_path / "x", sources=sources, num_test=100, generator=1)
    with pytest.raises(IIFError, match=r"generator must be one of \(1, 2\)"):
        make_benchmark(tmp_path / "x", sources=sources, generator=3)
    assert not (tmp_path / "x").exists()
    if int(sources[synthetic.FASHION][0].shape[0]) != 60000:
        pytest.skip("the pinned bytes are those of the real Fashion-MNIST / MNIST")
    results, _ = synthetic.generate(3, sources=sources, image_size=64, num_train=231, num_val=50)
    for s in ("train", "val"):
        ann, files = results[s]
        h = hashlib.sha256()
        for name, data in files:
            h.update(name.encode())
            h.update(data)
        assert (hashlib.sha256(synthetic._dump(ann)).hexdigest(), h.hexdigest()) == V1_SHA[s]


@pytest.mark.parametrize("kwargs, message", [
    ({"num_train": 170}, "num_train must be a whole number in 171..200000 for generator 2"),
    ({"num_val": 39}, "num_val must be a whole number in 40..100000"),
    ({"num_test": 10}, "num_test must be a whole number in 40..100000"),
    ({"distractors": 4.0}, "distractors must be"),
    ({"neg_fraction": 1.5}, "neg_fraction must be in"),
])
def test_bad_v2_options_are_refused_before_any_work(tmp_path, kwargs, message):
    with pytest.raises(IIFError, match=message):
        make_benchmark(tmp_path / "b", generator=2, sources={}, **kwargs)
    assert not (tmp_path / "b").exists()


def test_resolve_detection_data_three_splits(bench, detection_benchmark):
    out = bench[0]
    assert resolve_detection_data(out) == (out / "annotations" / "train.json", out / "images" / "train",
                                           out / "annotations" / "val.json", out / "images" / "val")
    assert resolve_detection_data(out, eval_split="test")[2:] == (out / "annotations" / "test.json",
                                                                   out / "images" / "test")
    with pytest.raises(IIFError, match="no test split.*--generator 2"):
        resolve_detection_data(detection_benchmark[0], eval_split="test")


def _corrupt(bench, tmp_path, split, edit):
    out = tmp_path / "copy"
    shutil.copytree(bench[0], out)
    path = out / "annotations" / f"{split}.json"
    ann = json.loads(path.read_text())
    edit(ann, bench[2])
    path.write_text(json.dumps(ann))
    return out


def _share_a_val_source(ann, anns):
    ann["annotations"][0]["source"] = anns["val"]["annotations"][0]["source"]


def _not_exhaustive_unannotated(ann, anns):
    im = ann["images"][0]
    shown = {a["category_id"] for a in ann["annotations"] if a["image_id"] == im["id"]}
    im["not_exhaustive_category_ids"] = [min(set(range(1, 17)) - shown - set(im["neg_category_ids"]))]


@pytest.mark.parametrize("split, edit, message", [
    ("test", _share_a_val_source, "source images are in both val and test"),
    ("test", _not_exhaustive_unannotated, "list not_exhaustive_category_ids that are not annotated there"),
    ("val", lambda ann, anns: ann["annotations"].pop(), "counts of category"),
    ("test", lambda ann, anns: ann["annotations"][0].update(source=["mnist", "train", 0]), "source is not"),
])
def test_validate_v2_reports_problems(bench, tmp_path, split, edit, message):
    out = _corrupt(bench, tmp_path, split, edit)
    with pytest.raises(IIFError, match="invalid benchmark") as info:
        validate_benchmark(out)
    assert message in str(info.value) and "--generator 2" in str(info.value) and "\n" not in str(info.value)


def test_cli_generator_2(monkeypatch, sources, tmp_path, capsys):
    monkeypatch.setattr(scenes_v2, "_load_sources", lambda root, download: sources)  # v2 loads its sources itself
    out = tmp_path / "b"
    args = ["det-data", "--generator", "2", "--out", str(out), "--seed", "1", "--image-size", "64",
            "--num-train", "171", "--num-val", "40", "--num-test", "40"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "(generator 2)" in printed and "test 40 images" in printed and "5 rare, 5 common, 6 frequent" in printed
    assert "test img" in printed and "digit_8" in printed and "pullover" not in printed
    validate_benchmark(out, generator=2)
    assert main(["det-data", "--generator", "1", "--out", str(tmp_path / "x"), "--num-test", "50"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("iif det-data: error:") and "--generator 2" in err and "\n" not in err
    assert main(["det-data", "--generator", "2", "--out", str(tmp_path / "x"), "--num-test", "5"]) == 2
    assert "num_test must be" in capsys.readouterr().err and not (tmp_path / "x").exists()


@pytest.mark.parametrize("generator", [1, 2])
def test_a_source_glyph_that_vanishes_is_one_line_and_nothing_is_written(generator, sources, tmp_path, monkeypatch):
    """A source image with no object pixels left at the drawn size (thin glyphs at a small --image-size) is an
    IIFError naming the fix, not a RuntimeError, and leaves no folder behind."""
    from iif.detection import scenes_v2

    monkeypatch.setattr(scenes_v2 if generator == 2 else synthetic, "_glyph", lambda *a, **k: None)
    out = tmp_path / "b"
    kw = dict(num_train=171, num_val=40, num_test=40) if generator == 2 else dict(num_train=231, num_val=50)
    with pytest.raises(IIFError, match=r"leaves no object pixels .* use a larger --image-size"):
        make_benchmark(out, seed=5, generator=generator, sources=sources, image_size=64, **kw)
    assert not out.exists()
