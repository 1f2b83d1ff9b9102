"""Banding stains: Q-band fluorescence (bright chromosomes on black) and G-band brightfield
(dark bands on a bright background).

Every stage of Karyoflow computes on one representation, *bright chromosome on a dark
background*, because foreground masks, straightening and the networks' zero padding all assume a
dark, empty background. Q-band images are in it already; G-band images are inverted on the way
in (`to_bright_on_dark`) and back on the way out (`for_display`), so karyograms of G-band cells
are drawn dark on light as labs read them.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Stain = Literal["q", "g"]
StainChoice = Literal["q", "g", "auto"]
STAINS: tuple[str, ...] = ("q", "g")
STAIN_CHOICES: tuple[str, ...] = ("q", "g", "auto")
STAIN_NAMES = {"q": "Q-band", "g": "G-band"}
# A background brighter than this (median grey of the image border) is brightfield: G-banding.
BRIGHT_BACKGROUND = 128


class StainError(ValueError):
    """An unknown stain name."""


def check_stain(stain: str) -> StainChoice:
    if stain not in STAIN_CHOICES:
        raise StainError(f"unknown stain {stain!r}; choose from {', '.join(STAIN_CHOICES)}")
    return stain  # type: ignore[return-value]


def border_level(image: np.ndarray) -> float:
    """Median grey level of the image's outermost rows and columns: its background."""
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    return float(np.median(border))


def detect_stain(image: np.ndarray) -> Stain:
    """'g' when the background is bright (brightfield G-banding), else 'q' (fluorescence)."""
    if image.ndim != 2 or image.size == 0:
        raise ValueError(f"expected a non-empty grey image, got shape {image.shape}")
    return "g" if border_level(image) > BRIGHT_BACKGROUND else "q"


def detect_cell_stain(images: list[np.ndarray]) -> Stain:
    """The stain of a cell given as its cut-out chromosomes: the majority of the images' own."""
    if not images:
        raise ValueError("a cell needs at least one image to detect its stain")
    votes = sum(detect_stain(image) == "g" for image in images)
    return "g" if votes * 2 > len(images) else "q"


def resolve_stain(choice: str, images: list[np.ndarray]) -> Stain:
    """The stain to use: the given one, or for 'auto' the one the images show."""
    choice = check_stain(choice)
    return detect_cell_stain(images) if choice == "auto" else choice


def to_bright_on_dark(image: np.ndarray, stain: Stain) -> np.ndarray:
    """The working representation (bright chromosome, dark background) of a uint8 grey image."""
    return 255 - image if stain == "g" else image


def for_display(image: np.ndarray, stain: Stain) -> np.ndarray:
    """A working-representation image as the lab sees it in its stain (inverse of the above)."""
    return 255 - image if stain == "g" else image
