"""Long-tailed datasets, augmentation and samplers (``build_datasets``, ``build_sampler``)."""

from .lists import FileListDataset, validate_list
from .longtail import longtail_counts, select_longtail
from .registry import DATASETS, build_datasets
from .samplers import SAMPLERS, build_sampler
from .splits import DatasetSplits
from .tensor_dataset import TensorImageDataset
from .transforms import AUGMENTS, NORMALIZE, Cutout, batch_augment, build_transform, mixup_batch

__all__ = ["DATASETS", "AUGMENTS", "SAMPLERS", "NORMALIZE", "DatasetSplits", "TensorImageDataset",
           "FileListDataset", "build_datasets", "build_sampler", "longtail_counts", "select_longtail",
           "validate_list", "build_transform", "batch_augment", "mixup_batch", "Cutout"]
