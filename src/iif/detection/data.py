"""COCO and LVIS v1 instance data for torchvision detectors, checked before training.

* :func:`load_detection_dataset` / :class:`DetectionDataset` — the user's annotation json and image root read
  through torchvision's ``CocoDetection`` and ``wrap_dataset_for_transforms_v2`` with transforms v2. ``ds[i]``
  is ``(image, target)``: ``image`` float32 ``(3, H, W)`` in [0, 1]; ``target`` holds ``boxes`` float32
  ``(N, 4)`` as ``x1, y1, x2, y2`` pixels, ``labels`` int64 ``(N,)`` contiguous 1..C, ``masks`` uint8
  ``(N, H, W)`` (with masks) and ``image_id`` (the json id, an int). Contiguous label ``k`` is the k-th
  category of ``categories`` sorted by id (``category_ids[k - 1]``), the class order of
  :meth:`iif.ClassFrequency.from_coco`, so a detector's logit column ``k`` (torchvision's background is 0)
  lines up with the k-th entry of the IIF weights.
* :func:`validate_annotations` — every problem of an annotation json at once (unknown category or image ids,
  non-positive boxes, masks that do not fit their image, duplicate ids, wrong JSON types, images missing on
  disk), one line per kind of problem with the first ids, raised as one :class:`~iif.errors.IIFError`.
* :func:`collate`, :func:`detections_to_results` — batching for the detectors, and their outputs as LVIS/COCO
  result dicts.
* :func:`resolve_detection_data` — the four paths of a ``--data`` folder in one of the accepted layouts.

Image paths: a COCO image has ``file_name`` (relative to ``image_root``). A LVIS v1 image has no
``file_name``, only ``coco_url`` (``http://images.cocodataset.org/train2017/000000391895.jpg``); as in
detectron2's and mmdetection's LVIS loaders, its path is the last two parts of the url relative to the COCO
root (``image_root/train2017/000000391895.jpg``, LVIS v1 val draws on both COCO folders). When
``image_root`` has no such sub-folder, the file is looked up directly in ``image_root`` (the layout the
``lvis`` API's ``download`` writes).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..errors import IIFError
from ..frequency import ClassFrequency
from ..readers import read_json as _read_json
from .data_checks import (  # noqa: F401  (re-exported: the public path of these names stays iif.detection.data)
    POLYGON_SLACK,
    PathLike,
    _decode_rle_strings,
    _ids_text,
    _is_num,
    image_paths,
    rle_string_counts_ok,
)
from .data_layouts import resolve_detection_data  # noqa: F401  (re-exported)
from .data_results import detections_to_results  # noqa: F401  (re-exported)
from .data_validate import validate_annotations  # noqa: F401  (re-exported)

__all__ = [
    "DetectionDataset",
    "covering_subset",
    "restrict_annotations",
    "load_detection_dataset",
    "validate_annotations",
    "rle_string_counts_ok",
    "collate",
    "detections_to_results",
    "resolve_detection_data",
    "image_paths",
]


# ------------------------------------------------------------------------------------------ the dataset


def _hflip_probability(hflip: bool | float | None, train: bool) -> float:
    if hflip is None:
        return 0.5 if train else 0.0
    if isinstance(hflip, bool):
        return 0.5 if hflip else 0.0
    if _is_num(hflip) and 0.0 <= float(hflip) <= 1.0:
        return float(hflip)
    raise IIFError(f"hflip must be None, True/False or a probability in [0, 1]; got {hflip!r}.")


def _coco_from_dict(data: Mapping[str, Any]):
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints "creating index..."
        coco.createIndex()
    return coco


def _coco_source_class():
    """A ``CocoDetection`` over an already indexed COCO object, our image paths and contiguous labels.

    Built on first use so that importing :mod:`iif.detection` does not import torchvision.datasets.
    """
    global _COCO_SOURCE
    if _COCO_SOURCE is not None:
        return _COCO_SOURCE
    from PIL import Image
    from torchvision.datasets import CocoDetection, VisionDataset

    class CocoSource(CocoDetection):
        def __init__(self, root: str, coco, ids: list[int], paths: dict[int, str], label_of: dict[int, int]) -> None:
            VisionDataset.__init__(self, root)  # not CocoDetection.__init__: the json is read and indexed once
            self.coco, self.ids, self.paths, self.label_of = coco, ids, paths, label_of

        def _load_image(self, id: int):
            path = self.paths[id]
            try:
                image = Image.open(path).convert("RGB")
            except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
                raise IIFError(f"image id {id}: cannot read {path} ({exc}); re-download it or remove it from the "
                               "json.") from None
            info = self.coco.imgs[id]
            if (info.get("width"), info.get("height")) != image.size:
                raise IIFError(f"image id {id}: {path} is {image.size[0]}x{image.size[1]} but the json says "
                               f"{info.get('width')}x{info.get('height')}; fix the json or the image.")
            return image

        def _load_target(self, id: int) -> list[dict]:
            # Crowd regions are not instances to detect (torchvision's references drop them as well).
            return [dict(a, category_id=self.label_of[a["category_id"]]) for a in self.coco.imgToAnns.get(id, [])
                    if not a.get("iscrowd", 0)]

    # Pickled by reference as ``iif.detection.data._CocoSource`` (DataLoader workers under spawn/forkserver),
    # which the module ``__getattr__`` below builds in a fresh process.
    CocoSource.__qualname__ = CocoSource.__name__ = "_CocoSource"
    CocoSource.__module__ = __name__
    _COCO_SOURCE = CocoSource
    return CocoSource


_COCO_SOURCE = None


def __getattr__(name: str):
    if name == "_CocoSource":
        return _coco_source_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class DetectionDataset(torch.utils.data.Dataset):
    """A COCO or LVIS v1 instances json and its images as ``(image, target)`` pairs for torchvision detectors.

    Args:
        ann_file: the annotation json (path), or its already loaded dict.
        image_root: the folder the images' ``file_name`` (COCO) or ``coco_url`` folders (LVIS v1) are
            relative to (see :func:`image_paths`).
        train: training images drop images without any non-crowd annotation (``num_dropped`` counts them) and
            flip horizontally by default; evaluation keeps every image of the json.
        masks: decode instance masks into ``target["masks"]`` (Mask R-CNN); False gives boxes only.
        hflip: horizontal-flip probability; None: 0.5 for training, 0 otherwise (True is 0.5). Boxes and
            masks are flipped with the image.
        validate: run :func:`validate_annotations` (including the files on disk) before anything else.

    Attributes:
        coco: the pycocotools ``COCO`` of the json (use it for evaluation).
        image_ids: json ids of the images, in json order (without the dropped ones); ``ds[i]`` is image
            ``image_ids[i]``.
        category_ids: json category ids sorted; label ``k`` (1..C) is ``category_ids[k - 1]``.
        class_names: category names in that order; ``num_classes``: C (foreground only).
        freq: :meth:`iif.ClassFrequency.from_coco` of the json (image and instance counts per class, same order;
            K = all images of the json, as in the official weight tables).
        num_dropped: training images dropped for having no annotation.
        json_positions: position of each of ``image_ids`` in the json's ``images`` list (to index
            :func:`iif.detection.repeat_factors` of the json).
    """

    def __init__(self, ann_file: PathLike | Mapping[str, Any], image_root: PathLike, *, train: bool,
                 masks: bool = True, hflip: bool | float | None = None, validate: bool = True) -> None:
        if isinstance(ann_file, Mapping):
            data, name, self.ann_file = ann_file, "annotation dict", None
        else:
            data, name, self.ann_file = _read_json(ann_file), str(ann_file), Path(ann_file)
        if not isinstance(train, bool) or not isinstance(masks, bool):
            raise IIFError(f"train and masks must be True or False; got train={train!r}, masks={masks!r}.")
        self.train, self.masks = train, masks
        self.hflip = _hflip_probability(hflip, train)
        self.image_root = Path(image_root)
        if not self.image_root.is_dir():
            raise IIFError(f"{self.image_root}: image root is not a directory; give the folder holding the images "
                           "(for LVIS v1: the COCO root with train2017/ and val2017/).")
        if validate:
            validate_annotations(data, self.image_root, source=name, masks=masks)
        with warnings.catch_warnings():
            if not train:  # a val json's own counts are not training counts: its "no training images" note is noise
                warnings.filterwarnings("ignore", message=".*classes have no training images")
            self.freq = ClassFrequency.from_coco(data, name=name)
        self.category_ids: list[int] = list(self.freq.class_ids)
        self.class_names: list[str] = list(self.freq.class_names)
        self.num_classes = len(self.category_ids)
        self.coco = _coco_from_dict(data)

        images = data["images"]
        all_ids = [int(im["id"]) for im in images]
        if train:
            has = {a["image_id"] for a in data["annotations"] if not a.get("iscrowd", 0)}
            keep = [i for i, iid in enumerate(all_ids) if iid in has]
        else:
            keep = list(range(len(all_ids)))
        self.json_positions = np.asarray(keep, dtype=np.int64)
        self.image_ids: list[int] = [all_ids[i] for i in keep]
        self.num_dropped = len(all_ids) - len(keep)
        if not self.image_ids:
            raise IIFError(f"{name}: no image has an annotation to train on; check that this is a training json.")
        paths = image_paths([images[i] for i in keep], self.image_root)
        no_file = [iid for iid, p in zip(self.image_ids, paths) if p is None]
        if no_file:
            raise IIFError(f"{name}: images name no file ({_ids_text(no_file, 'image ids')}); add 'file_name' or "
                           "'coco_url'.")
        label_of = {cid: k for k, cid in enumerate(self.category_ids, start=1)}
        source = _coco_source_class()(str(self.image_root), self.coco, list(self.image_ids),
                                      dict(zip(self.image_ids, paths)), label_of)
        from torchvision.datasets import wrap_dataset_for_transforms_v2
        from torchvision.transforms import v2

        steps: list = [v2.ToImage()]
        if self.hflip > 0:
            steps.append(v2.RandomHorizontalFlip(p=self.hflip))
        steps.append(v2.ToDtype(torch.float32, scale=True))
        source.transforms = v2.Compose(steps)
        keys = ["boxes", "labels", "image_id"] + (["masks"] if masks else [])
        self._wrapped = wrap_dataset_for_transforms_v2(source, target_keys=keys)

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        image, raw = self._wrapped[index % len(self)]
        image = image.as_subclass(torch.Tensor)
        h, w = image.shape[-2:]
        target: dict[str, Any] = {"image_id": int(self.image_ids[index])}
        if "boxes" in raw:
            target["boxes"] = raw["boxes"].as_subclass(torch.Tensor).to(torch.float32)
            target["labels"] = raw["labels"].to(torch.int64)
            if self.masks:
                target["masks"] = raw["masks"].as_subclass(torch.Tensor).to(torch.uint8)
        else:  # no (non-crowd) annotation: empty targets of the right shapes
            target["boxes"] = torch.zeros((0, 4), dtype=torch.float32)
            target["labels"] = torch.zeros((0,), dtype=torch.int64)
            if self.masks:
                target["masks"] = torch.zeros((0, h, w), dtype=torch.uint8)
        return image, target

    def __repr__(self) -> str:
        return (f"DetectionDataset({len(self)} images, {self.num_classes} classes, train={self.train}, "
                f"masks={self.masks}, hflip={self.hflip:g}, dropped={self.num_dropped})")


def load_detection_dataset(ann_file: PathLike | Mapping[str, Any], image_root: PathLike, *, train: bool,
                           masks: bool = True, hflip: bool | float | None = None,
                           validate: bool = True) -> DetectionDataset:
    """A :class:`DetectionDataset` of ``ann_file`` (COCO or LVIS v1 instances json) with images under
    ``image_root``; see the class for the arguments. Bad annotations raise one :class:`IIFError` listing
    them all (``validate=True``), before any image is read."""
    return DetectionDataset(ann_file, image_root, train=train, masks=masks, hflip=hflip, validate=validate)


def collate(batch: Sequence[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    """``[(image, target), ...] -> ([images], [targets])``: torchvision detectors take lists (sizes differ)."""
    return [b[0] for b in batch], [b[1] for b in batch]

def restrict_annotations(ann: Mapping[str, Any], image_ids: set[int]) -> dict:
    """A shallow copy of a COCO/LVIS json dict keeping only ``image_ids`` and their annotations."""
    out = dict(ann)
    out["images"] = [im for im in ann["images"] if im["id"] in image_ids]
    out["annotations"] = [a for a in ann["annotations"] if a["image_id"] in image_ids]
    return out


def covering_subset(dataset: "DetectionDataset", n: int) -> torch.utils.data.Subset:
    """``n`` training images that keep as many categories as possible, as a ``Subset`` carrying its own
    counts (``freq``), ``category_ids`` and ``coco``: first, in json order, each image that brings a category
    not yet covered, then the following images in json order. Deterministic."""
    from ..frequency import ClassFrequency

    labels = [{a["category_id"] for a in dataset.coco.imgToAnns.get(i, []) if not a.get("iscrowd", 0)}
              for i in dataset.image_ids]
    picked, covered = [], set()
    for idx, cats in enumerate(labels):
        if len(picked) == n:
            break
        if cats - covered:
            picked.append(idx)
            covered |= cats
    chosen = set(picked)
    for idx in range(len(labels)):
        if len(picked) == n:
            break
        if idx not in chosen:
            picked.append(idx)
    subset = torch.utils.data.Subset(dataset, sorted(picked))
    ann = restrict_annotations(dataset.coco.dataset, {dataset.image_ids[i] for i in subset.indices})
    ann["categories"] = [{k: v for k, v in c.items() if k not in ("image_count", "instance_count")}
                         for c in ann.get("categories", [])]  # the json's count fields describe the whole set
    subset.freq = ClassFrequency.from_coco(ann)
    subset.category_ids = dataset.category_ids
    subset.coco = dataset.coco
    return subset
