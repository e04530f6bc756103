"""The accepted layouts of a ``--data`` folder (:func:`resolve_detection_data`).

Moved out of :mod:`iif.detection.data` (issue 16), which re-exports it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from ..errors import IIFError

__all__ = ["resolve_detection_data"]

PathLike = str | os.PathLike

_LAYOUTS = ("benchmark layout (BENCHMARK.json, annotations/train.json, annotations/val.json, images/train/, "
            "images/val/ as written by `iif det-data`); COCO layout (annotations/instances_train2017.json, "
            "annotations/instances_val2017.json, train2017/, val2017/); LVIS v1 layout (lvis_v1_train.json and "
            "lvis_v1_val.json in the folder or its annotations/, with the COCO image folders train2017/ and "
            "val2017/ beside them)")


def resolve_detection_data(root: PathLike, eval_split: str = "val") -> tuple[Path, Path, Path, Path]:
    """``(train_json, train_images, val_json, val_images)`` of a ``--data`` folder.

    Accepted layouts, tried in this order:

    * benchmark (``iif det-data``): ``BENCHMARK.json``, ``annotations/{train,val}.json``,
      ``images/{train,val}/`` (images given as ``images/train``, ``images/val``); a generator-2 folder also
      has ``annotations/test.json`` and ``images/test/``: ``eval_split="test"`` returns those in place of val
      (val is for choosing hyper-parameters, test is reported). ``"test"`` on any other folder is refused;
    * LVIS v1: ``lvis_v1_{train,val}.json`` in ``root`` or ``root/annotations``, COCO's ``train2017/`` and
      ``val2017/`` in ``root`` (both image roots are ``root``: LVIS images name their COCO folder);
    * COCO: ``annotations/instances_{train,val}2017.json``, ``train2017/``, ``val2017/``.

    Raises :class:`IIFError` naming the accepted layouts and, for a partial layout, what is missing.
    """
    base = Path(root)
    if not base.is_dir():
        raise IIFError(f"--data {base}: not a directory; give a folder in one of the accepted layouts: {_LAYOUTS}.")
    missing_by_layout: list[tuple[str, list[str]]] = []

    def check(name: str, files: Iterable[Path], dirs: Iterable[Path]) -> bool:
        miss = [str(p.relative_to(base)) for p in files if not p.is_file()]
        miss += [str(p.relative_to(base)) + "/" for p in dirs if not p.is_dir()]
        missing_by_layout.append((name, miss))
        return not miss

    ann = base / "annotations"
    if eval_split not in ("val", "test"):
        raise IIFError(f"eval_split must be 'val' or 'test'; got {eval_split!r}.")
    if check("benchmark", [base / "BENCHMARK.json", ann / "train.json", ann / f"{eval_split}.json"],
             [base / "images" / "train", base / "images" / eval_split]):
        return ann / "train.json", base / "images" / "train", ann / f"{eval_split}.json", base / "images" / eval_split
    if eval_split == "test":
        raise IIFError(f"--data {base}: no test split (annotations/test.json and images/test/); only a benchmark "
                       "written by `iif det-data --generator 2` has one: write one, or evaluate on val.")
    for folder in (base, ann):
        if check("LVIS v1", [folder / "lvis_v1_train.json", folder / "lvis_v1_val.json"],
                 [base / "train2017", base / "val2017"]):
            return folder / "lvis_v1_train.json", base, folder / "lvis_v1_val.json", base
    if check("COCO", [ann / "instances_train2017.json", ann / "instances_val2017.json"],
             [base / "train2017", base / "val2017"]):
        return ann / "instances_train2017.json", base / "train2017", ann / "instances_val2017.json", base / "val2017"
    # Name the layout the folder comes closest to (fewest missing parts), if it has any part of one.
    totals = {"benchmark": 5, "LVIS v1": 4, "COCO": 4}
    name, miss = min(missing_by_layout, key=lambda t: len(t[1]))
    hint = f" It looks like a partial {name} layout missing {', '.join(miss)}." if len(miss) < totals[name] else ""
    raise IIFError(f"--data {base}: not a detection data folder.{hint} Accepted layouts: {_LAYOUTS}.")
