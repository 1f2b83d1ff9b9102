"""PairSplitNet: a small U-Net from a detection's crop (pixels and mask) to two mask logits,
one per chromosome. The two outputs are unordered; training scores the better of the two
orders (train.pair_loss)."""

from __future__ import annotations

import torch
from torch import nn


def _block(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, 3, padding=1, bias=False),
        nn.BatchNorm2d(outputs),
        nn.ReLU(inplace=True),
        nn.Conv2d(outputs, outputs, 3, padding=1, bias=False),
        nn.BatchNorm2d(outputs),
        nn.ReLU(inplace=True),
    )


class PairSplitNet(nn.Module):
    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = width
        self.encoders = nn.ModuleList([_block(2, w), _block(w, 2 * w), _block(2 * w, 4 * w)])
        self.middle = _block(4 * w, 8 * w)
        self.ups = nn.ModuleList([nn.ConvTranspose2d(c, c // 2, 2, stride=2) for c in (8 * w, 4 * w, 2 * w)])
        self.decoders = nn.ModuleList([_block(8 * w, 4 * w), _block(4 * w, 2 * w), _block(2 * w, w)])
        self.head = nn.Conv2d(w, 2, 1)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        """N x 2 x S x S (S divisible by 8) -> N x 2 x S x S logits."""
        skips = []
        x = crops
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = nn.functional.max_pool2d(x, 2)
        x = self.middle(x)
        for up, decoder, skip in zip(self.ups, self.decoders, reversed(skips), strict=True):
            x = decoder(torch.cat([up(x), skip], dim=1))
        return self.head(x)
