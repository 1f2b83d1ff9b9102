"""From raw ICIs to ChrNet4 input tensors.

Every ICI is straightened (rotate & crop), then drawn at a common scale on a fixed vertical
canvas. The scale is set per cell: the cell's median chromosome size (square root of the
foreground area, which does not depend on the rotation) is mapped to REFERENCE_SIZE pixels.
Chromosome size relative to the rest of the cell is the strongest cue a cytogeneticist uses
after the banding, and per-cell scaling keeps it while removing the differences in
condensation and magnification between cells. A lone ICI without its cell uses its own size
against the BioImLab median (`SINGLE_ICI_SCALE`).

Intensity is normalised per cell too (the cell's 99th percentile of foreground grey levels
maps to 1.0), keeping relative brightness, which Q-banding makes informative (e.g. distal Yq).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from karyoflow.straighten import Method, foreground_mask, straighten

CANVAS_HEIGHT = 112
CANVAS_WIDTH = 56
REFERENCE_SIZE = 23.3  # canvas pixels of sqrt(area) of the cell's median chromosome (~0.93x native)
# BioImLab ICIs: median over cells of the median sqrt(foreground area), measured on the
# development data (103 cells: median 24.9, 5th-95th percentile 21.3-34.5); used for lone ICIs.
TYPICAL_CELL_SIZE = 25.0


@dataclass(frozen=True)
class Preprocessing:
    """How ICIs are prepared; stored with the weights so inference matches training."""

    method: Method = "mask"
    height: int = CANVAS_HEIGHT
    width: int = CANVAS_WIDTH
    reference_size: float = REFERENCE_SIZE

    @classmethod
    def from_meta(cls, meta: dict) -> Preprocessing:
        height, width = meta.get("canvas", (CANVAS_HEIGHT, CANVAS_WIDTH))
        return cls(meta["straighten"], int(height), int(width), float(meta.get("reference_size", REFERENCE_SIZE)))

    def prepare(self, images: list[np.ndarray]) -> PreparedCell:
        return prepare_cell(images, self.method, self.height, self.width, self.reference_size)


@dataclass(frozen=True)
class PreparedCell:
    canvases: np.ndarray  # N x H x W float32 in [0, ~1.5]
    angles: np.ndarray  # N, degrees each ICI was rotated by
    scale: float  # pixels of canvas per pixel of input
    straightened: tuple[np.ndarray, ...] = ()  # the rotated & cropped ICIs (native scale, uint8)
    level: float = 255.0  # grey level mapped to 1.0


def chromosome_size(image: np.ndarray) -> float:
    return float(np.sqrt(max(int(foreground_mask(image).sum()), 1)))


def place_on_canvas(
    image: np.ndarray, scale: float, height: int = CANVAS_HEIGHT, width: int = CANVAS_WIDTH
) -> np.ndarray:
    """Resize by `scale` (shrinking further only if it would not fit) and centre on the canvas."""
    h, w = image.shape
    fit = min(scale, (height - 2) / h, (width - 2) / w)
    new_h, new_w = max(int(round(h * fit)), 1), max(int(round(w * fit)), 1)
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((height, width), dtype=resized.dtype)
    y0, x0 = (height - new_h) // 2, (width - new_w) // 2
    canvas[y0 : y0 + new_h, x0 : x0 + new_w] = resized
    return canvas


def cell_normalisation(straightened: list[np.ndarray], reference_size: float = REFERENCE_SIZE) -> tuple[float, float]:
    """(scale, intensity level) of one cell from its straightened ICIs; see the module doc."""
    sizes = [chromosome_size(image) for image in straightened]
    if len(straightened) >= 10:
        scale = reference_size / float(np.median(sizes))
    else:  # too few chromosomes for a cell statistic: assume a typical BioImLab cell
        scale = reference_size / TYPICAL_CELL_SIZE
    foreground = np.concatenate([image[foreground_mask(image)] for image in straightened])
    level = float(np.percentile(foreground, 99)) if foreground.size else 255.0
    return scale, max(level, 1.0)


def canvas_for(
    straightened: np.ndarray, scale: float, level: float, height: int = CANVAS_HEIGHT, width: int = CANVAS_WIDTH
) -> np.ndarray:
    """One straightened ICI as ChrNet4 input, given its cell's normalisation."""
    return place_on_canvas(straightened, scale, height, width).astype(np.float32) / level


def prepare_cell(
    images: list[np.ndarray],
    method: Method = "mask",
    height: int = CANVAS_HEIGHT,
    width: int = CANVAS_WIDTH,
    reference_size: float = REFERENCE_SIZE,
) -> PreparedCell:
    """Straighten every ICI of one cell and draw them at the cell's common scale."""
    if not images:
        raise ValueError("a cell needs at least one ICI")
    straightened = [straighten(image, method) for image in images]
    images_straight = [s.image for s in straightened]
    scale, level = cell_normalisation(images_straight, reference_size)
    canvases = np.stack([canvas_for(image, scale, level, height, width) for image in images_straight])
    angles = np.array([s.angle for s in straightened], dtype=np.float32)
    return PreparedCell(canvases, angles, scale, tuple(images_straight), level)
