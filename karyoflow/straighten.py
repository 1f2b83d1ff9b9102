"""Rotate & crop: turn an individual chromosome image (ICI) vertical and cut its empty margins.

The same function runs on training ICIs and on ICIs cut from segmentation masks, so training
and inference see chromosomes prepared identically (the paper's strategy C).

Methods:
- "hough": the paper's Algorithm 1. Canny edges, Hough lines; the first (strongest) line gives
  the angle, and the image is rotated so that line is vertical.
- "mask": the principal axis (PCA) of the chromosome's foreground mask is turned vertical.
- "none": no rotation; only the empty margins are cut.

Input: a grey image, bright chromosome on a dark (zero) background, as BioImLab Q-band ICIs
and ICIs cut out of an MCI with their mask. A G-band ICI (dark on white) is straightened with
`stain="g"`: it is worked on inverted and returned dark on white again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from karyoflow.stain import Stain, for_display, to_bright_on_dark

Method = Literal["hough", "mask", "none"]
METHODS: tuple[str, ...] = ("hough", "mask", "none")
FOREGROUND_LEVEL = 8  # grey level above which a pixel belongs to the chromosome


@dataclass(frozen=True)
class Straightened:
    image: np.ndarray  # uint8, vertical chromosome, margins cut
    angle: float  # degrees the input was rotated by (counter-clockwise, OpenCV convention)


def foreground_mask(image: np.ndarray) -> np.ndarray:
    return image > FOREGROUND_LEVEL


def crop_margins(image: np.ndarray, pad: int = 1) -> np.ndarray:
    """Cut rows and columns that hold no foreground, leaving `pad` pixels."""
    ys, xs = np.nonzero(foreground_mask(image))
    if ys.size == 0:
        return image
    y0, y1 = max(ys.min() - pad, 0), min(ys.max() + pad + 1, image.shape[0])
    x0, x1 = max(xs.min() - pad, 0), min(xs.max() + pad + 1, image.shape[1])
    return image[y0:y1, x0:x1]


def rotate_expand(image: np.ndarray, angle: float) -> np.ndarray:
    """Rotate counter-clockwise by `angle` degrees on a canvas big enough to lose nothing."""
    h, w = image.shape[:2]
    center = (w / 2.0, h / 2.0)
    matrix = cv2.getRotationMatrix2D(center, angle, 1.0)
    cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
    new_w, new_h = int(math.ceil(h * sin + w * cos)), int(math.ceil(h * cos + w * sin))
    matrix[0, 2] += new_w / 2.0 - center[0]
    matrix[1, 2] += new_h / 2.0 - center[1]
    return cv2.warpAffine(image, matrix, (new_w, new_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def _vertical_rotation(line_angle: float) -> float:
    """Rotation (deg, CCW) turning a line at `line_angle` (deg, image x to the right, y down)
    to vertical, choosing the smaller of the two equivalent turns."""
    # With y pointing down, a line at `line_angle` (mod 180) is turned vertical by a
    # counter-clockwise turn of line_angle - 90; fold it into [-90, 90).
    return (line_angle - 90.0 + 90.0) % 180.0 - 90.0


def hough_angle(image: np.ndarray) -> float | None:
    """Algorithm 1, steps 1-8: the angle (deg) of the strongest Hough line of the Canny edges."""
    padded = cv2.copyMakeBorder(image, 4, 4, 4, 4, cv2.BORDER_CONSTANT, value=0)
    edges = cv2.Canny(padded, 50, 150)
    if not edges.any():
        return None
    # Lower the vote threshold until a line appears: short chromosomes have short edges.
    threshold = max(padded.shape) // 2
    while threshold >= 5:
        lines = cv2.HoughLines(edges, 1, np.pi / 180.0, threshold)
        if lines is not None:
            rho, theta = lines[0][0]
            a, b = math.cos(theta), math.sin(theta)
            x0, y0 = a * rho, b * rho
            x1, y1 = x0 + 1000 * (-b), y0 + 1000 * a
            x2, y2 = x0 - 1000 * (-b), y0 - 1000 * a
            return math.degrees(math.atan2(y2 - y1, x2 - x1))
        threshold = int(threshold * 0.7)
    return None


def mask_angle(image: np.ndarray) -> float | None:
    """Angle (deg) of the principal axis of the foreground pixels, intensity-weighted."""
    ys, xs = np.nonzero(foreground_mask(image))
    if ys.size < 3:
        return None
    weights = image[ys, xs].astype(np.float64)
    coords = np.stack([xs, ys], axis=1).astype(np.float64)
    mean = np.average(coords, axis=0, weights=weights)
    centred = coords - mean
    covariance = (centred * weights[:, None]).T @ centred / weights.sum()
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    major = eigenvectors[:, int(np.argmax(eigenvalues))]
    return math.degrees(math.atan2(major[1], major[0]))


def straighten(image: np.ndarray, method: Method = "mask", stain: Stain = "q") -> Straightened:
    """Rotate the chromosome vertical with `method`, then crop its empty margins. The result is
    in the input's polarity: bright on dark for Q-band, dark on white for `stain="g"`."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 grey image, got {image.dtype}")
    if method not in METHODS:
        raise ValueError(f"unknown straightening method {method!r}; choose from {METHODS}")
    if stain == "g":
        worked = straighten(to_bright_on_dark(image, "g"), method)
        return Straightened(for_display(worked.image, "g"), worked.angle)
    cropped = crop_margins(image)
    line_angle = None
    if method == "hough":
        line_angle = hough_angle(cropped)
    elif method == "mask":
        line_angle = mask_angle(cropped)
    if line_angle is None:
        return Straightened(cropped, 0.0)
    rotation = _vertical_rotation(line_angle)
    return Straightened(crop_margins(rotate_expand(cropped, rotation)), rotation)
