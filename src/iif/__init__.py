"""iif: Inverse Image Frequency for long-tailed image recognition (Alexandridis et al., IEEE TIP 2023)."""

from .errors import IIFError
from .frequency import ClassFrequency
from .weights import VARIANTS, iif_weights

__version__ = "0.1.0"

__all__ = ["IIFError", "ClassFrequency", "VARIANTS", "iif_weights", "__version__"]
