"""Input discovery for karyotyping: the images a user names, directly or as folders.

Accepted: PNG, JPEG, TIFF and BMP images, and labelme JSON with the MCI embedded (the BioImLab
layout's `mci/original_<case>.json`). A folder contributes its images, or those of its `mci/`
subfolder when it has one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".json"}


class InputError(ValueError):
    """A named input is missing, not an image, or unreadable."""


def find_images(paths: list[Path]) -> list[Path]:
    """Image files (or labelme JSON with an embedded image) named directly or found in folders."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            inner = path / "mci" if (path / "mci").is_dir() else path
            found += sorted(p for p in inner.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise InputError(f"{path}: not an image (want PNG, JPEG, TIFF, BMP or labelme JSON)")
            found.append(path)
        else:
            raise InputError(f"{path}: no such file or folder")
    if not found:
        raise InputError("no images found in " + ", ".join(str(p) for p in paths))
    return found


def load_image(path: Path) -> np.ndarray:
    """One input as a grey uint8 array."""
    from PIL import Image, UnidentifiedImageError

    from karyoflow.data.bioimlab import read_mci
    from karyoflow.pipeline import to_grey

    if path.suffix.lower() == ".json":
        return read_mci(path).image
    try:
        with Image.open(path) as image:
            return to_grey(image)
    except (UnidentifiedImageError, OSError) as error:
        raise InputError(f"{path}: cannot read the image ({error})") from error
