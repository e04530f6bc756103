"""Long-tailed detection and instance segmentation with IIF (paper Section IV-A, Tables XI-XVIII).

IIF, IOF and the additive margin methods as a switch on torchvision detectors (``use_margin``), COCO/LVIS data
with repeat-factor sampling, LVIS-style evaluation with false-positive analysis, and an offline long-tailed
instance-segmentation benchmark. Needs the ``train`` extra; evaluation needs the ``detection`` extra.
"""

from __future__ import annotations

__all__: list[str] = []
