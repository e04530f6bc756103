"""Readers of per-class counts: one plain function per kind of source, each returning :class:`Counts`.

:class:`iif.ClassFrequency` is the data (counts, names, groups) plus the weights; this module is how
the data gets read. Every reader returns a :class:`Counts` (the fields of a ``ClassFrequency``, not yet
validated); ``ClassFrequency.from_*`` are one-line delegations to these functions.

=====================  ==========================================================================
reader                 source
=====================  ==========================================================================
``count_labels``       one integer label per image (list, numpy array, tensor)
``read_dataset``       any dataset exposing ``targets`` (names from ``classes``), or a ``Subset``
``read_folder``        an ImageFolder tree ``root/<class>/**/<image>``
``read_list_file``     a ``path label`` list file (ImageNet-LT, Places-LT, iNaturalist-LT)
``read_label_lines``   a text file with one integer label per line
``read_npy_labels``    a ``.npy`` array of integer labels
``read_coco``          COCO / LVIS annotation json (``task = "detection"``)
``read_csv``           a per-variant weight table (``ClassFrequency.to_csv`` or the authors' ``idf.csv``)
``read_saved``         counts written by ``ClassFrequency.save``
``read_counts_list``   a plain JSON list of per-class counts, e.g. ``[500, 50, 5]``
``read_source``        picks one of the above from a path
=====================  ==========================================================================

List files have ONE parser, :func:`parse_list_file`, used by the counting readers here and by the
list-file datasets of :mod:`iif.data.lists` (``iif train``), so a list is read the same way everywhere:

* one ``path label`` entry per line; the label is the last field, separated from the path by any run of
  spaces or tabs; the path is the rest of the line with surrounding whitespace removed, so a path may
  contain spaces inside it (not at its start or end);
* blank lines and lines whose first non-blank character is ``#`` are skipped;
* the label is a non-negative integer written in ASCII digits (below ``num_classes`` when it is given);
* the file is UTF-8 (a byte-order mark is ignored), with ``\\n`` or ``\\r\\n`` line ends.

Modules (every name above is imported from ``iif.readers``): :mod:`~iif.readers.common` (bounds, :class:`Counts`,
JSON/text files), :mod:`~iif.readers.labels` (list files, labels, datasets), :mod:`~iif.readers.folders`
(image trees), :mod:`~iif.readers.coco` (COCO/LVIS), :mod:`~iif.readers.tables` (files iif writes) and
:mod:`~iif.readers.source` (:func:`read_source`). They import nothing of ``iif`` but :mod:`iif.errors`.
"""

from __future__ import annotations

from .coco import check_lvis_fields, index_of, int_column, read_coco
from .common import (IMG_EXTENSIONS, LVIS_GROUP_BOUNDS, MAX_CLASSES, MAX_COUNT, REMAP_HINT, SAVED_FORMAT,
                     SAVED_FORMAT_VERSION, SPLIT_NAMES, Counts, ListEntry, PathLike, format_list, lvis_group_letters,
                     read_json, read_text_lines)
from .folders import FolderWalk, read_folder, special_files_message, train_split_of, walk_image_files
from .labels import (count_labels, list_file_error, parse_list_file, read_dataset, read_label_lines, read_list_file,
                     read_npy_labels)
from .source import read_source
from .tables import read_counts_list, read_csv, read_saved

__all__ = [
    "Counts", "ListEntry", "IMG_EXTENSIONS", "LVIS_GROUP_BOUNDS", "MAX_CLASSES", "MAX_COUNT", "SAVED_FORMAT",
    "SAVED_FORMAT_VERSION", "SPLIT_NAMES", "lvis_group_letters", "read_json", "read_text_lines", "parse_list_file",
    "list_file_error", "count_labels", "read_dataset", "read_folder", "walk_image_files", "FolderWalk",
    "special_files_message", "train_split_of", "read_list_file",
    "read_label_lines", "read_npy_labels", "read_coco", "check_lvis_fields", "read_csv", "read_saved",
    "read_counts_list", "read_source", "int_column", "index_of", "format_list",
]
