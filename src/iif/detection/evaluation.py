"""Detection evaluation: LVIS and COCO AP, the paper's tail-k AP, TIDE errors and false-positive counts.

Every AP is in **percent** (0-100), as in the paper's Tables XI-XVIII; an AP that is undefined (a frequency
group or area range with no ground truth) is ``nan`` (the official APIs print -1 there).

* :func:`evaluate_lvis` — LVIS v1 box or mask AP with the federated rules (Gupta et al., LVIS, 2019): the
  top ``max_dets`` (300) detections per image by score are kept; a category is evaluated on an image only if
  it is in the image's positive set (it has ground truth there) or its ``neg_category_ids``; unmatched
  detections of a category in the image's ``not_exhaustive_category_ids`` are ignored; AP_r / AP_c / AP_f
  average the categories whose ``frequency`` is r / c / f. Computed with faster-coco-eval's LVIS mode (C++,
  works on numpy 2), which gives the official ``lvis`` API's numbers (tested to 1e-9 on a fixture).
* :func:`evaluate_coco` — COCO AP (100 detections per image, crowd regions ignored), equal to pycocotools.
* :func:`tail_k_ap` — the paper's tail-k AP (Tables XVII, XVIII): the mean AP of the k categories with
  the fewest training images.
* :func:`tide_errors` — TIDE's error breakdown (Bolya et al., ECCV 2020) with ``tidecv``; its special
  error ``dAP_FP`` is the paper's ΔAP_FP (Fig. 1): the AP50 gained if every false positive were scored 0.
* :func:`count_false_positives` / :func:`false_positives_by_group` — detections above a score threshold
  that match no ground truth, the plain count behind ΔAP_FP.

``gt_json`` is a path or a loaded dict (never modified); ``detections`` is a list of COCO/LVIS result dicts
(``image_id``, ``category_id`` (json id), ``bbox`` [x, y, w, h], ``score``, and ``segmentation`` as an RLE
dict for masks) or the path of a json file holding that list. :func:`check_results` validates them first.
faster-coco-eval and tidecv are imported on first use (``pip install "iif[detection]"``).
"""

from __future__ import annotations

# The evaluation lives in sibling modules (issue 16); this module keeps the public path of every name.
from .evaluation_ap import (  # noqa: F401
    EVAL_THREADS,
    _mean_precision,
    _per_category_ap,
    _run_cocoeval,
    _summary,
    category_groups,
    evaluate_coco,
    evaluate_lvis,
    tail_k_ap,
)
from .evaluation_common import (  # noqa: F401
    IOU_TYPES,
    Detections,
    PathOrDict,
    _federated_filter,
    _load_dets,
    _load_gt,
    _prepare,
    _top_per_image,
    check_results,
    is_lvis,
)
from .evaluation_fp import count_false_positives, false_positives_by_group  # noqa: F401
from .evaluation_matches import _match_image, cocoeval_matches  # noqa: F401
from .evaluation_tide import tide_errors, tide_matches  # noqa: F401

__all__ = [
    "evaluate_lvis",
    "is_lvis",
    "evaluate_coco",
    "tail_k_ap",
    "tide_errors",
    "cocoeval_matches",
    "tide_matches",
    "count_false_positives",
    "false_positives_by_group",
    "category_groups",
    "check_results",
    "IOU_TYPES",
]
