"""ClassFrequency: counts from every source, persistence, the weight table and the K conventions.

Expected counts are counted by hand in the fixtures (tests/fixtures/lvis_mini_train.json,
coco_mini_instances.json, lists_imagenet_lt_train.txt) or by an independent route (pycocotools'
index, Python sets/Counter over the annotations).
"""

from __future__ import annotations

import csv
import json
import math
import random
import warnings
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from iif import ClassFrequency, IIFError, VARIANTS, iif_weights
from iif.frequency import lvis_group_letters

FIXTURES = Path(__file__).parent / "fixtures"
LVIS = FIXTURES / "lvis_mini_train.json"
COCO = FIXTURES / "coco_mini_instances.json"
LIST = FIXTURES / "lists_imagenet_lt_train.txt"


def coco_freq() -> ClassFrequency:
    with pytest.warns(UserWarning, match="car"):
        return ClassFrequency.from_coco(COCO)


# --------------------------------------------------------------------------------------- labels
def test_from_labels_counts_and_defaults():
    f = ClassFrequency.from_labels([2, 0, 2, 2, 1, 0], class_names=["a", "b", "c", "d"])
    assert f.image_counts.tolist() == [2, 1, 3, 0] == f.object_counts.tolist()
    assert f.image_counts.dtype == np.int64
    assert (f.num_images, f.num_instances, f.num_classes) == (6, 6, 4)
    assert f.class_names == ["a", "b", "c", "d"] and f.class_ids == [0, 1, 2, 3]
    assert f.task == "classification" and f.groups is None
    assert ClassFrequency.from_labels(torch.tensor([1, 1, 0])).image_counts.tolist() == [1, 2]
    assert ClassFrequency.from_labels(np.array([1.0, 0.0])).image_counts.tolist() == [1, 1]


@pytest.mark.parametrize(
    "labels,kwargs,fragment",
    [
        ([0, 1.5], {}, "whole class indices"),
        ([0, -1], {}, ">= 0"),
        ([0, 3], {"num_classes": 2}, "out of range"),
        ([[0, 1]], {}, "1-D"),
        (["cat", "dog"], {}, "integer class indices"),
        ([], {}, "No classes"),
        ([0, 1], {"class_names": ["a", "b", "c"], "num_classes": 2}, "class_names has 3 entries"),
    ],
)
def test_from_labels_bad_input(labels, kwargs, fragment):
    with pytest.raises(IIFError, match=fragment):
        ClassFrequency.from_labels(labels, **kwargs)


def test_constructor_validates_counts():
    with pytest.raises(IIFError, match="non-negative whole"):
        ClassFrequency([1, -2], [1, 2], 3, 3)
    with pytest.raises(IIFError, match="non-negative whole"):
        ClassFrequency([1, 2.5], [1, 2], 3, 3)
    with pytest.raises(IIFError, match="task"):
        ClassFrequency([1, 2], [1, 2], 3, 3, task="segmentation")
    with pytest.raises(IIFError, match="groups has 1 entries"):
        ClassFrequency([1, 2], [1, 2], 3, 3, groups=["r"])


# -------------------------------------------------------------------------------------- dataset
class _ToyDataset:
    def __init__(self, targets, classes=None):
        self.targets = targets
        if classes is not None:
            self.classes = classes

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return torch.zeros(1), self.targets[i]


def test_from_dataset_uses_targets_and_classes():
    ds = _ToyDataset([0, 2, 2, 1, 2], classes=["cat", "dog", "emu"])
    f = ClassFrequency.from_dataset(ds)
    assert f.image_counts.tolist() == [1, 1, 3] and f.class_names == ["cat", "dog", "emu"]
    sub = torch.utils.data.Subset(ds, [1, 2, 3])
    g = ClassFrequency.from_dataset(sub)
    assert g.image_counts.tolist() == [0, 1, 2] and g.class_names == ["cat", "dog", "emu"]
    assert ClassFrequency.from_dataset(_ToyDataset(torch.tensor([1, 1]))).image_counts.tolist() == [0, 2]
    assert ClassFrequency.from_dataset(_ToyDataset([0, 1]), num_classes=4).image_counts.tolist() == [1, 1, 0, 0]
    with pytest.raises(IIFError, match="class_names has 3 entries but there are 4 classes"):
        ClassFrequency.from_dataset(ds, num_classes=4)


def test_from_dataset_without_targets():
    with pytest.raises(IIFError, match="no 'targets'.*from_labels"):
        ClassFrequency.from_dataset(torch.utils.data.TensorDataset(torch.zeros(3)))


# --------------------------------------------------------------------------------------- folder
def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def test_from_folder_counts_image_files_sorted_classes(tmp_path):
    root = tmp_path / "train"
    for name in ["x1.jpg", "x2.JPEG", "x3.png", "notes.txt", "deep/x4.webp"]:
        _touch(root / "zebra" / name)
    for name in ["a.bmp", "b.tiff"]:
        _touch(root / "ant" / name)
    (root / "moth").mkdir()
    _touch(root / "stray.jpg")  # a file at the top level is not a class
    with pytest.warns(UserWarning, match="moth"):
        f = ClassFrequency.from_folder(root)
    assert f.class_names == ["ant", "moth", "zebra"]
    assert f.image_counts.tolist() == [2, 0, 4]
    assert f.num_images == 6 and f.task == "classification"


def test_from_folder_bad_input(tmp_path):
    with pytest.raises(IIFError, match="not a directory"):
        ClassFrequency.from_folder(tmp_path / "nope")
    _touch(tmp_path / "flat" / "a.jpg")
    with pytest.raises(IIFError, match="no class sub-directories"):
        ClassFrequency.from_folder(tmp_path / "flat")


# ------------------------------------------------------------------------------------ list file
def test_from_list_file_fixture():
    f = ClassFrequency.from_list_file(LIST)
    # 3 x label 0, 1 x label 1, 2 x label 2 (one path contains a space); the blank line is skipped.
    assert f.image_counts.tolist() == [3, 1, 2] and f.num_images == 6
    assert ClassFrequency.from_list_file(LIST, num_classes=5).image_counts.tolist() == [3, 1, 2, 0, 0]


@pytest.mark.parametrize(
    "bad_line", ["train/a/b.jpg", "train/a/b.jpg dog", "train/a/b.jpg -3", "train/a/b.jpg 1.5"]
)
def test_from_list_file_bad_line_names_line_and_content(tmp_path, bad_line):
    p = tmp_path / "train.txt"
    p.write_text(f"train/a/a.jpg 0\n\n{bad_line}\ntrain/a/c.jpg 1\n")
    with pytest.raises(IIFError) as err:
        ClassFrequency.from_list_file(p)
    assert "line 3" in str(err.value) and repr(bad_line) in str(err.value) and str(p) in str(err.value)


def test_from_list_file_empty_or_missing(tmp_path):
    (tmp_path / "e.txt").write_text("\n\n")
    with pytest.raises(IIFError, match="no entries"):
        ClassFrequency.from_list_file(tmp_path / "e.txt")
    with pytest.raises(IIFError, match="no such file"):
        ClassFrequency.from_list_file(tmp_path / "missing.txt")


# ------------------------------------------------------------------------------------ COCO/LVIS
def test_lvis_fixture_counts_by_hand_and_lvis_fields():
    f = ClassFrequency.from_coco(LVIS)
    # categories sorted by id: apple(3), bus(7), kite(12), zebra(30)
    assert f.class_ids == [3, 7, 12, 30] and f.class_names == ["apple", "bus", "kite", "zebra"]
    assert f.image_counts.tolist() == [3, 1, 1, 2]
    assert f.object_counts.tolist() == [4, 1, 1, 4]
    assert (f.num_images, f.num_instances, f.task) == (5, 10, "detection")  # image 20 has no annotation
    assert f.groups == ["r", "r", "r", "r"]
    assert f.check_against_lvis_fields(LVIS) == 4
    # The json's own fields, read independently, agree with the counts.
    cats = {c["id"]: c for c in json.loads(LVIS.read_text())["categories"]}
    assert [cats[i]["image_count"] for i in f.class_ids] == f.image_counts.tolist()
    assert [cats[i]["instance_count"] for i in f.class_ids] == f.object_counts.tolist()


def test_lvis_field_mismatch_is_reported(tmp_path):
    data = json.loads(LVIS.read_text())
    data["categories"][0]["image_count"] = 7  # zebra really has 2
    f = ClassFrequency.from_coco(data)  # not checked by default (val files carry train counts)
    with pytest.raises(IIFError, match="zebra \\(id 30\\) image_count 7 != counted 2"):
        f.check_against_lvis_fields(data)
    with pytest.raises(IIFError, match="does not reproduce"):
        ClassFrequency.from_coco(data, check_lvis=True)
    # A COCO file has no such fields: nothing to check.
    assert coco_freq().check_against_lvis_fields(COCO) == 0


def test_coco_fixture_counts_and_empty_category_warning():
    f = coco_freq()
    assert f.class_names == ["person", "bicycle", "car"] and f.class_ids == [1, 2, 3]
    assert f.image_counts.tolist() == [2, 2, 0] and f.object_counts.tolist() == [3, 2, 0]
    assert (f.num_images, f.num_instances) == (3, 5)
    assert f.empty_classes == [2]
    assert f.groups == ["r", "r", "r"]  # derived: no 'frequency' in COCO
    with pytest.raises(IIFError, match="zero count.*\\[2\\].*smooth"):
        f.weights("raw")
    w = f.weights("smooth")  # K = num_images = 3 for detection
    np.testing.assert_allclose(w.numpy(), [math.log(4 / 3) + 1, math.log(4 / 3) + 1, math.log(4) + 1], rtol=1e-6)


def _synthetic_lvis(seed: int = 0) -> dict:
    """A COCO-format dict with classes spanning the r/c/f bounds and non-contiguous, shuffled ids."""
    rng = random.Random(seed)
    images = [{"id": 1000 + 3 * i} for i in range(300)]
    cats = [{"id": cid, "name": f"c{cid}"} for cid in (50, 4, 17, 99, 8)]
    # per class: how many images contain it (around the 10/100 bounds)
    spread = {50: 150, 4: 101, 17: 100, 99: 11, 8: 10}
    anns = []
    for cid, n_img in spread.items():
        for img in rng.sample(images, n_img):
            for _ in range(rng.randint(1, 3)):
                anns.append({"id": len(anns) + 1, "image_id": img["id"], "category_id": cid, "bbox": [0, 0, 1, 1]})
    rng.shuffle(anns)
    return {"images": images, "annotations": anns, "categories": cats}


def test_coco_counts_agree_with_sets_and_pycocotools():
    data = _synthetic_lvis()
    f = ClassFrequency.from_coco(data)
    imgs, inst = defaultdict(set), Counter()
    for a in data["annotations"]:
        imgs[a["category_id"]].add(a["image_id"])
        inst[a["category_id"]] += 1
    assert f.class_ids == [4, 8, 17, 50, 99]
    assert f.image_counts.tolist() == [len(imgs[c]) for c in f.class_ids] == [101, 10, 100, 150, 11]
    assert f.object_counts.tolist() == [inst[c] for c in f.class_ids]
    assert f.groups == ["f", "r", "c", "f", "c"] == lvis_group_letters([101, 10, 100, 150, 11])
    pycocotools = pytest.importorskip("pycocotools.coco")
    coco = pycocotools.COCO()
    coco.dataset = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        coco.createIndex()
    assert f.image_counts.tolist() == [len(coco.getImgIds(catIds=[c])) for c in f.class_ids]
    assert f.object_counts.tolist() == [len(coco.getAnnIds(catIds=[c])) for c in f.class_ids]


def test_lvis_frequency_letters_are_taken_from_the_json():
    data = _synthetic_lvis()
    for c in data["categories"]:
        c["frequency"] = "f"
    assert ClassFrequency.from_coco(data).groups == ["f"] * 5


def test_detection_k_conventions():
    f = ClassFrequency.from_coco(LVIS)
    apple = 0
    # IIF: K = number of training images (5); IOF: K = number of instances (10) -- docs/method.md#frequencies-and-k.
    assert f.weights("raw")[apple].item() == pytest.approx(math.log(5 / 3), rel=1e-6)
    assert f.weights("raw", by="object")[apple].item() == pytest.approx(math.log(10 / 4), rel=1e-6)
    assert f.weights("raw", total="sum")[apple].item() == pytest.approx(math.log(7 / 3), rel=1e-6)
    assert f.weights("raw", by="object", total="images")[apple].item() == pytest.approx(math.log(5 / 4), rel=1e-6)
    assert f.weights("raw", total=100)[apple].item() == pytest.approx(math.log(100 / 3), rel=1e-6)
    assert f.weights("raw", total="instances", background="first").shape == (5,)
    with pytest.raises(IIFError, match="'sum', 'images' or 'instances'"):
        f.weights("raw", total="everything")
    with pytest.raises(IIFError, match="by must be"):
        f.weights("raw", by="pixel")
    # Classification: K = sum of counts (paper Eq. 11).
    g = ClassFrequency.from_labels([0, 0, 0, 1])
    assert g.weights("raw")[1].item() == pytest.approx(math.log(4), rel=1e-6)


def test_malformed_and_truncated_json(tmp_path):
    good = LVIS.read_text()
    trunc = tmp_path / "lvis_trunc.json"
    trunc.write_text(good[: len(good) // 2])
    with pytest.raises(IIFError) as err:
        ClassFrequency.from_coco(trunc)
    msg = str(err.value)
    assert str(trunc) in msg and "line" in msg and "column" in msg and "truncated" in msg
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [], "annotations": [,]}')
    with pytest.raises(IIFError, match=r"bad\.json: invalid JSON at line 1 column 32 \(char 31\)"):
        ClassFrequency.from_coco(bad)
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(IIFError, match="not UTF-8"):
        ClassFrequency.from_coco(binary)


@pytest.mark.parametrize("drop", ["annotations", "categories", "images"])
def test_json_without_required_lists(drop):
    data = json.loads(LVIS.read_text())
    del data[drop]
    with pytest.raises(IIFError, match=f"no '{drop}' list"):
        ClassFrequency.from_coco(data)


def test_json_bad_references_and_fields():
    data = json.loads(LVIS.read_text())
    data["annotations"][4]["category_id"] = 555
    with pytest.raises(IIFError, match=r"unknown category ids \[555\].*annotations\[4\]"):
        ClassFrequency.from_coco(data)
    data = json.loads(LVIS.read_text())
    data["annotations"][2]["image_id"] = 99
    data["annotations"][3]["image_id"] = -1
    with pytest.raises(IIFError, match=r"2 annotations point at unknown image ids \[-1, 99\]"):
        ClassFrequency.from_coco(data)
    data = json.loads(LVIS.read_text())
    del data["annotations"][1]["category_id"]
    with pytest.raises(IIFError, match=r"annotations\[1\] has no 'category_id'"):
        ClassFrequency.from_coco(data)
    data = json.loads(LVIS.read_text())
    data["annotations"][6]["category_id"] = "30"
    with pytest.raises(IIFError, match=r"annotations\[6\]\['category_id'\] is '30', not an integer"):
        ClassFrequency.from_coco(data)
    data = json.loads(LVIS.read_text())
    data["categories"][1]["id"] = 30
    with pytest.raises(IIFError, match=r"duplicate category ids \[30\]"):
        ClassFrequency.from_coco(data)
    with pytest.raises(IIFError, match="top level is a list"):
        ClassFrequency.from_coco([1, 2])  # type: ignore[arg-type]
    with pytest.raises(IIFError, match="'categories' is empty"):
        ClassFrequency.from_coco({"images": [], "annotations": [], "categories": []})


def test_sparse_huge_ids_use_the_searchsorted_path():
    data = {"images": [{"id": 10**12}, {"id": 5}], "categories": [{"id": 2**40, "name": "x"}, {"id": 3, "name": "y"}],
            "annotations": [{"image_id": 10**12, "category_id": 2**40}, {"image_id": 5, "category_id": 2**40},
                            {"image_id": 5, "category_id": 3}, {"image_id": 5, "category_id": 3}]}
    f = ClassFrequency.from_coco(data)
    assert f.class_ids == [3, 2**40] and f.image_counts.tolist() == [1, 2] and f.object_counts.tolist() == [2, 2]
    data["annotations"][0]["image_id"] = 10**12 + 1
    with pytest.raises(IIFError, match="unknown image ids"):
        ClassFrequency.from_coco(data)


# ---------------------------------------------------------------------------- groups/imbalance
def test_shot_groups_and_imbalance_factor():
    f = ClassFrequency([150, 101, 100, 50, 20, 19, 0], [150, 101, 100, 50, 20, 19, 0], 440, 440)
    assert f.shot_groups().tolist() == ["many", "many", "medium", "medium", "medium", "few", "few"]
    assert f.shot_groups(many=60, few=50).tolist() == ["many", "many", "many", "medium", "few", "few", "few"]
    assert f.imbalance_factor == pytest.approx(150 / 19)
    g = ClassFrequency([3, 1], [9, 1], 3, 10, task="detection")
    assert g.shot_groups(many=2, few=2, by="object").tolist() == ["many", "few"]
    assert g.imbalance("object") == 9.0 and g.imbalance_factor == 3.0
    with pytest.raises(IIFError, match="few .* must not exceed many"):
        f.shot_groups(many=10, few=20)
    assert math.isnan(ClassFrequency([0, 0], [0, 0], 0, 0).imbalance_factor)


def test_lvis_group_letters_bounds():
    assert lvis_group_letters([0, 1, 10, 11, 100, 101]) == ["r", "r", "r", "c", "c", "f"]


# --------------------------------------------------------------------------------- persistence
def test_json_round_trip_is_exact(tmp_path):
    for f in (ClassFrequency.from_coco(LVIS), coco_freq(),
              ClassFrequency.from_labels([0, 1, 1], class_names=["ünïcode", "a,b \"q\""])):
        p = tmp_path / "freq.json"
        f.save(p)
        g = ClassFrequency.load(p)
        assert g == f and g.image_counts.dtype == np.int64
        assert json.loads(p.read_text())["format"] == "iif.ClassFrequency"
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temp file


def test_load_refuses_other_json(tmp_path):
    with pytest.raises(IIFError, match="not a ClassFrequency file.*from_coco"):
        ClassFrequency.load(LVIS)
    p = tmp_path / "f.json"
    p.write_text(json.dumps({"format": "iif.ClassFrequency", "version": 1, "image_counts": [1]}))
    with pytest.raises(IIFError, match="missing field 'object_counts'"):
        ClassFrequency.load(p)
    with pytest.raises(IIFError, match="does not exist"):
        ClassFrequency.from_labels([0]).save(tmp_path / "no" / "dir" / "f.json")


EXPECTED_CSV_HEADER = (
    ["category", "name", "img_freq", "instance_freq"]
    + ["raw", "smooth", "relative", "base2", "base10", "gombit", "normit"]
    + ["raw_obj", "smooth_obj", "relative_obj", "base2_obj", "base10_obj", "gombit_obj", "normit_obj"]
)


def test_csv_layout_and_values(tmp_path):
    f = ClassFrequency.from_coco(LVIS)
    p = tmp_path / "idf.csv"
    f.to_csv(p)
    rows = list(csv.DictReader(p.open()))
    assert list(rows[0].keys()) == EXPECTED_CSV_HEADER
    assert [r["name"] for r in rows] == ["apple", "bus", "kite", "zebra"]
    assert [int(r["category"]) for r in rows] == [3, 7, 12, 30]
    apple = rows[0]
    assert (apple["img_freq"], apple["instance_freq"]) == ("3", "4")
    # Values as computed by hand, K = 5 images / 10 instances (detection tables).
    for v in VARIANTS:
        assert float(apple[v]) == pytest.approx(_hand(v, 3, 5), rel=1e-12)
        assert float(apple[v + "_obj"]) == pytest.approx(_hand(v, 4, 10), rel=1e-12)
    # relative is written as computed: apple holds 3 of 5 images, so ln(2/3) < 0.
    assert float(apple["relative"]) < 0


def _hand(variant: str, n: float, k: float) -> float:
    from statistics import NormalDist

    p = n / k
    return {"raw": math.log(k / n), "smooth": math.log((k + 1) / (n + 1)) + 1, "relative": math.log((k - n) / n),
            "base2": math.log2(k / n), "base10": math.log10(k / n), "gombit": -math.log(-math.log(1 - p)),
            "normit": -NormalDist().inv_cdf(p)}[variant]


def test_csv_writes_inf_for_empty_classes_and_round_trips(tmp_path):
    f = coco_freq()
    p = tmp_path / "coco.csv"
    f.to_csv(p)
    rows = list(csv.DictReader(p.open()))
    assert rows[2]["raw"] == "inf" and rows[2]["smooth"] == repr(math.log(4) + 1)
    g = ClassFrequency.from_csv(p)
    assert g == f  # ids, names, counts, K (from the raw column), task, derived groups
    h = ClassFrequency.from_labels([0, 0, 1, 2, 2, 2], class_names=["x", "y", "z"])
    h.to_csv(p)
    assert ClassFrequency.from_csv(p) == h


def test_csv_total_and_official_layout(tmp_path):
    f = ClassFrequency.from_coco(LVIS)
    p = tmp_path / "t.csv"
    f.to_csv(p, total="sum")
    apple = next(csv.DictReader(p.open()))
    assert float(apple["raw"]) == pytest.approx(math.log(7 / 3)) and float(apple["raw_obj"]) == pytest.approx(math.log(10 / 4))
    # The authors' idf.csv: weight columns first, img_freq/instance_freq last, no category/name.
    official = tmp_path / "idf.csv"
    cols = ["smooth", "raw", "prob", "normit", "gombit", "base2", "base10", "img_freq", "instance_freq"]
    lines = [",".join(cols)] + [
        ",".join([repr(math.log(6 / (n + 1)) + 1), repr(math.log(5 / n)), "0", "0", "0", "0", "0", str(n), str(m)])
        for n, m in [(3, 4), (1, 1), (1, 1), (2, 4)]
    ]
    official.write_text("\n".join(lines) + "\n")
    g = ClassFrequency.from_csv(official)
    assert g.image_counts.tolist() == [3, 1, 1, 2] and g.object_counts.tolist() == [4, 1, 1, 4]
    assert g.num_images == 5 and g.num_instances == 10 and g.task == "detection"


def test_csv_bad_input(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("name,count\na,3\n")
    with pytest.raises(IIFError, match="no 'img_freq' column"):
        ClassFrequency.from_csv(p)
    p.write_text("img_freq,instance_freq\n3,3\n2.5,4\n")
    with pytest.raises(IIFError, match="line 3, column 'img_freq'"):
        ClassFrequency.from_csv(p)
    p.write_text("img_freq,instance_freq\n")
    with pytest.raises(IIFError, match="no rows"):
        ClassFrequency.from_csv(p)


# ----------------------------------------------------------------------------------- from_source
def test_from_source_detects_every_kind(tmp_path):
    assert ClassFrequency.from_source(LVIS) == ClassFrequency.from_coco(LVIS)
    assert ClassFrequency.from_source(LIST).image_counts.tolist() == [3, 1, 2]
    f = ClassFrequency.from_coco(LVIS)
    f.save(tmp_path / "saved.json")
    assert ClassFrequency.from_source(tmp_path / "saved.json") == f
    f.to_csv(tmp_path / "table.csv")
    assert ClassFrequency.from_source(tmp_path / "table.csv") == f
    np.save(tmp_path / "labels.npy", np.array([1, 1, 0, 3]))
    assert ClassFrequency.from_source(tmp_path / "labels.npy").image_counts.tolist() == [1, 2, 0, 1]
    (tmp_path / "labels.txt").write_text("2\n0\n\n2\n")
    assert ClassFrequency.from_source(tmp_path / "labels.txt").image_counts.tolist() == [1, 0, 2]
    _touch(tmp_path / "tree" / "b" / "1.jpg")
    _touch(tmp_path / "tree" / "a" / "1.png")
    _touch(tmp_path / "tree" / "a" / "2.png")
    g = ClassFrequency.from_source(tmp_path / "tree")
    assert g.class_names == ["a", "b"] and g.image_counts.tolist() == [2, 1]


def test_from_source_reads_what_posthoc_and_train_folder_read(tmp_path):
    # a plain JSON list of per-class counts (what `iif posthoc --counts` takes): K = the sum, as from_labels
    (tmp_path / "counts.json").write_text("[5, 0, 2]")
    f = ClassFrequency.from_source(tmp_path / "counts.json")
    assert f == ClassFrequency.from_labels([0] * 5 + [2] * 2, num_classes=3) == ClassFrequency.from_counts([5, 0, 2])
    assert f.task == "classification" and f.num_images == 7
    for bad, fragment in (("[]", "non-empty"), ("[1, -1]", "entry 1 is -1"), ('[1, "2"]', "entry 1"),
                          ("[true]", "entry 0"), ("[[1, 2]]", "entry 0")):
        (tmp_path / "bad.json").write_text(bad)
        with pytest.raises(IIFError, match=fragment):
            ClassFrequency.from_source(tmp_path / "bad.json")
    # a root split into train/ val/ test/ (the layout `iif train folder` reads) counts its train tree
    for split, per in (("train", (3, 1)), ("val", (2, 2)), ("test", (4, 4))):
        for cls, n in zip("ab", per):
            for i in range(n):
                _touch(tmp_path / "root" / split / cls / f"{i}.jpg")
    g = ClassFrequency.from_source(tmp_path / "root")
    assert g == ClassFrequency.from_folder(tmp_path / "root" / "train")
    assert g.class_names == ["a", "b"] and g.image_counts.tolist() == [3, 1]
    # from_folder itself reads the folder it is given: here three "classes" train/val/test
    assert ClassFrequency.from_folder(tmp_path / "root").class_names == ["test", "train", "val"]


def test_comments_and_blank_lines_in_label_and_list_files(tmp_path):
    (tmp_path / "labels.txt").write_text("# one label per line\n2\n\n  # indented comment\n0\n2\n")
    assert ClassFrequency.from_source(tmp_path / "labels.txt").image_counts.tolist() == [1, 0, 2]
    (tmp_path / "list.txt").write_text("# path label\n\na b/c.jpg\t1\nd.jpg  0\n")
    f = ClassFrequency.from_source(tmp_path / "list.txt")  # its first entry, not the comment, decides the kind
    assert f.image_counts.tolist() == [1, 1]
    with pytest.raises(IIFError, match=r"line 3: label 1 outside \[0, 1\)"):
        ClassFrequency.from_list_file(tmp_path / "list.txt", num_classes=1)


def test_from_source_bad_input(tmp_path):
    with pytest.raises(IIFError, match="no such file or directory"):
        ClassFrequency.from_source(tmp_path / "missing.json")
    (tmp_path / "other.json").write_text('{"hello": 1}')
    with pytest.raises(IIFError, match="neither COCO/LVIS"):
        ClassFrequency.from_source(tmp_path / "other.json")
    (tmp_path / "labels.txt").write_text("2\nx\n")
    with pytest.raises(IIFError, match="line 2 is 'x'"):
        ClassFrequency.from_source(tmp_path / "labels.txt")
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(IIFError, match="not a readable .npy"):
        ClassFrequency.from_source(tmp_path / "bad.npy")
    trunc = tmp_path / "t.json"
    trunc.write_text(LVIS.read_text()[:100])
    with pytest.raises(IIFError, match="t.json: invalid JSON"):
        ClassFrequency.from_source(trunc)


def test_summary_report():
    f = ClassFrequency.from_coco(LVIS)
    s = f.summary(many=2, few=2, top=2)
    assert (s["num_classes"], s["num_images"], s["num_instances"]) == (4, 5, 10)
    assert (s["min_count"], s["max_count"], s["imbalance_factor"]) == (1, 3, 3.0)
    assert s["shot_groups"] == {"many": 1, "medium": 1, "few": 2}
    assert s["lvis_groups"] == {"r": 4, "c": 0, "f": 0}
    assert [r["name"] for r in s["head"]] == ["apple", "zebra"]
    assert [r["name"] for r in s["tail"]] == ["bus", "kite"]  # ties keep class order (stable sort)


def test_image_extensions_match_torchvision_imagefolder():
    folder = pytest.importorskip("torchvision.datasets.folder")
    from iif.frequency import IMG_EXTENSIONS

    assert tuple(IMG_EXTENSIONS) == tuple(folder.IMG_EXTENSIONS)
