"""ChrNet4: the chromosome classifier of Wang et al. (Fig. 1 right, Fig. 3).

Phase 1: a 7x7 stride-2 convolution and a 3x3 stride-2 max-pool (224 -> 112 -> 56 in the paper).
Phase 2: four stages of ChrBlocks, a ResNeXt bottleneck (1x1, grouped 3x3 with cardinality
G = 32 and base width W = 4, 1x1; each followed by batch norm, ReLU after the first two) with a
squeeze-and-excitation "attention layer" (global average pool, linear, leaky ReLU, linear,
sigmoid) re-weighting the channels before the residual sum.
Phase 3: global average pool and a 24-way fully connected layer.

Block counts per stage: the paper's text says the stages accumulate the ChrBlock "twice, three
times, and twice"; Fig. 3 prints stage 1 as {..}x2, stage 2 without braces (one block), stage 3
braced with its count cut off, stage 4 {..}x2. Our reading is (2, 1, 3, 2). It is confirmed by
the paper's model size: 62.39 MB of fp32 parameters (15.6 M); (2, 1, 3, 2) gives 15.7 M, while
(2, 3, 3, 2) would give 16.4 M and ResNeXt-50's (3, 4, 6, 3) 25.6 M. See docs/chrnet4.md.
"""

from __future__ import annotations

import torch
from torch import nn

from karyoflow.labels import NUM_CLASSES

STAGE_CHANNELS = (64, 128, 256, 512)  # "input channels of the four stages" (c in the paper)
BLOCKS_PER_STAGE = (2, 1, 3, 2)
CARDINALITY = 32
BASE_WIDTH = 4
EXPANSION = 4  # bottleneck output = 4 x c, as ResNeXt: stage 1 ends with 256 channels


class AttentionLayer(nn.Module):
    """Squeeze-and-excitation (Fig. 3a): avg pool, linear, leaky ReLU, linear, sigmoid."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden),
            nn.LeakyReLU(0.01, inplace=True),
            nn.Linear(hidden, channels),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.fc(self.pool(x).flatten(1))
        return x * weights[:, :, None, None]


class ChrBlock(nn.Module):
    """ResNeXt bottleneck with an attention layer and a residual connection."""

    def __init__(self, in_channels: int, stage_channels: int, stride: int) -> None:
        super().__init__()
        # C = c * W / C0 * G, with C0 = 64 (the paper's equation for the grouped width)
        width = stage_channels * BASE_WIDTH // 64 * CARDINALITY
        out_channels = stage_channels * EXPANSION
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=CARDINALITY, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.attention = AttentionLayer(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.attention(self.body(x)) + self.shortcut(x))


class ChrNet4(nn.Module):
    """Returns logits; `forward_features` also gives the pooled embedding used by center loss."""

    def __init__(
        self,
        num_classes: int = NUM_CLASSES,
        in_channels: int = 1,
        blocks_per_stage: tuple[int, ...] = BLOCKS_PER_STAGE,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        stages = []
        channels = 64
        for index, (stage_channels, blocks) in enumerate(zip(STAGE_CHANNELS, blocks_per_stage, strict=True)):
            layers = []
            for block in range(blocks):
                stride = 2 if (block == 0 and index > 0) else 1
                layers.append(ChrBlock(channels, stage_channels, stride))
                channels = stage_channels * EXPANSION
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = channels
        self.fc = nn.Linear(channels, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        # Zero-init the last BN of each residual body so every block starts as identity:
        # from-scratch training of deep bottleneck nets converges faster and more stably.
        for module in self.modules():
            if isinstance(module, ChrBlock):
                nn.init.zeros_(module.body[-1].weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.stages(self.stem(x))).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
