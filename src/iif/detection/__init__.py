"""Long-tailed detection and instance segmentation with IIF (paper Section IV-A, Tables XI-XVIII).

IIF, IOF and the additive margin methods as a switch on torchvision detectors (``use_margin``), COCO/LVIS data
with repeat-factor sampling, LVIS-style evaluation with false-positive analysis, and an offline long-tailed
instance-segmentation benchmark. Needs the ``train`` extra; evaluation needs the ``detection`` extra.
"""

from __future__ import annotations

from .evaluation import (
    check_results,
    count_false_positives,
    evaluate_coco,
    evaluate_lvis,
    false_positives_by_group,
    tail_k_ap,
    tide_errors,
)
from .margins import METHODS, WHEN, CosineBoxClassifier, MarginBoxPredictor, use_margin
from .models import ARCHS, DETECTION_PRESETS, build_detector, load_detector_checkpoint
from .engine import DetectionSchedule, predict, train_detector
from .data import (
    DetectionDataset,
    collate,
    detections_to_results,
    load_detection_dataset,
    resolve_detection_data,
    validate_annotations,
)
from .sampling import RepeatFactorSampler, repeat_factors
from .synthetic import make_benchmark, validate_benchmark

__all__: list[str] = []
__all__ += ["evaluate_lvis", "evaluate_coco", "tail_k_ap", "tide_errors", "count_false_positives",
            "false_positives_by_group", "check_results"]
__all__ += ["use_margin", "MarginBoxPredictor", "CosineBoxClassifier", "METHODS", "WHEN"]
__all__ += ["build_detector", "load_detector_checkpoint", "ARCHS", "DETECTION_PRESETS", "train_detector", "predict",
            "DetectionSchedule"]
__all__ += ["DetectionDataset", "load_detection_dataset", "validate_annotations", "collate", "detections_to_results",
            "resolve_detection_data"]
__all__ += ["repeat_factors", "RepeatFactorSampler"]
__all__ += ["make_benchmark", "validate_benchmark"]

from .config import DetectionConfig, load_detection_config  # noqa: E402
from .runs import evaluate_run, train_from_config  # noqa: E402

__all__ += ["DetectionConfig", "load_detection_config", "train_from_config", "evaluate_run"]
