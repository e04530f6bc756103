"""Class frequencies: the one object every other part of ``iif`` reads its counts from.

Image frequency ``IF(c)`` (paper Eq. 10) is the number of training images that contain class ``c``;
object frequency ``OF(c)`` (the paper's IOF) is the number of instances. For classification they are
equal. See SPEC section 1 for the normaliser ``K``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from .errors import IIFError
from .weights import iif_weights

__all__ = ["ClassFrequency"]


@dataclass
class ClassFrequency:
    """Per-class image and object counts of a training set.

    Attributes:
        image_counts: int64 array ``(C,)``, images containing each class (IF).
        object_counts: int64 array ``(C,)``, instances of each class (OF).
        num_images: number of training images (the detection ``K`` for IIF).
        num_instances: number of instances (the detection ``K`` for IOF).
        class_names: one name per class.
        class_ids: the dataset's own id per class (e.g. COCO category ids); ``0..C-1`` by default.
        groups: LVIS-style ``r``/``c``/``f`` letter per class, or None.
        task: ``"classification"`` (default K = sum of counts, paper Eq. 11) or ``"detection"``
            (default K = num_images / num_instances, the official detection tables).
    """

    image_counts: np.ndarray
    object_counts: np.ndarray
    num_images: int
    num_instances: int
    class_names: list[str] = field(default_factory=list)
    class_ids: list[int] = field(default_factory=list)
    groups: list[str] | None = None
    task: str = "classification"

    def __post_init__(self) -> None:
        self.image_counts = np.asarray(self.image_counts, dtype=np.int64)
        self.object_counts = np.asarray(self.object_counts, dtype=np.int64)
        c = self.image_counts.shape[0]
        if self.object_counts.shape != (c,):
            raise IIFError(f"object_counts has shape {self.object_counts.shape}, expected ({c},).")
        if not self.class_names:
            self.class_names = [str(i) for i in range(c)]
        if not self.class_ids:
            self.class_ids = list(range(c))

    @property
    def num_classes(self) -> int:
        return int(self.image_counts.shape[0])

    @classmethod
    def from_labels(cls, labels, num_classes: int | None = None, class_names: Sequence[str] | None = None) -> "ClassFrequency":
        """Counts from one integer label per image (array, list or tensor)."""
        if isinstance(labels, torch.Tensor):
            labels = labels.detach().cpu().numpy()
        arr = np.asarray(labels)
        if arr.ndim != 1:
            raise IIFError(f"labels must be 1-D (one label per image); got shape {arr.shape}.")
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
                raise IIFError("labels must be whole class indices; found non-integer values.")
            arr = arr.astype(np.int64)
        if arr.size and arr.min() < 0:
            raise IIFError(f"labels must be >= 0; found {int(arr.min())}.")
        c = int(arr.max()) + 1 if arr.size else 0
        if num_classes is None:
            num_classes = len(class_names) if class_names is not None else c
        if c > num_classes:
            raise IIFError(f"label {c - 1} is out of range for num_classes={num_classes}.")
        counts = np.bincount(arr.astype(np.int64), minlength=num_classes)
        return cls(counts, counts.copy(), int(arr.size), int(arr.size),
                   class_names=list(class_names) if class_names is not None else [])

    def counts(self, by: str = "image") -> np.ndarray:
        if by == "image":
            return self.image_counts
        if by == "object":
            return self.object_counts
        raise IIFError(f"by must be 'image' or 'object'; got {by!r}.")

    def default_total(self, by: str = "image") -> float:
        """K used when none is given: sum of counts (classification) or images/instances (detection)."""
        if self.task == "detection":
            return float(self.num_images if by == "image" else self.num_instances)
        return float(self.counts(by).sum())

    def weights(self, variant: str = "smooth", by: str = "image", total=None, **kwargs) -> torch.Tensor:
        """IIF weights for these counts; see :func:`iif.iif_weights` for ``variant`` and ``kwargs``.

        ``total`` is K: a number, ``"sum"`` (paper Eq. 11), ``"images"`` or ``"instances"``; by default
        the convention of the task (SPEC section 1).
        """
        counts = self.counts(by)
        if total is None:
            k = self.default_total(by)
        elif total == "sum":
            k = float(counts.sum())
        elif total == "images":
            k = float(self.num_images)
        elif total == "instances":
            k = float(self.num_instances)
        else:
            k = total
        return iif_weights(counts, variant, total=k, **kwargs)
