"""iif.detection.data on fixtures in the real on-disk formats (PNG/JPEG files, a COCO instances json, a LVIS v1
json with coco_url and no file_name): exact targets, flips, every bad input named by id, results that
pycocotools scores AP 100 when they equal the ground truth, and the --data layouts."""

from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from iif import ClassFrequency
from iif.detection import (
    DetectionDataset,
    collate,
    detections_to_results,
    load_detection_dataset,
    repeat_factors,
    resolve_detection_data,
    validate_annotations,
)
from iif.detection.data import image_paths
from iif.errors import IIFError

# pycocotools' mask.decode under numpy 2 (called by torchvision's wrapper), not ours.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

# Categories listed out of id order: sorted ids 5 (apple), 9 (cup), 20 (zebra) -> labels 1, 2, 3.
CATEGORIES = [{"id": 20, "name": "zebra"}, {"id": 5, "name": "apple"}, {"id": 9, "name": "cup"}]
SIZES = {1: (30, 40), 2: (24, 32), 3: (20, 20), 4: (16, 16)}  # image id -> (height, width)
RECT = [2, 3, 12, 3, 12, 11, 2, 11]  # covers rows 3..10, columns 2..11: 80 pixels


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _annotations() -> list[dict]:
    m = np.zeros(SIZES[2], np.uint8)
    m[4:10, 6:20] = 1
    return [
        {"id": 11, "image_id": 1, "category_id": 20, "bbox": [2, 3, 10, 8], "segmentation": [RECT], "area": 80,
         "iscrowd": 0},
        {"id": 12, "image_id": 1, "category_id": 5, "bbox": [20, 5, 8, 12], "segmentation": [[20, 5, 28, 5, 20, 17]],
         "area": 48, "iscrowd": 0},
        # A crowd region (uncompressed RLE, as COCO writes crowds): not a training target.
        {"id": 13, "image_id": 1, "category_id": 9, "bbox": [0, 0, 40, 30],
         "segmentation": {"size": [30, 40], "counts": [0, 1200]}, "area": 1200, "iscrowd": 1},
        {"id": 14, "image_id": 2, "category_id": 9, "bbox": [6, 4, 14, 6], "segmentation": _rle(m), "area": 84,
         "iscrowd": 0},
        {"id": 15, "image_id": 2, "category_id": 5, "bbox": [1, 1, 5, 5], "segmentation": [[1, 1, 6, 1, 6, 6, 1, 6]],
         "area": 25, "iscrowd": 0},
        # Image 4 holds only a crowd region; image 3 has no annotation.
        {"id": 16, "image_id": 4, "category_id": 20, "bbox": [0, 0, 16, 16],
         "segmentation": {"size": [16, 16], "counts": [0, 256]}, "area": 256, "iscrowd": 1},
    ]


def _write_images(folder, ext: str = ".png", name=lambda i: f"{i:012d}") -> dict[int, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    pixels = {}
    for i, (h, w) in SIZES.items():
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        path = folder / f"{name(i)}{ext}"
        Image.fromarray(arr).save(path)
        pixels[i] = np.asarray(Image.open(path).convert("RGB"))  # JPEG: what the decoder gives back
    return pixels


def make_coco(root, ext: str = ".png"):
    """COCO layout: file_name relative to the image root."""
    pixels = _write_images(root / "images", ext)
    ann = {"info": {}, "licenses": [], "categories": CATEGORIES, "annotations": _annotations(),
           "images": [{"id": i, "file_name": f"{i:012d}{ext}", "height": h, "width": w} for i, (h, w) in SIZES.items()]}
    path = root / "instances.json"
    path.write_text(json.dumps(ann))
    return path, root / "images", pixels


def make_lvis(root, flat: bool = False):
    """LVIS v1: no file_name, coco_url into a COCO folder (image root = COCO root), no iscrowd fields."""
    pixels = _write_images(root if flat else root / "train2017", ".jpg")
    anns = _annotations()
    anns = [{k: v for k, v in a.items() if k != "iscrowd"} for a in anns if not a["iscrowd"]]
    images = [{"id": i, "height": h, "width": w, "coco_url": f"http://images.cocodataset.org/train2017/{i:012d}.jpg",
               "neg_category_ids": [], "not_exhaustive_category_ids": []} for i, (h, w) in SIZES.items()]
    cats = [dict(c, frequency="r", synset=c["name"] + ".n.01") for c in CATEGORIES]
    path = root / "lvis_v1_train.json"
    path.write_text(json.dumps({"info": {}, "licenses": [], "images": images, "annotations": anns,
                                "categories": cats}))
    return path, root, pixels


def _mask_by_pycocotools(ann_path, ann_id: int) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(ann_path))
    return coco.annToMask(coco.anns[ann_id])


# ------------------------------------------------------------------------------------------- targets


def test_coco_targets_exact(tmp_path):
    path, images, pixels = make_coco(tmp_path)
    ds = load_detection_dataset(path, images, train=True, hflip=False)
    assert isinstance(ds, DetectionDataset)
    # Image 3 (no annotation) and image 4 (only a crowd) are dropped for training.
    assert ds.image_ids == [1, 2] and ds.num_dropped == 2 and len(ds) == 2
    assert ds.json_positions.tolist() == [0, 1]
    assert ds.category_ids == [5, 9, 20] and ds.class_names == ["apple", "cup", "zebra"] and ds.num_classes == 3
    ref = ClassFrequency.from_coco(path)
    np.testing.assert_array_equal(ds.freq.image_counts, ref.image_counts)
    np.testing.assert_array_equal(ds.freq.object_counts, [2, 2, 2])  # crowds count as instances in the json
    assert ds.freq.num_images == 4

    image, t = ds[0]
    assert image.dtype == torch.float32 and image.shape == (3, 30, 40) and type(image) is torch.Tensor
    np.testing.assert_allclose(image.permute(1, 2, 0).numpy(), pixels[1] / 255.0, atol=1e-7)
    assert t["image_id"] == 1 and isinstance(t["image_id"], int)
    assert t["boxes"].dtype == torch.float32 and type(t["boxes"]) is torch.Tensor
    torch.testing.assert_close(t["boxes"], torch.tensor([[2.0, 3.0, 12.0, 11.0], [20.0, 5.0, 28.0, 17.0]]))
    assert t["labels"].dtype == torch.int64 and t["labels"].tolist() == [3, 1]  # zebra, apple; crowd cup gone
    assert t["masks"].dtype == torch.uint8 and t["masks"].shape == (2, 30, 40)
    rect = np.zeros((30, 40), np.uint8)
    rect[3:11, 2:12] = 1  # the rectangle polygon, rasterised by hand
    np.testing.assert_array_equal(t["masks"][0].numpy(), rect)
    for k, ann_id in enumerate((11, 12)):
        np.testing.assert_array_equal(t["masks"][k].numpy(), _mask_by_pycocotools(path, ann_id))

    _, t = ds[1]
    torch.testing.assert_close(t["boxes"], torch.tensor([[6.0, 4.0, 20.0, 10.0], [1.0, 1.0, 6.0, 6.0]]))
    assert t["labels"].tolist() == [2, 1]
    for k, ann_id in enumerate((14, 15)):
        np.testing.assert_array_equal(t["masks"][k].numpy(), _mask_by_pycocotools(path, ann_id))
    assert int(t["masks"][0].sum()) == 84


def test_evaluation_split_keeps_every_image_with_empty_targets(tmp_path):
    path, images, _ = make_coco(tmp_path)
    ds = load_detection_dataset(path, images, train=False)
    assert ds.image_ids == [1, 2, 3, 4] and ds.num_dropped == 0 and ds.hflip == 0.0
    for i in (2, 3):
        image, t = ds[i]
        h, w = SIZES[ds.image_ids[i]]
        assert t["boxes"].shape == (0, 4) and t["boxes"].dtype == torch.float32
        assert t["labels"].shape == (0,) and t["labels"].dtype == torch.int64
        assert t["masks"].shape == (0, h, w) and t["masks"].dtype == torch.uint8
        assert image.shape == (3, h, w)
    # Repeated reads are identical (no flip for evaluation).
    torch.testing.assert_close(ds[0][1]["boxes"], ds[0][1]["boxes"])
    torch.testing.assert_close(ds[0][0], ds[0][0])


def test_boxes_only(tmp_path):
    path, images, _ = make_coco(tmp_path)
    _, t = load_detection_dataset(path, images, train=True, masks=False, hflip=False)[0]
    assert set(t) == {"boxes", "labels", "image_id"}


@pytest.mark.parametrize("flat", [False, True])
def test_lvis_v1_coco_url_paths(tmp_path, flat):
    path, root, pixels = make_lvis(tmp_path, flat=flat)
    expected = [str(root / ("" if flat else "train2017") / f"{i:012d}.jpg") for i in SIZES]
    data = json.loads(path.read_text())
    assert image_paths(data["images"], root) == expected
    ds = load_detection_dataset(path, root, train=True, hflip=False)
    assert ds.image_ids == [1, 2] and ds.num_dropped == 2
    image, t = ds[1]
    np.testing.assert_allclose(image.permute(1, 2, 0).numpy(), pixels[2] / 255.0, atol=1e-7)  # the JPEG as decoded
    torch.testing.assert_close(t["boxes"], torch.tensor([[6.0, 4.0, 20.0, 10.0], [1.0, 1.0, 6.0, 6.0]]))
    assert t["labels"].tolist() == [2, 1]
    np.testing.assert_array_equal(t["masks"][1].numpy(), _mask_by_pycocotools(path, 15))
    # The json's factors, picked at the kept images, equal the dataset's.
    np.testing.assert_array_equal(repeat_factors(ds, 0.9), repeat_factors(path, 0.9)[[0, 1]])


def test_hflip_moves_boxes_and_masks_with_the_image(tmp_path):
    path, images, _ = make_coco(tmp_path)
    plain = load_detection_dataset(path, images, train=True, hflip=False)
    flipped = load_detection_dataset(path, images, train=True, hflip=1.0)
    for i in range(len(plain)):
        (im0, t0), (im1, t1) = plain[i], flipped[i]
        w = im0.shape[-1]
        torch.testing.assert_close(im1, im0.flip(-1))
        b = t0["boxes"]
        torch.testing.assert_close(t1["boxes"], torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], 1))
        torch.testing.assert_close(t1["masks"], t0["masks"].flip(-1))
        assert t1["labels"].tolist() == t0["labels"].tolist()
        # Each flipped mask still fills its flipped box: the box of the mask equals the target box.
        for m, box in zip(t1["masks"], t1["boxes"]):
            ys, xs = torch.nonzero(m, as_tuple=True)
            assert float(xs.min()) >= float(box[0]) - 0.5 and float(xs.max()) + 1 <= float(box[2]) + 0.5
    # Training flips by default with probability 1/2: both outcomes, each consistent.
    ds = load_detection_dataset(path, images, train=True)
    assert ds.hflip == 0.5
    seen = set()
    torch.manual_seed(0)
    for _ in range(16):
        im, t = ds[0]
        was_flipped = torch.equal(im, plain[0][0].flip(-1))
        assert was_flipped or torch.equal(im, plain[0][0])
        ref = flipped[0][1] if was_flipped else plain[0][1]
        torch.testing.assert_close(t["boxes"], ref["boxes"])
        torch.testing.assert_close(t["masks"], ref["masks"])
        seen.add(was_flipped)
    assert seen == {True, False}


def test_collate(tmp_path):
    path, images, _ = make_coco(tmp_path)
    ds = load_detection_dataset(path, images, train=False)
    loader = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=collate)
    batches = list(loader)
    assert [len(b[0]) for b in batches] == [3, 1]
    ims, targets = batches[0]
    assert [tuple(im.shape) for im in ims] == [(3, 30, 40), (3, 24, 32), (3, 20, 20)]
    assert [t["image_id"] for t in targets] == [1, 2, 3]


# ----------------------------------------------------------------------------------------- bad input


def _bad_json(root):
    path, images, _ = make_coco(root)
    ann = json.loads(path.read_text())
    a = ann["annotations"]
    a += [
        {"id": 901, "image_id": 1, "category_id": 77, "bbox": [1, 1, 2, 2], "segmentation": [RECT], "iscrowd": 0},
        {"id": 902, "image_id": 1, "category_id": 5, "bbox": [1, 1, 0, 2], "segmentation": [RECT], "iscrowd": 0},
        {"id": 903, "image_id": 2, "category_id": 5, "bbox": [1, 1, 2, 2], "iscrowd": 0,
         "segmentation": [[1, 1, 45, 1, 45, 5]]},  # image 2 is 32 wide
        {"id": 904, "image_id": 2, "category_id": 5, "bbox": [1, 1, 2, 2], "iscrowd": 0,
         "segmentation": _rle(np.ones((30, 40), np.uint8))},  # image 2 is 24x32
        {"id": 905, "image_id": 555, "category_id": 5, "bbox": [1, 1, 2, 2], "segmentation": [RECT], "iscrowd": 0},
        {"id": 11, "image_id": 1, "category_id": 5, "bbox": [1, 1, 2, 2], "segmentation": [RECT], "iscrowd": 0},
        {"id": 907, "image_id": 1, "category_id": 5, "bbox": "1,1,2,2", "segmentation": [RECT], "iscrowd": 0},
        {"id": 908, "image_id": 1, "category_id": 5, "bbox": [1, 1, 2, 2], "segmentation": "polygon", "iscrowd": 0},
    ]
    ann["images"].append({"id": 77, "file_name": "not_there.png", "height": 10, "width": 10})
    return ann, images


def test_every_bad_input_is_reported_at_once_with_its_id(tmp_path):
    ann, images = _bad_json(tmp_path)
    with pytest.raises(IIFError) as err:
        validate_annotations(ann, images, source="train.json")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("train.json: 9 kinds of problems")
    expectations = [
        ("category_id missing from 'categories'", "901", "77"),
        ("width or height <= 0", "902"),
        ("polygons have points outside", "903"),
        ("RLE masks have a 'size' other than", "904"),
        ("image ids missing from 'images'", "905", "555"),
        ("annotation ids are duplicated", "ids 11"),
        ("'bbox' that is not 4 finite numbers", "907"),
        ("neither polygons nor an RLE dict", "908"),
        ("missing on disk", "image ids 77", "not_there.png"),
    ]
    parts = msg.split(" | ")
    for what, *ids in expectations:
        part = next((p for p in parts if what in p), None)
        assert part is not None, (what, msg)
        for i in ids:
            assert i in part, (i, part)
    # Valid annotations are not named.
    assert "12," not in msg and " 14" not in msg


def test_load_refuses_bad_json_before_reading_images(tmp_path):
    ann, images = _bad_json(tmp_path)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(ann))
    for f in images.iterdir():  # a problem found by reading an image would name a file, not these ids
        f.unlink()
    with pytest.raises(IIFError, match=r"bad\.json: 9 kinds of problems.*ids 1, 2, 3, 4, 77"):
        load_detection_dataset(path, images, train=True)


def test_wrong_json_types(tmp_path):
    with pytest.raises(IIFError, match="top level is a list"):
        validate_annotations([])
    with pytest.raises(IIFError, match="'annotations' is a dict.*no 'categories'"):
        validate_annotations({"images": [], "annotations": {}})
    ann = {"images": [{"id": "1", "width": 4, "height": 4}, {"id": 2, "width": 0, "height": 4}, 5,
                      {"id": 3, "width": 4.0, "height": 4}, {"id": 6, "width": 4.5, "height": 4}],
           "categories": [{"id": 1}, {"id": 1}],
           "annotations": [{"id": 3, "image_id": 2, "category_id": 1, "bbox": [0, 0, 1, 1]},
                           {"id": 4, "image_id": 2, "category_id": 1.5, "bbox": [0, 0, 1, 1]}]}
    with pytest.raises(IIFError) as err:
        validate_annotations(ann)
    msg = str(err.value)
    assert "entries of 'images' are not JSON objects (positions 2)" in msg
    assert "images have no integer 'id' (positions 0)" in msg
    assert "category ids are duplicated (ids 1)" in msg
    assert "no positive whole-number 'width'/'height' (ids 2, 6)" in msg
    assert "no integer 'category_id'/'image_id' (ids 4)" in msg


def test_image_size_on_disk_must_match_the_json(tmp_path):
    path, images, _ = make_coco(tmp_path)
    Image.fromarray(np.zeros((5, 7, 3), np.uint8)).save(images / "000000000002.png")
    # Found before training from the file's header ...
    with pytest.raises(IIFError, match=r"differ in size .* is 7x5, the json says 32x24\) \(image ids 2\)"):
        load_detection_dataset(path, images, train=True)
    # ... and, without validation, when the image is read.
    ds = load_detection_dataset(path, images, train=True, validate=False)
    with pytest.raises(IIFError, match="image id 2: .* is 7x5 but the json says 32x24"):
        ds[1]


def test_bad_arguments(tmp_path):
    path, images, _ = make_coco(tmp_path)
    with pytest.raises(IIFError, match="hflip"):
        load_detection_dataset(path, images, train=True, hflip=2.0)
    with pytest.raises(IIFError, match="not a directory"):
        load_detection_dataset(path, tmp_path / "nope", train=True)
    with pytest.raises(IIFError, match="no such file"):
        load_detection_dataset(tmp_path / "nope.json", images, train=True)


# ------------------------------------------------------------------------------------------- results


def _outputs_equal_to_ground_truth(ds):
    outputs, ids = [], []
    for i in range(len(ds)):
        _, t = ds[i]
        n = len(t["labels"])
        outputs.append({"boxes": t["boxes"], "labels": t["labels"], "scores": torch.linspace(1.0, 0.5, n),
                        "masks": t["masks"].float()[:, None] * 0.9})  # probabilities above 0.5
        ids.append(t["image_id"])
    return outputs, ids


def test_results_round_trip_through_pycocotools(tmp_path):
    path, images, _ = make_coco(tmp_path)
    ds = load_detection_dataset(path, images, train=False)
    outputs, ids = _outputs_equal_to_ground_truth(ds)
    results = detections_to_results(outputs, ids, ds.category_ids, masks=True)
    assert len(results) == 4
    gt = {a["id"]: a for a in json.loads(path.read_text())["annotations"]}
    r = results[0]
    assert r["image_id"] == 1 and r["category_id"] == 20 and r["bbox"] == gt[11]["bbox"] and r["score"] == 1.0
    assert isinstance(r["segmentation"]["counts"], str) and r["segmentation"]["size"] == [30, 40]
    assert [x["category_id"] for x in results] == [20, 5, 9, 5]
    json.dumps(results)  # json-ready
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(path))
        for iou_type in ("bbox", "segm"):
            ev = COCOeval(coco, coco.loadRes(copy.deepcopy(results)), iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            assert ev.stats[0] == pytest.approx(1.0), iou_type  # AP 100
    box_only = detections_to_results(outputs, ids, ds.category_ids, masks=False)
    assert all("segmentation" not in x for x in box_only) and len(box_only) == 4


def test_results_bad_input():
    out = {"boxes": torch.tensor([[0.0, 0, 2, 2]]), "labels": torch.tensor([4]), "scores": torch.tensor([0.9])}
    with pytest.raises(IIFError, match="outside 1..3"):
        detections_to_results([out], [1], [5, 9, 20], masks=False)
    out["labels"] = torch.tensor([1])
    with pytest.raises(IIFError, match="no 'masks'"):
        detections_to_results([out], [1], [5, 9, 20], masks=True)
    with pytest.raises(IIFError, match="one id per image"):
        detections_to_results([out], [1, 2], [5, 9, 20], masks=False)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "scores": torch.zeros(0),
             "masks": torch.zeros(0, 1, 5, 5)}
    assert detections_to_results([empty], [1], [5], masks=True) == []


# ------------------------------------------------------------------------------------------- layouts


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}")


def test_resolve_layouts(tmp_path):
    bench = tmp_path / "bench"
    for f in ("BENCHMARK.json", "annotations/train.json", "annotations/val.json"):
        _touch(bench / f)
    (bench / "images/train").mkdir(parents=True)
    (bench / "images/val").mkdir(parents=True)
    assert resolve_detection_data(bench) == (bench / "annotations/train.json", bench / "images/train",
                                             bench / "annotations/val.json", bench / "images/val")
    coco = tmp_path / "coco"
    for f in ("annotations/instances_train2017.json", "annotations/instances_val2017.json"):
        _touch(coco / f)
    (coco / "train2017").mkdir()
    (coco / "val2017").mkdir()
    assert resolve_detection_data(coco) == (coco / "annotations/instances_train2017.json", coco / "train2017",
                                            coco / "annotations/instances_val2017.json", coco / "val2017")
    # LVIS jsons beside the COCO folders win over COCO's; images are relative to the COCO root.
    _touch(coco / "annotations/lvis_v1_train.json")
    _touch(coco / "annotations/lvis_v1_val.json")
    assert resolve_detection_data(coco) == (coco / "annotations/lvis_v1_train.json", coco,
                                            coco / "annotations/lvis_v1_val.json", coco)


def test_resolve_refuses_other_folders(tmp_path):
    with pytest.raises(IIFError, match="not a detection data folder. Accepted layouts: benchmark layout"):
        resolve_detection_data(tmp_path)
    _touch(tmp_path / "annotations/instances_train2017.json")
    (tmp_path / "train2017").mkdir()
    (tmp_path / "val2017").mkdir()
    with pytest.raises(IIFError, match=r"partial COCO layout missing annotations/instances_val2017\.json"):
        resolve_detection_data(tmp_path)
    with pytest.raises(IIFError, match="not a directory"):
        resolve_detection_data(tmp_path / "nope")


def test_polygon_slack_boundary(tmp_path):
    # Image 1 is 40 x 30: vertices may lie 1 px (max(1, 2% of the side)) outside, no further.
    path, images, _ = make_coco(tmp_path)
    ann = json.loads(path.read_text())
    ann["annotations"][0]["segmentation"] = [[-1, -1, 41, -1, 41, 31, -1, 31]]
    validate_annotations(ann, images)
    ann["annotations"][0]["segmentation"] = [[-1, -1, 41.5, -1, 41, 31, -1, 31]]
    with pytest.raises(IIFError, match=r"1 polygons have points outside .*annotation ids 11\)"):
        validate_annotations(ann, images)


def test_repeat_factor_sampling_through_a_dataloader(tmp_path):
    from iif.detection import RepeatFactorSampler

    path, images, _ = make_coco(tmp_path)
    ds = load_detection_dataset(path, images, train=True, hflip=False)
    # Every category is in 2 of the json's 4 images (crowds count): f = 0.5, r = sqrt(0.9 / 0.5) for images 1
    # and 2; image 3 (no annotation) has 1, image 4 (crowd only) sqrt(1.8) too, both dropped for training.
    np.testing.assert_allclose(repeat_factors(path, 0.9), [1.8 ** 0.5, 1.8 ** 0.5, 1.0, 1.8 ** 0.5])
    factors = repeat_factors(ds, 0.9)
    np.testing.assert_allclose(factors, [1.8 ** 0.5] * 2)
    sampler = RepeatFactorSampler(factors, num_replicas=1, rank=0, seed=1, shuffle=False)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, sampler=sampler, collate_fn=collate)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        seen = [t["image_id"] for _, targets in loader for t in targets]
        copies = np.bincount(sampler.epoch_indices(), minlength=2)
        assert seen == [1] * copies[0] + [2] * copies[1] and set(copies.tolist()) <= {1, 2}
