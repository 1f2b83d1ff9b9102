"""ICI tensors for training and evaluation, and the batch augmentation."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from karyoflow.classify.preprocess import Preprocessing
from karyoflow.data.icis import read_ici_cells


@dataclass
class IciTensors:
    images: torch.Tensor  # N x 1 x H x W float32
    targets: torch.Tensor  # N int64, 0..23
    cases: list[str]  # cell of each ICI
    paths: list[str]

    def __len__(self) -> int:
        return len(self.targets)


def load_ici_tensors(data_dir: Path, cases: list[str] | None, preprocessing: Preprocessing) -> IciTensors:
    """Read and prepare every ICI of the given cells (all cells when None), cell by cell."""
    images, targets, case_of, paths = [], [], [], []
    for case, records in read_ici_cells(data_dir, cases).items():
        prepared = preprocessing.prepare([r.load() for r in records])
        images.append(prepared.canvases)
        targets.extend(r.class_index for r in records)
        case_of.extend([case] * len(records))
        paths.extend(str(r.path) for r in records)
    stacked = torch.from_numpy(np.concatenate(images))[:, None]
    return IciTensors(stacked, torch.tensor(targets, dtype=torch.int64), case_of, paths)


def augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flips (as the paper) plus small rotations, scalings, shifts and intensity changes.

    Done on the whole batch with one affine grid, so it costs little next to the network on a
    CPU. Scale changes stay small (+-8%): chromosome size relative to the cell is a feature.
    """
    n = batch.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.rand(n, generator=generator) * (high - low) + low

    angle = uniform(-10.0, 10.0) * math.pi / 180.0
    scale = uniform(0.92, 1.08)
    flip_x = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    flip_y = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    h, w = batch.shape[-2:]
    aspect = h / w
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.zeros(n, 2, 3)
    # normalised coordinates differ in x and y for a non-square canvas: correct by the aspect
    theta[:, 0, 0] = cos * flip_x
    theta[:, 0, 1] = -sin * aspect * flip_y
    theta[:, 1, 0] = sin / aspect * flip_x
    theta[:, 1, 1] = cos * flip_y
    theta[:, 0, 2] = uniform(-0.08, 0.08)
    theta[:, 1, 2] = uniform(-0.05, 0.05)
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    out = F.grid_sample(batch, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    gain = uniform(0.8, 1.2)[:, None, None, None]
    gamma = uniform(0.8, 1.25)[:, None, None, None]
    return out.clamp_min(0).pow(gamma) * gain
