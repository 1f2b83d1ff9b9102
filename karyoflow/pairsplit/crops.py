"""A detection as PairSplit sees it, and its output mapped back to the image.

The crop is the detection's box with a margin, its pixels outside the detection's mask zeroed
(neighbours are not part of the question), scaled to fit a `size` x `size` square with the
aspect kept and centred. Input channels: the pixels (0-1, scaled by the brightest pixel of the
detection) and the mask."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

CROP_SIZE = 64
MARGIN = 3  # pixels around the detection's box


@dataclass(frozen=True)
class CropFrame:
    """Where a crop came from: the image box (x0, y0, x1, y1), the scale and the offset of the
    scaled box inside the square."""

    box: tuple[int, int, int, int]
    scale: float
    offset: tuple[int, int]  # (x, y) in the square
    size: int

    @property
    def scaled(self) -> tuple[int, int]:
        """The box's (width, height) in the square."""
        x0, y0, x1, y1 = self.box
        return max(1, round((x1 - x0) * self.scale)), max(1, round((y1 - y0) * self.scale))

    def to_image(self, square: np.ndarray, shape: tuple[int, int], threshold: float = 0.5) -> np.ndarray:
        """A size x size probability map (or bool mask) back to a full-size bool mask of `shape`
        (H, W): scaled up bilinearly, then thresholded, so that edges stay smooth."""
        x0, y0, x1, y1 = self.box
        width, height = x1 - x0, y1 - y0
        ox, oy = self.offset
        scaled_w, scaled_h = self.scaled
        inner = square[oy : oy + scaled_h, ox : ox + scaled_w].astype(np.float32)
        back = cv2.resize(inner, (width, height), interpolation=cv2.INTER_LINEAR) > threshold
        full = np.zeros(shape, bool)
        full[y0:y1, x0:x1] = back
        return full


def frame_of(mask: np.ndarray, size: int = CROP_SIZE, margin: int = MARGIN) -> CropFrame:
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        raise ValueError("an empty mask has no crop")
    height, width = mask.shape
    x0, y0 = max(int(xs.min()) - margin, 0), max(int(ys.min()) - margin, 0)
    x1, y1 = min(int(xs.max()) + margin + 1, width), min(int(ys.max()) + margin + 1, height)
    scale = size / max(x1 - x0, y1 - y0)
    scaled_w, scaled_h = max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))
    return CropFrame((x0, y0, x1, y1), scale, ((size - scaled_w) // 2, (size - scaled_h) // 2), size)


def _to_square(array: np.ndarray, frame: CropFrame, interpolation: int) -> np.ndarray:
    x0, y0, x1, y1 = frame.box
    ox, oy = frame.offset
    scaled_w, scaled_h = frame.scaled
    square = np.zeros((frame.size, frame.size), array.dtype)
    square[oy : oy + scaled_h, ox : ox + scaled_w] = cv2.resize(
        array[y0:y1, x0:x1], (scaled_w, scaled_h), interpolation=interpolation
    )
    return square


def crop_input(image: np.ndarray, mask: np.ndarray, frame: CropFrame) -> np.ndarray:
    """2 x size x size float32: the detection's pixels (background zeroed, brightest = 1) and
    its mask. `image` is grey in the working representation (bright chromosomes on dark)."""
    pixels = np.where(mask, image, 0).astype(np.float32)
    peak = float(pixels.max()) or 1.0
    square = _to_square(pixels / peak, frame, cv2.INTER_AREA)
    square_mask = _to_square(mask.astype(np.uint8), frame, cv2.INTER_NEAREST).astype(np.float32)
    return np.stack([square * square_mask, square_mask])


def crop_target(mask: np.ndarray, frame: CropFrame) -> np.ndarray:
    """A true chromosome's mask in the crop's square (bool)."""
    return _to_square(mask.astype(np.uint8), frame, cv2.INTER_NEAREST) > 0
