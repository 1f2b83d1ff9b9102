"""Semi-synthetic G-band metaphases: a composed metaphase turned into a brightfield photograph.

G-band ICIs are composed like Q-band ones (karyoflow.data.synth) in the working representation,
bright on dark, where the maximum of two overlapping chromosomes is the darker of the two once
inverted: G-banded chromatin absorbs light, so where two chromosomes cross the darker one shows.
`to_brightfield` then inverts the picture and adds what a brightfield microscope photograph has
and fluorescence has not: a bright, unevenly lit background (a smooth illumination gradient and
vignetting), slight defocus blur, sensor noise and debris (small dark specks and fibres that are
not chromosomes and carry no polygon). Masks, labels and polygons are unchanged.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:  # synth composes the metaphase and calls this module
    from karyoflow.data.synth import SyntheticMci


def _illumination(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Background brightness, 0..255: a tilted plane plus vignetting, 215-250 in the centre."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    xs, ys = xs / width - 0.5, ys / height - 0.5
    level = rng.uniform(225.0, 248.0)
    tilt_x, tilt_y = rng.uniform(-18.0, 18.0, size=2)
    vignette = rng.uniform(10.0, 35.0) * (xs**2 + ys**2) * 2.0
    return level + tilt_x * xs + tilt_y * ys - vignette


def _debris(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Absorbance (0..1) of small specks and thin fibres scattered over the slide."""
    debris = np.zeros((height, width), np.float32)
    for _ in range(int(rng.integers(5, 25))):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        if rng.random() < 0.7:
            radius = int(rng.integers(1, 4))
            cv2.circle(debris, (x, y), radius, float(rng.uniform(0.2, 0.7)), -1)
        else:
            length, angle = rng.uniform(8, 30), rng.uniform(0, np.pi)
            end = (int(x + length * np.cos(angle)), int(y + length * np.sin(angle)))
            cv2.line(debris, (x, y), end, float(rng.uniform(0.15, 0.4)), 1)
    return cv2.GaussianBlur(debris, (0, 0), 0.8)


def to_brightfield(mci: SyntheticMci, rng: np.random.Generator) -> SyntheticMci:
    """The G-band brightfield photograph of a metaphase composed in the working representation."""
    height, width = mci.image.shape
    # absorbance of the chromatin: 0 on empty background, up to ~1 in the darkest bands
    absorbance = mci.image.astype(np.float32) / 255.0
    absorbance = np.clip(absorbance + _debris(rng, height, width), 0.0, 1.0)
    light = _illumination(rng, height, width)
    picture = light * (1.0 - absorbance)
    picture = cv2.GaussianBlur(picture, (0, 0), float(rng.uniform(0.4, 1.0)))
    picture += rng.normal(0.0, rng.uniform(1.5, 4.0), size=picture.shape).astype(np.float32)
    image = np.clip(np.rint(picture), 0, 255).astype(np.uint8)
    return replace(mci, image=image)
