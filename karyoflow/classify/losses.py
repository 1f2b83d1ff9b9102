"""Center loss (Wen et al. 2016), the second term of the paper's equation (3)."""

from __future__ import annotations

import torch
from torch import nn


class CenterLoss(nn.Module):
    """Mean squared distance of each feature to its class centre; centres are learned.

    The paper writes alpha * sum_j ||x_j - c_yj||^2. We average over the batch and the feature
    dimensions instead of summing: with ChrNet4's 2048-d features a plain sum is ~10^3 times the
    cross-entropy at initialisation and swamps it, and the average keeps alpha = 0.5 (the
    paper's value) meaningful whatever the batch size.
    """

    def __init__(self, num_classes: int, feature_dim: int) -> None:
        super().__init__()
        self.centers = nn.Parameter(torch.zeros(num_classes, feature_dim))

    def forward(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return (features - self.centers[targets]).pow(2).mean()
