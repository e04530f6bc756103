"""The object :func:`iif.data.build_datasets` returns, and the checks every builder shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..frequency import ClassFrequency
from .longtail import check_nonempty

__all__ = ["DatasetSplits", "finish_splits"]


@dataclass
class DatasetSplits:
    """Train/val/test datasets of one benchmark plus what models and losses need to know about it.

    ``freq`` counts the TRAIN split only. ``val`` is None when a dataset has no validation split (or
    ``val_per_class=0``). ``mean``/``std`` are the normalisation statistics the transforms use.
    """

    train: Any
    val: Any
    test: Any
    freq: ClassFrequency
    num_classes: int
    in_channels: int
    image_size: int
    class_names: list[str]
    mean: tuple = field(default=())
    std: tuple = field(default=())
    name: str = ""


def finish_splits(name: str, train, val, test, num_classes: int, in_channels: int, image_size: int,
                  class_names, mean=(), std=()) -> DatasetSplits:
    """Check the train split covers every class (IIFError naming empty ones) and count it."""
    names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
    check_nonempty(train.targets, num_classes, names, split=f"{name} train")
    freq = ClassFrequency.from_labels(train.targets, num_classes=num_classes, class_names=names)
    return DatasetSplits(train, val, test, freq, int(num_classes), int(in_channels), int(image_size), names,
                         tuple(mean), tuple(std), name)
