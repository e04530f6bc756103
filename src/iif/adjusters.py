"""Logit adjusters: every margin method of the paper's Table IV as one small nn.Module each.

(Being extended: see docs/ARCHITECTURE.md.)
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["tau_normalize", "LearnableWeightScaling"]


def tau_normalize(weight: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """tau-normalised classifier weights (Kang et al. 2020): row ``w_i / ||w_i||^tau``."""
    norms = weight.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return weight / norms.pow(tau).view(-1, *([1] * (weight.dim() - 1)))


class LearnableWeightScaling(nn.Module):
    """LWS (Kang et al. 2020, paper Table IV): ``z'_i = alpha_i * z_i`` with learnable ``alpha`` (init 1)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(num_classes))

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return logits * self.scale
