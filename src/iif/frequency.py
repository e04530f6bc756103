"""Class frequencies: the one object every other part of ``iif`` reads its counts from.

Image frequency ``IF(c)`` (paper Eq. 10) is the number of training images that contain class ``c``;
object frequency ``OF(c)`` (the paper's IOF) is the number of instances. For classification they are
equal. K, the normaliser of ``p_c = n_c / K`` (paper Eq. 11), is described in docs/frequencies.md.

:class:`ClassFrequency` is data plus weights: the counts, names, ids and LVIS groups of a training set,
their weights (:meth:`ClassFrequency.weights`, paper Eq. 12 / Table III), an imbalance summary, and
its own JSON/CSV files. Reading counts from datasets and files is :mod:`iif.readers`; each
``ClassFrequency.from_*`` constructor is a one-line delegation to a reader there:

* ``from_labels`` / ``from_dataset``: one integer label per image (any dataset exposing ``targets``).
* ``from_folder``: an ImageFolder tree (one sub-directory per class, classes sorted by name).
* ``from_list_file``: ImageNet-LT / Places-LT / iNaturalist list files (``relative/path.jpg label``).
* ``from_label_lines``: one integer label per line.
* ``from_coco``: COCO, LVIS (and other COCO-format, e.g. iNaturalist) annotation json.
* ``from_csv``: the per-variant weight table written by :meth:`ClassFrequency.to_csv`
  (or by the authors' ``get_idf.py``).
* ``from_counts``: a list of per-class counts.
* ``load`` / ``from_dict``: our own JSON written by :meth:`ClassFrequency.save`.
* ``from_source``: picks one of the above from the path.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence, Union

import numpy as np

from . import readers
from .errors import IIFError
from .metrics import shot_thresholds
from .outputs import atomic_write_text
from .readers import IMG_EXTENSIONS, LVIS_GROUP_BOUNDS, MAX_CLASSES, MAX_COUNT, Counts, lvis_group_letters

if TYPE_CHECKING:
    import torch

__all__ = ["ClassFrequency", "IMG_EXTENSIONS", "LVIS_GROUP_BOUNDS", "MAX_CLASSES", "MAX_COUNT", "lvis_group_letters"]

PathLike = Union[str, os.PathLike]

_TASKS = ("classification", "detection")


def _whole_counts(values: Any, what: str) -> np.ndarray:
    """Validate a 1-D array of non-negative whole numbers and return it as int64."""
    torch = sys.modules.get("torch")  # not imported here (about 2 s); a tensor exists only once it is
    if torch is not None and isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    try:
        arr = np.asarray(values)
        if arr.dtype.kind not in "biuf":
            raise TypeError(arr.dtype)
        arr_f = arr.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise IIFError(f"{what} must be whole numbers, one per class; got {values!r:.80}.") from exc
    if arr_f.ndim != 1:
        raise IIFError(f"{what} must be 1-D with one entry per class; got shape {arr_f.shape}.")
    bad = np.flatnonzero(~np.isfinite(arr_f) | (arr_f < 0) | (arr_f != np.round(arr_f)))
    if bad.size:
        raise IIFError(
            f"{what} must be non-negative whole numbers; class {int(bad[0])} has {arr_f[bad[0]]!r}. "
            "Pass the number of images (or instances) per class."
        )
    if arr_f.shape[0] > MAX_CLASSES:
        raise IIFError(f"{what} has {arr_f.shape[0]} entries; at most {MAX_CLASSES:,} classes are supported.")
    big = np.flatnonzero(arr_f > MAX_COUNT)
    if big.size or (arr_f.size and float(arr_f.sum()) > 2.0**62):
        i = int(big[0]) if big.size else int(np.argmax(arr_f))
        raise IIFError(f"{what}: class {i} has {arr_f[i]:.6g}, more than {MAX_COUNT} (2**53, exact in float64); "
                       "pass real per-class counts.")
    return arr_f.astype(np.int64) if arr.dtype.kind == "f" else arr.astype(np.int64)


@dataclass(eq=False)
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
        self.image_counts = _whole_counts(self.image_counts, "image_counts")
        self.object_counts = _whole_counts(self.object_counts, "object_counts")
        c = self.image_counts.shape[0]
        if self.object_counts.shape != (c,):
            raise IIFError(f"object_counts has shape {self.object_counts.shape}, expected ({c},).")
        if self.task not in _TASKS:
            raise IIFError(f"task must be one of {_TASKS}; got {self.task!r}.")
        for name in ("num_images", "num_instances"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer, float, np.floating)) \
                    or not math.isfinite(value) or value != int(value) or not 0 <= value <= MAX_COUNT:
                raise IIFError(f"{name} must be a whole number in [0, 2**53]; got {value!r:.60}.")
            setattr(self, name, int(value))
        if not self.class_names:
            self.class_names = [str(i) for i in range(c)]
        else:
            self.class_names = [str(n) for n in self.class_names]
        if not self.class_ids:
            self.class_ids = list(range(c))
        else:
            self.class_ids = [int(i) for i in self.class_ids]
        for what, seq in (("class_names", self.class_names), ("class_ids", self.class_ids), ("groups", self.groups)):
            if seq is not None and len(seq) != c:
                raise IIFError(f"{what} has {len(seq)} entries but there are {c} classes; give one per class.")
        if self.groups is not None:
            self.groups = [str(g) for g in self.groups]

    # ------------------------------------------------------------------ basics
    @property
    def num_classes(self) -> int:
        return int(self.image_counts.shape[0])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ClassFrequency):
            return NotImplemented
        return (
            np.array_equal(self.image_counts, other.image_counts)
            and np.array_equal(self.object_counts, other.object_counts)
            and self.num_images == other.num_images
            and self.num_instances == other.num_instances
            and self.class_names == other.class_names
            and self.class_ids == other.class_ids
            and self.groups == other.groups
            and self.task == other.task
        )

    __hash__ = None  # mutable, like any dataclass with eq

    def counts(self, by: str = "image") -> np.ndarray:
        if by == "image":
            return self.image_counts
        if by == "object":
            return self.object_counts
        raise IIFError(f"by must be 'image' or 'object'; got {by!r}.")

    def default_total(self, by: str = "image") -> float:
        """K used when none is given: sum of counts (classification) or images/instances (detection)."""
        if self.task == "detection":
            self.counts(by)  # validates ``by``
            return float(self.num_images if by == "image" else self.num_instances)
        return float(self.counts(by).sum())

    def resolve_total(self, total: float | str | None = None, by: str = "image") -> float:
        """The number K for ``total`` given as None (task default), a number, ``"sum"``, ``"images"``
        or ``"instances"`` (paper Eq. 11; docs/method.md, "Frequencies and K")."""
        counts = self.counts(by)
        if total is None:
            return self.default_total(by)
        if isinstance(total, str):
            key = total.strip().lower()
            if key == "sum":
                return float(counts.sum())
            if key == "images":
                return float(self.num_images)
            if key == "instances":
                return float(self.num_instances)
            try:
                return float(key)
            except ValueError:
                raise IIFError(
                    f"total must be a number, 'sum', 'images' or 'instances'; got {total!r}."
                ) from None
        return float(total)

    def weights(self, variant: str = "smooth", by: str = "image", total=None, **kwargs) -> torch.Tensor:
        """IIF weights for these counts; see :func:`iif.iif_weights` for ``variant`` and ``kwargs``.

        ``total`` is K: a number, ``"sum"`` (paper Eq. 11), ``"images"`` or ``"instances"``; by default
        the convention of the task (paper Eq. 11; docs/method.md, "Frequencies and K").
        """
        from .weights import iif_weights  # imports torch: only here, so that counting (iif stats) needs none

        return self._weights_by(iif_weights, variant, by, total, kwargs)

    def weights_array(self, variant: str = "smooth", by: str = "image", total=None, **kwargs) -> np.ndarray:
        """The float32 values of :meth:`weights` as a numpy array, computed without torch where that gives the
        very same values (:func:`iif.weights.iif_weights_array`; ``iif weights`` uses it). ``kwargs`` as in
        :meth:`weights`, less ``dtype``."""
        from .weights import iif_weights_array

        return self._weights_by(iif_weights_array, variant, by, total, kwargs)

    def _weights_by(self, weigh, variant: str, by: str, total, kwargs: dict):
        """``weigh(counts, variant, total=K, **kwargs)`` with an error about empty classes naming them."""
        counts = self.counts(by)
        try:
            return weigh(counts, variant, total=self.resolve_total(total, by), **kwargs)
        except IIFError as exc:
            zero = np.flatnonzero(counts == 0)
            if zero.size and "zero count" in str(exc):  # name the classes, not just their indices
                names = readers.format_list([self.class_names[i] for i in zero])
                raise IIFError(f"{exc} The empty classes are {names}.") from None
            raise

    @property
    def empty_classes(self) -> list[int]:
        """Indices of classes with no training image (the inf-variants refuse these; use ``smooth``)."""
        return np.flatnonzero(self.image_counts == 0).tolist()

    @property
    def imbalance_factor(self) -> float:
        """``n_max / n_min`` over classes with a non-zero image count (paper Table I); nan if none."""
        return self.imbalance(by="image")

    def imbalance(self, by: str = "image") -> float:
        """Imbalance factor ``n_max / n_min`` of image (or object) counts, ignoring empty classes."""
        n = self.counts(by)
        n = n[n > 0]
        return float(n.max() / n.min()) if n.size else float("nan")

    def shot_groups(self, many: int | None = None, few: int | None = None, by: str = "image") -> np.ndarray:
        """``"many"`` (count > ``many``), ``"few"`` (count < ``few``) or ``"medium"`` per class; thresholds
        left None follow :func:`iif.metrics.shot_thresholds` (the library's one rule)."""
        n = self.counts(by)
        many, few = shot_thresholds(n, many, few)
        return np.where(n > many, "many", np.where(n < few, "few", "medium"))

    def lvis_groups(self) -> list[str]:
        """The LVIS ``r``/``c``/``f`` letters: ``groups`` if known, else derived from image counts."""
        return list(self.groups) if self.groups is not None else lvis_group_letters(self.image_counts)

    # ------------------------------------------------------------ constructors (readers in iif.readers)
    @classmethod
    def from_counts_data(cls, counts: Counts, source: str | None = None) -> "ClassFrequency":
        """Build from what a reader of :mod:`iif.readers` returned; ``source`` prefixes validation errors."""
        if source is None:
            return cls(counts.image_counts, counts.object_counts, counts.num_images, counts.num_instances,
                       class_names=counts.class_names, class_ids=counts.class_ids, groups=counts.groups,
                       task=counts.task)
        try:
            return cls.from_counts_data(counts)
        except IIFError as exc:
            raise IIFError(f"{source}: {exc}") from None
        except (TypeError, ValueError, OverflowError) as exc:
            raise IIFError(f"{source}: a field has the wrong type ({exc}); re-save it with ClassFrequency.save.") from None

    @classmethod
    def from_labels(cls, labels, num_classes: int | None = None, class_names: Sequence[str] | None = None) -> "ClassFrequency":
        """Counts from one integer label per image (array, list or tensor); see :func:`iif.readers.count_labels`."""
        return cls.from_counts_data(readers.count_labels(labels, num_classes, class_names))

    @classmethod
    def from_counts(cls, counts: Sequence[int], class_names: Sequence[str] | None = None) -> "ClassFrequency":
        """Classification counts from one whole number per class, e.g. ``[500, 50, 5]`` (K = their sum)."""
        data = readers.read_counts_list(list(np.asarray(counts).tolist()), source="counts")
        return cls.from_counts_data(Counts.of_classes(data.image_counts, class_names))

    @classmethod
    def from_dataset(cls, dataset: Any, num_classes: int | None = None) -> "ClassFrequency":
        """Counts from any dataset exposing ``targets`` (or a ``Subset`` of one); see :func:`iif.readers.read_dataset`."""
        return cls.from_counts_data(readers.read_dataset(dataset, num_classes))

    @classmethod
    def from_folder(cls, root: PathLike, extensions: Sequence[str] = IMG_EXTENSIONS) -> "ClassFrequency":
        """Counts from an ImageFolder tree ``root/<class>/**/<image>``; see :func:`iif.readers.read_folder`."""
        return cls.from_counts_data(readers.read_folder(root, extensions))

    @classmethod
    def from_list_file(cls, path: PathLike, num_classes: int | None = None) -> "ClassFrequency":
        """Counts from a ``relative/path.jpg label`` list file; see :func:`iif.readers.parse_list_file` for the rules."""
        return cls.from_counts_data(readers.read_list_file(path, num_classes))

    @classmethod
    def from_label_lines(cls, path: PathLike, num_classes: int | None = None) -> "ClassFrequency":
        """Counts from a text file holding one integer label per line (blank lines and ``#`` comments skipped)."""
        return cls.from_counts_data(readers.read_label_lines(path, num_classes))

    @classmethod
    def from_coco(
        cls, source: PathLike | Mapping[str, Any], check_lvis: bool = False, *, name: str | None = None
    ) -> "ClassFrequency":
        """Image and instance counts from a COCO or LVIS annotation json (a path or the loaded dict).

        ``check_lvis=True`` also requires the LVIS ``image_count``/``instance_count`` fields to match
        (see :meth:`check_against_lvis_fields`); the rules are :func:`iif.readers.read_coco`'s.
        """
        return cls.from_counts_data(readers.read_coco(source, check_lvis, name=name))

    def check_against_lvis_fields(self, source: PathLike | Mapping[str, Any]) -> int:
        """Check our counts reproduce the LVIS ``image_count``/``instance_count`` (and ``frequency``).

        Returns the number of categories that carry those fields (0: nothing to check). Raises
        :class:`IIFError` listing the mismatching categories. Use it on a *train* json: LVIS val
        files carry the train counts.
        """
        return readers.check_lvis_fields(self, source)

    # ------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": readers.SAVED_FORMAT,
            "version": readers.SAVED_FORMAT_VERSION,
            "task": self.task,
            "num_images": self.num_images,
            "num_instances": self.num_instances,
            "class_ids": list(self.class_ids),
            "class_names": list(self.class_names),
            "groups": None if self.groups is None else list(self.groups),
            "image_counts": self.image_counts.tolist(),
            "object_counts": self.object_counts.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "dict") -> "ClassFrequency":
        """Counts from :meth:`to_dict`'s dict (format and fields checked; errors name ``source``)."""
        return cls.from_counts_data(readers.read_saved(data, source), source=source)

    def save(self, path: PathLike) -> None:
        """Write these counts as JSON (atomically); :meth:`load` reads them back exactly."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: PathLike) -> "ClassFrequency":
        """Read counts written by :meth:`save`."""
        return cls.from_dict(readers.read_json(path), source=str(path))

    def weight_table(self, total: float | str | None = None) -> dict[str, np.ndarray]:
        """Every variant for image (``<variant>``) and object (``<variant>_obj``) counts, as computed.

        These are the bare Table III formulas (:func:`iif.weights.weights_from_counts`), so classes with
        zero count give ``inf`` and large classes may give negative values, exactly as in the official
        tables; use :meth:`weights` to get validated weights. ``total`` as in :meth:`weights`, resolved
        separately for image and object counts (default: the task's K for each).
        """
        from .weights import VARIANTS, weights_from_counts  # torch: imported where weights are computed

        table: dict[str, np.ndarray] = {}
        for by, suffix in (("image", ""), ("object", "_obj")):
            n, k = self.counts(by), self.resolve_total(total, by)
            for variant in VARIANTS:
                table[variant + suffix] = weights_from_counts(n, variant, k)
        return table

    def to_csv(self, path: PathLike, total: float | str | None = None) -> None:
        """Write the per-variant weight table (the authors' ``idf.csv`` layout, our variant names).

        Columns: ``category`` (class id), ``name``, ``img_freq``, ``instance_freq``, one column per
        variant of :data:`iif.VARIANTS` for image counts, then ``<variant>_obj`` for object counts.
        Values are written as computed (``inf``/negative allowed, full float precision); see
        :meth:`weight_table`. Written atomically.
        """
        table = self.weight_table(total)
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        cols = list(table)
        writer.writerow(["category", "name", "img_freq", "instance_freq", *cols])
        for i in range(self.num_classes):
            writer.writerow([self.class_ids[i], self.class_names[i], int(self.image_counts[i]),
                             int(self.object_counts[i]), *(repr(float(table[c][i])) for c in cols)])
        atomic_write_text(path, buf.getvalue())

    @classmethod
    def from_csv(cls, path: PathLike) -> "ClassFrequency":
        """Read ``img_freq``/``instance_freq`` back from a weight table (ours or the official ``idf.csv``).

        K is recovered from the ``raw``/``raw_obj`` columns; the rules are :func:`iif.readers.read_csv`'s.
        """
        return cls.from_counts_data(readers.read_csv(path), source=str(path))

    @classmethod
    def from_source(cls, source: PathLike, num_classes: int | None = None) -> "ClassFrequency":
        """Counts from a path, picking the reader by what it is (:func:`iif.readers.read_source`).

        * a directory: :meth:`from_folder` (a root holding ``train/``, as ``iif train folder`` reads it:
          the ``train/`` tree);
        * ``.json``: counts saved by :meth:`save`, COCO/LVIS annotations (:meth:`from_coco`) or a plain
          list of per-class counts such as ``[500, 50, 5]``;
        * ``.csv``: a weight table (:meth:`from_csv`);
        * ``.npy``: a 1-D array of integer labels, one per image;
        * any other text file (``.txt``, ``.lst``, ...): a list file ``path label`` per line
          (:meth:`from_list_file`) or, when entries hold a single field, one integer label per line.
        """
        return cls.from_counts_data(readers.read_source(source, num_classes), source=str(source))

    # ----------------------------------------------------------------- helpers
    def summary(self, many: int | None = None, few: int | None = None, by: str = "image", top: int = 5) -> dict[str, Any]:
        """An imbalance report (used by ``iif stats``): sizes, counts, shot groups, head and tail classes.

        ``head``: the ``top`` largest classes, largest first; ``tail``: the ``top`` smallest of the other
        classes, smallest first (ascending), so no class is listed twice (with fewer than ``2 * top``
        classes the tail is shorter). Ties keep class order.
        """
        n = self.counts(by)
        many, few = shot_thresholds(n, many, few)
        shots = self.shot_groups(many, few, by)
        nonzero = n[n > 0]
        top = max(0, min(int(top), self.num_classes))
        head = np.argsort(-n, kind="stable")[:top]
        in_head = np.zeros(self.num_classes, dtype=bool)
        in_head[head] = True
        ascending = np.argsort(n, kind="stable")
        tail = ascending[~in_head[ascending]][:top]

        def row(i: int) -> dict[str, Any]:
            return {"index": int(i), "id": self.class_ids[i], "name": self.class_names[i],
                    "images": int(self.image_counts[i]), "instances": int(self.object_counts[i])}

        imb = self.imbalance(by)
        report: dict[str, Any] = {
            "task": self.task,
            "by": by,
            "num_classes": self.num_classes,
            "num_images": self.num_images,
            "num_instances": self.num_instances,
            "min_count": int(n.min()),
            "max_count": int(n.max()),
            "min_nonzero_count": int(nonzero.min()) if nonzero.size else None,
            "imbalance_factor": None if math.isnan(imb) else imb,
            "empty_classes": len(self.empty_classes),
            "shot_thresholds": {"many": many, "few": few},
            "shot_groups": {g: int(np.sum(shots == g)) for g in ("many", "medium", "few")},
            "lvis_groups": None,
            "head": [row(i) for i in head],
            "tail": [row(i) for i in tail],
        }
        if self.groups is not None:
            g = np.asarray(self.groups)
            report["lvis_groups"] = {k: int(np.sum(g == k)) for k in ("r", "c", "f")}
        return report

