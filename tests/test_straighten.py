from __future__ import annotations

import cv2
import numpy as np
import pytest

from karyoflow.classify.preprocess import CANVAS_HEIGHT, CANVAS_WIDTH, place_on_canvas, prepare_cell
from karyoflow.straighten import crop_margins, rotate_expand, straighten

pytestmark = pytest.mark.unit


def banded_rod(length: int = 80, width: int = 14) -> np.ndarray:
    """A vertical chromosome-like rod with bands, on a black background."""
    image = np.zeros((140, 140), np.uint8)
    cv2.ellipse(image, (70, 70), (width // 2, length // 2), 0, 0, 360, 150, -1)
    for y in range(30, 110, 12):
        image[y : y + 4][image[y : y + 4] > 0] = 230
    return image


def angle_error(a: float, b: float) -> float:
    """Difference of two axis angles (mod 180)."""
    d = (a - b) % 180.0
    return min(d, 180.0 - d)


@pytest.mark.parametrize("method, tolerance", [("mask", 2.0), ("hough", 6.0)])
@pytest.mark.parametrize("angle", [-80, -45, -20, 0, 10, 30, 60, 85, 135])
def test_straightening_recovers_known_angles(method: str, tolerance: float, angle: float) -> None:
    rotated = rotate_expand(banded_rod(), angle)
    result = straighten(rotated, method)
    # the rod was turned by `angle`; straightening must turn it back by -angle (mod 180)
    assert angle_error(result.angle, -angle) <= tolerance
    h, w = result.image.shape
    assert h > 3 * w  # vertical again, margins cut


def test_none_only_crops() -> None:
    rotated = rotate_expand(banded_rod(), 40)
    result = straighten(rotated, "none")
    assert result.angle == 0.0
    assert result.image.shape == crop_margins(rotated).shape
    assert result.image.shape[0] < rotated.shape[0]


def test_straightening_is_deterministic() -> None:
    rotated = rotate_expand(banded_rod(), 27)
    first, second = straighten(rotated, "hough"), straighten(rotated, "hough")
    assert first.angle == second.angle and np.array_equal(first.image, second.image)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown straightening method"):
        straighten(banded_rod(), "diagonal")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="uint8"):
        straighten(banded_rod().astype(np.float32), "mask")


def test_cell_scale_keeps_relative_size() -> None:
    long_rod, short_rod = banded_rod(90), banded_rod(40)
    cell = prepare_cell([long_rod] * 6 + [short_rod] * 6, "mask")
    heights = [(c.sum(1) > 0).sum() for c in cell.canvases]
    assert heights[0] > 1.8 * heights[-1]
    assert cell.canvases.shape == (12, CANVAS_HEIGHT, CANVAS_WIDTH)


def test_canvas_shrinks_what_does_not_fit() -> None:
    canvas = place_on_canvas(np.full((300, 20), 200, np.uint8), scale=1.0)
    assert canvas.shape == (CANVAS_HEIGHT, CANVAS_WIDTH)
    assert (canvas[:, CANVAS_WIDTH // 2] > 0).sum() >= CANVAS_HEIGHT - 6


@pytest.mark.parametrize("angle", [-60, -15, 25, 70])
def test_gband_straightening_on_white(angle: float) -> None:
    """A dark-on-white (G-band) rod is straightened like its inverse and stays dark on white."""
    rod_on_white = 255 - rotate_expand(banded_rod(), angle)
    result = straighten(rod_on_white, "mask", stain="g")
    assert angle_error(result.angle, -angle) <= 2.0
    h, w = result.image.shape
    assert h > 3 * w
    border = np.concatenate([result.image[0], result.image[-1], result.image[:, 0], result.image[:, -1]])
    assert np.median(border) == 255 and result.image.min() < 110  # white margins, dark chromosome
    # treated as Q-band, the white background is taken for the chromosome: nothing is cut out
    as_q = straighten(rod_on_white, "mask").image
    assert as_q.shape[0] < 3 * as_q.shape[1]
