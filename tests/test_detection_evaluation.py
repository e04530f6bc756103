"""iif.detection.evaluation: LVIS AP equals the official lvis API, COCO AP equals pycocotools, tail-k AP
equals the mean of independently computed per-category APs, TIDE's ΔAP_FP follows added false positives,
and the false-positive count matches a hand count."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest

pytest.importorskip("faster_coco_eval")
from pycocotools import mask as mask_utils  # noqa: E402

from iif.detection import evaluation as E  # noqa: E402
from iif.errors import IIFError  # noqa: E402

# ------------------------------------------------------------------------------------------------ fixtures

FREQS = ["r", "r", "c", "c", "c", "f", "f", "f"]
IMAGE_COUNTS = [3, 7, 15, 40, 80, 150, 400, 900]


def _rle_str(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _ellipse_mask(h: int, w: int, box: list[float]) -> np.ndarray:
    x, y, bw, bh = box
    yy, xx = np.mgrid[0:h, 0:w]
    return (((xx + 0.5 - x - bw / 2) / (bw / 2)) ** 2 + ((yy + 0.5 - y - bh / 2) / (bh / 2)) ** 2) <= 1.0


def _mask_bbox(mask: np.ndarray) -> list[float]:
    return [float(v) for v in mask_utils.toBbox(mask_utils.encode(np.asfortranarray(mask.astype(np.uint8))))]


def make_lvis(seed: int = 0, num_images: int = 20, dets_per_gt: int = 3, background_dets: int = 6) -> tuple:
    """A random but realistic LVIS-v1-format val json and noisy results: 8 categories (2 r, 3 c, 3 f) with
    image_count fields, polygon and RLE masks (areas spanning small/medium/large), neg and not-exhaustive
    ids, and per image noisy copies of the objects (jittered, some with the wrong class) plus background
    detections of random classes (some verified, some not)."""
    rng = np.random.default_rng(seed)
    cats = [{"id": 10 + 3 * i, "name": f"cat{i}", "synset": f"cat{i}.n.01", "frequency": FREQS[i],
             "image_count": IMAGE_COUNTS[i], "instance_count": 2 * IMAGE_COUNTS[i]} for i in range(len(FREQS))]
    cat_ids = [c["id"] for c in cats]
    p = np.array([0.04, 0.06, 0.08, 0.1, 0.12, 0.16, 0.2, 0.24])
    images, anns, dets = [], [], []
    for i in range(num_images):
        img_id = 100 + 7 * i
        h, w = int(rng.integers(120, 260)), int(rng.integers(120, 260))
        present = set()
        for _ in range(int(rng.integers(1, 6))):
            cat = int(rng.choice(cat_ids, p=p))
            bw = float(rng.uniform(6, 0.7 * w))
            bh = float(rng.uniform(6, 0.7 * h))
            x, y = float(rng.uniform(0, w - bw)), float(rng.uniform(0, h - bh))
            mask = _ellipse_mask(h, w, [x, y, bw, bh])
            if mask.sum() < 4:
                continue
            if rng.random() < 0.5:  # polygon (an octagon inscribed in the box)
                t = np.linspace(0, 2 * np.pi, 9)[:-1]
                poly = np.stack([x + bw / 2 + bw / 2 * np.cos(t), y + bh / 2 + bh / 2 * np.sin(t)], 1)
                seg = [poly.ravel().round(2).tolist()]
                rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
                mask = mask_utils.decode(rle).astype(bool)
            else:
                seg = _rle_str(mask)
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": cat, "segmentation": seg,
                         "bbox": _mask_bbox(mask), "area": float(mask.sum())})
            present.add(cat)
            for _ in range(int(rng.integers(0, dets_per_gt + 1))):
                jitter = rng.normal(0, 0.12, 4) * np.array([bw, bh, bw, bh])
                box = [x + jitter[0], y + jitter[1], max(2.0, bw + jitter[2]), max(2.0, bh + jitter[3])]
                dcat = cat if rng.random() < 0.8 else int(rng.choice(cat_ids))
                dets.append({"image_id": img_id, "category_id": dcat, "bbox": [round(v, 2) for v in box],
                             "score": float(rng.uniform(0.05, 1.0)),
                             "segmentation": _rle_str(_ellipse_mask(h, w, box))})
        absent = [c for c in cat_ids if c not in present]
        neg = sorted(int(c) for c in rng.choice(absent, size=min(len(absent), 3), replace=False))
        not_ex = sorted(int(c) for c in present if rng.random() < 0.25)
        images.append({"id": img_id, "width": w, "height": h, "coco_url": f"http://x/{img_id}.jpg",
                       "neg_category_ids": neg, "not_exhaustive_category_ids": not_ex})
        for _ in range(background_dets):
            bw, bh = float(rng.uniform(5, w / 2)), float(rng.uniform(5, h / 2))
            box = [float(rng.uniform(0, w - bw)), float(rng.uniform(0, h - bh)), bw, bh]
            dets.append({"image_id": img_id, "category_id": int(rng.choice(cat_ids)),
                         "bbox": [round(v, 2) for v in box], "score": float(rng.uniform(0.0, 0.9)),
                         "segmentation": _rle_str(_ellipse_mask(h, w, box))})
    gt = {"info": {}, "licenses": [], "images": images, "annotations": anns, "categories": cats}
    return gt, dets


def make_coco(seed: int = 1) -> tuple:
    """The same scenes in COCO format (no federated fields; a few crowd regions)."""
    gt, dets = make_lvis(seed)
    for im in gt["images"]:
        del im["neg_category_ids"], im["not_exhaustive_category_ids"]
    for c in gt["categories"]:
        del c["frequency"]
    for k, a in enumerate(gt["annotations"]):
        a["iscrowd"] = int(k % 11 == 5)
        if a["iscrowd"] and isinstance(a["segmentation"], list):
            h = next(im["height"] for im in gt["images"] if im["id"] == a["image_id"])
            w = next(im["width"] for im in gt["images"] if im["id"] == a["image_id"])
            rle = mask_utils.frPyObjects(a["segmentation"], h, w)[0]
            a["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
    return gt, dets


@pytest.fixture(scope="module")
def lvis_data():
    return make_lvis(0)


@pytest.fixture(scope="module")
def official_lvis(lvis_data, tmp_path_factory):
    """The official lvis API (0.5.3) with the np.float alias it needs on numpy 2 (shim local to here)."""
    lvis = pytest.importorskip("lvis")
    gt, _ = lvis_data
    path = tmp_path_factory.mktemp("lvis") / "val.json"
    path.write_text(json.dumps(gt))

    def run(dets, iou_type, max_dets=300, other_gt=None):
        gt_path = path
        if other_gt is not None:
            gt_path = path.with_name("other.json")
            gt_path.write_text(json.dumps(other_gt))
        had = hasattr(np, "float")
        np.float = float  # removed in numpy 1.24; lvis 0.5.3 still uses it
        try:
            lgt = lvis.LVIS(str(gt_path))
            res = lvis.LVISResults(lgt, copy.deepcopy(dets), max_dets=max_dets)
            ev = lvis.LVISEval(lgt, res, iou_type=iou_type)
            ev.run()
            return dict(ev.get_results())
        finally:
            if not had:
                del np.float

    return run


# -------------------------------------------------------------------------------------- LVIS == official


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("max_dets", [300, 4])
def test_evaluate_lvis_equals_official_api(lvis_data, official_lvis, iou_type, max_dets):
    gt, dets = lvis_data
    ours = E.evaluate_lvis(gt, dets, iou_type=iou_type, max_dets=max_dets)
    ref = official_lvis(dets, iou_type, max_dets)
    assert set(ours) == {"AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf"}
    for key, value in ours.items():
        expected = ref[key] * 100 if ref[key] > -1 else float("nan")
        assert value == pytest.approx(expected, abs=1e-9, nan_ok=True), key
    # the fixture exercises every piece: all groups and areas have ground truth, AP is neither 0 nor 100
    assert all(math.isfinite(v) for v in ours.values()) and 5 < ours["AP"] < 95


def test_lvis_ignores_iscrowd_like_the_official_api(lvis_data, official_lvis):
    """The LVIS API has no crowd regions: an iscrowd flag in LVIS json changes nothing there, nor here."""
    gt, dets = lvis_data
    crowded = copy.deepcopy(gt)
    for a in crowded["annotations"][::4]:
        a["iscrowd"] = 1
    ours = E.evaluate_lvis(crowded, dets, iou_type="segm")
    ref = official_lvis(dets, "segm", other_gt=crowded)
    assert ours == E.evaluate_lvis(gt, dets, iou_type="segm")
    assert ours["AP"] == pytest.approx(ref["AP"] * 100, abs=1e-9)


def test_lvis_rules_change_the_numbers(lvis_data, official_lvis):
    """The fixture is not trivial: COCO rules (no federated filter) and a 4-per-image cap give other APs."""
    gt, dets = lvis_data
    lv = E.evaluate_lvis(gt, dets)
    assert E.evaluate_lvis(gt, dets, max_dets=4)["AP"] != pytest.approx(lv["AP"])
    coco_gt = copy.deepcopy(gt)
    for im in coco_gt["images"]:
        del im["neg_category_ids"], im["not_exhaustive_category_ids"]
    assert E.evaluate_coco(coco_gt, dets)["AP"] < lv["AP"] - 1  # unverified detections now count as FPs


def test_unverified_category_detections_do_not_count(lvis_data):
    """A detection of a category neither annotated nor negative on its image is never evaluated."""
    gt, dets = lvis_data
    im = gt["images"][0]
    present = {a["category_id"] for a in gt["annotations"] if a["image_id"] == im["id"]}
    unverified = [c["id"] for c in gt["categories"] if c["id"] not in present | set(im["neg_category_ids"])]
    negative = im["neg_category_ids"][0]
    extra = lambda c: [{"image_id": im["id"], "category_id": c, "bbox": [1, 1, 20, 20], "score": 0.999}]
    base = E.evaluate_lvis(gt, dets)
    assert E.evaluate_lvis(gt, dets + extra(unverified[0])) == base
    assert E.evaluate_lvis(gt, dets + extra(negative))["AP"] < base["AP"]


def test_inputs_are_not_modified(lvis_data, tmp_path):
    gt, dets = lvis_data
    gt_before, dets_before = json.dumps(gt), json.dumps(dets)
    E.evaluate_lvis(gt, dets, iou_type="segm")
    E.tide_errors(gt, dets, iou_type="segm")
    E.tail_k_ap(gt, dets, ks=(2, 5), iou_type="segm")
    E.count_false_positives(gt, dets, iou_type="segm")
    assert json.dumps(gt) == gt_before and json.dumps(dets) == dets_before


def test_paths_and_dicts_give_the_same(lvis_data, tmp_path):
    gt, dets = lvis_data
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    from_paths = E.evaluate_lvis(str(tmp_path / "gt.json"), tmp_path / "dets.json")
    assert from_paths == E.evaluate_lvis(gt, dets)


def test_empty_detections_give_zero_ap(lvis_data):
    gt, _ = lvis_data
    assert E.evaluate_lvis(gt, [])["AP"] == 0.0


# ----------------------------------------------------------------------------------- COCO == pycocotools


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_evaluate_coco_equals_pycocotools(iou_type, capsys):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt, dets = make_coco(1)
    coco_gt = COCO()
    coco_gt.dataset = copy.deepcopy(gt)
    coco_gt.createIndex()
    ev = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(dets)), iou_type)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    capsys.readouterr()
    ours = E.evaluate_coco(gt, dets, iou_type)
    assert any(a["iscrowd"] for a in gt["annotations"])
    for i, key in enumerate(["AP", "AP50", "AP75", "APs", "APm", "APl"]):
        assert ours[key] == pytest.approx(ev.stats[i] * 100, abs=1e-9), key


# ------------------------------------------------------------------------------------------------ tail-k


def _pycocotools_category_ap(gt: dict, dets: list, cat_id: int, iou_type: str) -> float:
    """One category's AP by pycocotools with params.catIds restricted to it (COCO rules)."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(dets)), iou_type)
        ev.params.catIds = [cat_id]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[0] * 100


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_tail_k_ap_is_mean_of_the_rarest_categories(iou_type):
    gt, dets = make_coco(2)
    # training counts with a tie (ids 19 and 22 both 5: the smaller id goes first), an order unlike the ids,
    # and the rarest category (id 10, count 0) without ground truth in this val json: AP is undefined for
    # it, so it is skipped and tail-k averages k categories that have one
    counts = [0, 9, 400, 5, 5, 120, 2, 30]
    cat_ids = sorted(c["id"] for c in gt["categories"])
    with_gt = sorted({a["category_id"] for a in gt["annotations"]})
    assert with_gt == cat_ids[1:]
    order = sorted(with_gt, key=lambda c: (counts[cat_ids.index(c)], c))
    assert order[:4] == [28, 19, 22, 13]
    per_cat = {c: _pycocotools_category_ap(gt, dets, c, iou_type) for c in with_gt}
    out = E.tail_k_ap(gt, dets, ks=(1, 2, 3, 7), iou_type=iou_type, train_counts=counts)
    assert out["tail1"] == pytest.approx(per_cat[28], abs=1e-9)
    # k = 2 splits the tie: 19 (the smaller id) is in, 22 is out; the two differ, so another tie-break fails
    assert abs(per_cat[19] - per_cat[22]) > 1.0
    assert out["tail2"] == pytest.approx((per_cat[28] + per_cat[19]) / 2, abs=1e-9)
    assert out["tail3"] == pytest.approx(np.mean([per_cat[c] for c in (28, 19, 22)]), abs=1e-9)
    assert out["tail7"] == pytest.approx(E.evaluate_coco(gt, dets, iou_type)["AP"], abs=1e-9)
    with pytest.raises(IIFError, match="ks of at most 7"):
        E.tail_k_ap(gt, dets, ks=(8,), iou_type=iou_type, train_counts=counts)
    assert len({round(v, 6) for v in per_cat.values()}) > 3  # categories really differ


def _train_json(image_counts: list[int], instance_counts: list[int], cat_ids: list[int]) -> dict:
    """A training json where category ``cat_ids[i]`` appears on ``image_counts[i]`` images of its own with
    ``instance_counts[i]`` annotations in all (the surplus on its first image)."""
    images, anns = [], []
    for cat, n_img, n_inst in zip(cat_ids, image_counts, instance_counts):
        for j in range(n_img):
            images.append({"id": len(images) + 1, "width": 50, "height": 50})
            for _ in range(1 + (n_inst - n_img if j == 0 else 0)):
                anns.append({"id": len(anns) + 1, "image_id": images[-1]["id"], "category_id": cat,
                             "bbox": [1.0, 1.0, 10.0, 10.0], "area": 100.0, "iscrowd": 0})
    return {"images": images, "annotations": anns, "categories": [{"id": c, "name": f"c{c}"} for c in cat_ids]}


def test_tail_k_ap_orders_a_class_frequency_by_image_counts():
    """Tail-k means the k categories with the fewest training *images* (paper Tables XVII, XVIII): given a
    ClassFrequency, its image counts decide, not its instance counts (here the two orders differ)."""
    from iif.frequency import ClassFrequency

    gt, dets = make_coco(2)
    cat_ids = sorted(c["id"] for c in gt["categories"])  # 10, 13, ..., 31; id 10 has no val ground truth
    images = [6, 1, 2, 3, 4, 5, 7, 8]
    instances = [6, 9, 8, 3, 4, 5, 7, 8]  # by instances 19 and 22 are the rarest, by images 13 and 16
    freq = ClassFrequency.from_coco(_train_json(images, instances, cat_ids))
    assert freq.image_counts.tolist() == images and freq.object_counts.tolist() == instances
    per_cat = {c: _pycocotools_category_ap(gt, dets, c, "bbox") for c in (13, 16, 19, 22)}
    assert abs((per_cat[13] + per_cat[16]) - (per_cat[19] + per_cat[22])) > 1.0  # the orders give other APs
    out = E.tail_k_ap(gt, dets, ks=(1, 2), train_counts=freq)
    assert out["tail1"] == pytest.approx(per_cat[13], abs=1e-9)
    assert out["tail2"] == pytest.approx((per_cat[13] + per_cat[16]) / 2, abs=1e-9)
    assert E.tail_k_ap(gt, dets, ks=(2,), train_counts=images) == {"tail2": out["tail2"]}


def test_tail_k_ap_defaults_to_image_count_and_lvis_rules(lvis_data):
    gt, dets = lvis_data
    out = E.tail_k_ap(gt, dets, ks=(2, 5, 8))
    # the two rarest (image_count 3 and 7) are exactly the r group, and k = all is LVIS AP
    lv = E.evaluate_lvis(gt, dets)
    assert out["tail2"] == pytest.approx(lv["APr"], abs=1e-9)
    assert out["tail8"] == pytest.approx(lv["AP"], abs=1e-9)


def test_tail_k_ap_bad_input(lvis_data):
    gt, dets = lvis_data
    with pytest.raises(IIFError, match="train_counts has shape"):
        E.tail_k_ap(gt, dets, train_counts=[1, 2, 3])
    with pytest.raises(IIFError, match="ks of at most 8"):
        E.tail_k_ap(gt, dets, ks=(20,))
    no_counts = copy.deepcopy(gt)
    for c in no_counts["categories"]:
        del c["image_count"]
    with pytest.raises(IIFError, match="pass train_counts"):
        E.tail_k_ap(no_counts, dets)


# -------------------------------------------------------------------------------------------------- TIDE


def _background_fps(gt: dict, n_per_image: int, seed: int, cats_of) -> list:
    """High-scoring boxes in an image corner region free of ground truth (IoU 0 with every object)."""
    rng = np.random.default_rng(seed)
    out = []
    for im in gt["images"]:
        for _ in range(n_per_image):
            out.append({"image_id": im["id"], "category_id": int(rng.choice(cats_of(im))),
                        "bbox": [-40.0, -40.0, 30.0, 30.0], "score": float(rng.uniform(0.9, 1.0))})
    return out


def test_tide_dap_fp_rises_with_added_false_positives():
    gt, dets = make_coco(3)
    cats = [c["id"] for c in gt["categories"]]
    fps = _background_fps(gt, 2, 0, lambda im: cats)
    clean = E.tide_errors(gt, dets)
    noisy = E.tide_errors(gt, dets + fps)
    assert set(clean) == {"dAP_Cls", "dAP_Loc", "dAP_Both", "dAP_Dupe", "dAP_Bkg", "dAP_Miss", "dAP_FP",
                          "dAP_FN", "AP50_tide"}
    assert noisy["dAP_FP"] > clean["dAP_FP"] + 1
    assert noisy["dAP_Bkg"] > clean["dAP_Bkg"] and noisy["AP50_tide"] < clean["AP50_tide"]
    # removing them restores the numbers exactly; removing the fixture's own FPs lowers dAP_FP further
    assert E.tide_errors(gt, dets) == clean
    coco_fp_free = [d for d in dets if d["score"] > 0.0 and _matches_any(gt, d)]
    assert E.tide_errors(gt, coco_fp_free)["dAP_FP"] < clean["dAP_FP"]


def _matches_any(gt: dict, det: dict) -> bool:
    anns = [a for a in gt["annotations"] if a["image_id"] == det["image_id"]
            and a["category_id"] == det["category_id"]]
    if not anns:
        return False
    return float(np.max(mask_utils.iou([det["bbox"]], [a["bbox"] for a in anns], [0] * len(anns)))) >= 0.5


def test_tide_segm_runs_and_reports_percent(lvis_data):
    gt, dets = lvis_data
    out = E.tide_errors(gt, dets, iou_type="segm")
    assert 5 < out["AP50_tide"] < 100 and all(v >= 0 for v in out.values())


def test_tide_segm_scores_masks_not_boxes():
    """A hand-built image where boxes and masks disagree, so TIDE on masks must give other errors than on
    boxes. Object A: box exact, mask an L shape (mask IoU 700/1600 = 0.4375, a localisation error only for
    masks). Object B: mask exact, box shifted by half its width (box IoU 600/1800 = 1/3, a localisation
    error only for boxes). A scores 0.9, B 0.6. With TIDE's 101 recall points, recall 0..0.5 is 51 points:
    boxes: A is a hit at precision 1 -> AP50 = 100 * 51/101, fixing B's box gives 100;
    masks: A is a miss before B's hit (precision 1/2) -> AP50 = 50 * 51/101, fixing A's mask gives 100,
    dropping the false positive A gives 100 * 51/101."""
    h = w = 100
    a_full, a_l, b_full = (np.zeros((h, w), bool) for _ in range(3))
    a_full[10:50, 10:50] = True
    a_l[10:20, 10:50] = True
    a_l[10:50, 10:20] = True
    b_full[60:90, 55:95] = True
    gt = {"images": [{"id": 1, "width": w, "height": h}], "categories": [{"id": 1, "name": "a"}],
          "annotations": [
              {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10.0, 10.0, 40.0, 40.0], "area": 1600.0,
               "iscrowd": 0, "segmentation": _rle_str(a_full)},
              {"id": 2, "image_id": 1, "category_id": 1, "bbox": [55.0, 60.0, 40.0, 30.0], "area": 1200.0,
               "iscrowd": 0, "segmentation": _rle_str(b_full)}]}
    dets = [{"image_id": 1, "category_id": 1, "bbox": [10.0, 10.0, 40.0, 40.0], "score": 0.9,
             "segmentation": _rle_str(a_l)},
            {"image_id": 1, "category_id": 1, "bbox": [75.0, 60.0, 40.0, 30.0], "score": 0.6,
             "segmentation": _rle_str(b_full)}]
    assert float(mask_utils.iou([_rle_str(a_l)], [_rle_str(a_full)], [0])[0, 0]) == pytest.approx(0.4375)
    boxes = E.tide_errors(gt, dets, iou_type="bbox")
    masks = E.tide_errors(gt, dets, iou_type="segm")
    half, quarter = 100 * 51 / 101, 50 * 51 / 101
    assert boxes["AP50_tide"] == pytest.approx(half, abs=1e-9)
    assert boxes["dAP_Loc"] == pytest.approx(100 - half, abs=1e-9) and boxes["dAP_FP"] == pytest.approx(0, abs=1e-9)
    assert masks["AP50_tide"] == pytest.approx(quarter, abs=1e-9)
    assert masks["dAP_Loc"] == pytest.approx(100 - quarter, abs=1e-9)
    assert masks["dAP_FP"] == pytest.approx(half - quarter, abs=1e-9)
    for k in ("dAP_Cls", "dAP_Both", "dAP_Dupe", "dAP_Bkg", "dAP_Miss"):
        assert boxes[k] == masks[k] == 0.0, k


def test_tide_lvis_drops_unverified_categories(lvis_data):
    """On LVIS json, FPs of categories nobody verified on that image leave ΔAP_FP unchanged; FPs of a
    negative (verified-absent) category raise it."""
    gt, dets = lvis_data
    present = {}
    for a in gt["annotations"]:
        present.setdefault(a["image_id"], set()).add(a["category_id"])
    all_cats = {c["id"] for c in gt["categories"]}

    def unverified(im):
        left = sorted(all_cats - present.get(im["id"], set()) - set(im["neg_category_ids"]))
        return left or [None]

    extra_unverified = [d for d in _background_fps(gt, 2, 1, unverified) if d["category_id"] is not None]
    extra_negative = _background_fps(gt, 2, 1, lambda im: im["neg_category_ids"])
    assert extra_unverified
    base = E.tide_errors(gt, dets)
    assert E.tide_errors(gt, dets + extra_unverified) == base
    assert E.tide_errors(gt, dets + extra_negative)["dAP_FP"] > base["dAP_FP"] + 1


# ------------------------------------------------------------------------------------- false positives


def _tiny_gt(lvis: bool = True) -> dict:
    images = [{"id": 1, "width": 100, "height": 100, "neg_category_ids": [2], "not_exhaustive_category_ids": []},
              {"id": 2, "width": 100, "height": 100, "neg_category_ids": [], "not_exhaustive_category_ids": [1]}]
    cats = [{"id": 1, "name": "a", "frequency": "f", "image_count": 200},
            {"id": 2, "name": "b", "frequency": "r", "image_count": 3},
            {"id": 3, "name": "c", "frequency": "c", "image_count": 30}]
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20], "area": 400.0},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 50, 20, 20], "area": 400.0},
            {"id": 3, "image_id": 2, "category_id": 1, "bbox": [10, 10, 30, 30], "area": 900.0}]
    if not lvis:
        for im in images:
            del im["neg_category_ids"], im["not_exhaustive_category_ids"]
        for c in cats:
            del c["frequency"]
    return {"images": images, "annotations": anns, "categories": cats}


def _det(img, cat, box, score):
    return {"image_id": img, "category_id": cat, "bbox": box, "score": score}


TINY_DETS = [
    _det(1, 1, [0, 0, 20, 20], 0.9),    # TP (GT 1)
    _det(1, 1, [1, 1, 20, 20], 0.8),    # duplicate of GT 1 -> FP
    _det(1, 1, [50, 50, 20, 21], 0.5),  # TP (GT 2)
    _det(1, 1, [80, 0, 10, 10], 0.2),   # background but below the score threshold
    _det(1, 2, [50, 50, 20, 20], 0.7),  # category 2 is negative on image 1 -> FP
    _det(1, 3, [0, 0, 20, 20], 0.95),   # category 3 unverified on image 1 -> ignored (LVIS)
    _det(2, 1, [60, 60, 10, 10], 0.6),  # category 1 not exhaustive on image 2, unmatched -> ignored (LVIS)
    _det(2, 1, [10, 10, 30, 30], 0.4),  # TP (GT 3)
    _det(2, 2, [10, 10, 30, 30], 0.99), # category 2 unverified on image 2 -> ignored (LVIS)
    _det(1, 1, [0, 0, 20, 40], 0.35),   # IoU 0.5 with GT 1 (already taken by 0.9) -> FP
]


def test_count_false_positives_by_hand():
    gt = _tiny_gt()
    assert E.count_false_positives(gt, TINY_DETS) == 3
    assert E.false_positives_by_group(gt, TINY_DETS) == {"r": 1, "c": 0, "f": 2, "all": 3}
    # lower score threshold: the 0.2 background box counts too
    assert E.count_false_positives(gt, TINY_DETS, score_threshold=0.1) == 4
    # IoU threshold above the 0.35 box's IoU but matching the 21-px-tall TP (IoU 20/21) keeps it a TP
    assert E.count_false_positives(gt, TINY_DETS, iou_threshold=0.9) == 3
    # COCO rules (no federated fields): unverified and not-exhaustive detections are FPs too
    assert E.count_false_positives(_tiny_gt(lvis=False), TINY_DETS) == 6
    assert E.false_positives_by_group(_tiny_gt(lvis=False), TINY_DETS) == {"r": 2, "c": 1, "f": 3, "all": 6}


def test_count_false_positives_iou_exactly_at_threshold_matches():
    gt = _tiny_gt(lvis=False)
    # IoU([0,0,20,40], [0,0,20,20]) = 400 / 800 = 0.5: a match at iou_threshold=0.5
    assert E.count_false_positives(gt, [_det(1, 1, [0, 0, 20, 40], 0.9)]) == 0
    assert E.count_false_positives(gt, [_det(1, 1, [0, 0, 20, 40], 0.9)], iou_threshold=0.51) == 1


def test_count_false_positives_segm_and_crowd():
    h = w = 40
    m1 = np.zeros((h, w), bool)
    m1[5:15, 5:15] = True
    crowd = np.zeros((h, w), bool)
    crowd[20:40, 20:40] = True
    gt = {"images": [{"id": 1, "width": w, "height": h}],
          "categories": [{"id": 1, "name": "a"}],
          "annotations": [
              {"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, 10, 10], "area": 100.0,
               "segmentation": [[5, 5, 15, 5, 15, 15, 5, 15]], "iscrowd": 0},
              {"id": 2, "image_id": 1, "category_id": 1, "bbox": [20, 20, 20, 20], "area": 400.0,
               "segmentation": _rle_str(crowd), "iscrowd": 1}]}
    inside_crowd = np.zeros((h, w), bool)
    inside_crowd[25:30, 25:30] = True
    off = np.zeros((h, w), bool)
    off[0:3, 30:40] = True
    dets = [{"image_id": 1, "category_id": 1, "bbox": [5, 5, 10, 10], "score": 0.9, "segmentation": _rle_str(m1)},
            {"image_id": 1, "category_id": 1, "bbox": [25, 25, 5, 5], "score": 0.8,
             "segmentation": _rle_str(inside_crowd)},
            {"image_id": 1, "category_id": 1, "bbox": [30, 0, 10, 3], "score": 0.7, "segmentation": _rle_str(off)}]
    assert E.count_false_positives(gt, dets, iou_type="segm") == 1
    assert E.count_false_positives(gt, dets, iou_type="bbox") == 1


# --------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(image_id=99999), "image ids not in the ground truth"),
    (lambda d: d.update(category_id=5), "category ids not in the ground truth"),
    (lambda d: d.update(bbox=[1, 2, 3]), "bbox that is not 4 finite numbers"),
    (lambda d: d.update(bbox=[1, 2, float("nan"), 3]), "bbox that is not 4 finite numbers"),
    (lambda d: d.update(score=float("inf")), "non-finite score"),
    (lambda d: d.pop("score"), "non-finite score"),
    (lambda d: d.update(score="0.9"), "non-finite score"),
    (lambda d: d.update(bbox=["1", 2, 3, 4]), "bbox that is not 4 finite numbers"),
    (lambda d: d.update(bbox=[1, 2, -3, 4]), "bbox that is not 4 finite numbers"),
])
def test_check_results_rejects_bad_detections(lvis_data, change, message):
    gt, dets = lvis_data
    bad = copy.deepcopy(dets[:5])
    change(bad[2])
    with pytest.raises(IIFError, match=message) as info:
        E.check_results(gt, bad)
    assert "\n" not in str(info.value)
    with pytest.raises(IIFError, match=message):
        E.evaluate_lvis(gt, bad)


def test_check_results_segm_and_formats(lvis_data, tmp_path):
    gt, dets = lvis_data
    E.check_results(gt, dets, iou_type="segm")
    no_mask = copy.deepcopy(dets[:3])
    del no_mask[1]["segmentation"]
    E.check_results(gt, no_mask)  # fine for boxes
    with pytest.raises(IIFError, match="RLE 'segmentation'"):
        E.check_results(gt, no_mask, iou_type="segm")
    wrong_size = copy.deepcopy(dets[:1])
    wrong_size[0]["segmentation"]["size"] = [1, 1]
    with pytest.raises(IIFError, match="RLE 'segmentation'"):
        E.evaluate_lvis(gt, wrong_size, iou_type="segm")
    with pytest.raises(IIFError, match="iou_type"):
        E.evaluate_lvis(gt, dets, iou_type="mask")
    (tmp_path / "d.json").write_text(json.dumps({"annotations": []}))
    with pytest.raises(IIFError, match="json list"):
        E.check_results(gt, tmp_path / "d.json")
    with pytest.raises(IIFError, match="no such file"):
        E.check_results(gt, tmp_path / "missing.json")
    with pytest.raises(IIFError, match="not a COCO/LVIS annotation"):
        E.check_results({"images": []}, dets)


def test_evaluate_lvis_needs_lvis_fields(lvis_data):
    gt, dets = lvis_data
    coco_like = copy.deepcopy(gt)
    del coco_like["images"][3]["not_exhaustive_category_ids"]
    with pytest.raises(IIFError, match="not_exhaustive_category_ids.*evaluate_coco"):
        E.evaluate_lvis(coco_like, dets)
    with pytest.raises(IIFError, match="max_dets"):
        E.evaluate_lvis(gt, dets, max_dets=0)


def test_missing_package_names_the_extra(monkeypatch, lvis_data):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("faster_coco_eval") or name.startswith("tidecv"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    gt, dets = lvis_data
    with pytest.raises(IIFError, match=r'pip install "iif\[detection\]"'):
        E.evaluate_lvis(gt, dets)
    with pytest.raises(IIFError, match=r'pip install "iif\[detection\]"'):
        E.tide_errors(gt, dets)


def test_empty_results_everywhere(lvis_data):
    gt, _ = lvis_data
    tide = E.tide_errors(gt, [])
    assert tide["AP50_tide"] == 0.0 and all(math.isnan(v) for k, v in tide.items() if k.startswith("dAP"))
    assert E.count_false_positives(gt, []) == 0
    assert E.tail_k_ap(gt, [], ks=(2,)) == {"tail2": 0.0}
