"""Writing labelme files: an MCI with one labelled polygon per chromosome, the image embedded
as PNG, the cell and its true karyotype in `flags` (where `karyoflow.data.bioimlab.read_mci`
takes them from)."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

LABELME_VERSION = "5.2.1"


def labelme_document(
    image: np.ndarray,
    polygons: Sequence[Sequence[Sequence[float]]],
    labels: Sequence[str],
    image_path: str,
    flags: dict,
    descriptions: Sequence[str] | None = None,
) -> dict:
    """labelme JSON of a grey MCI (H x W uint8) and its (x, y) polygons with their labels."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    descriptions = descriptions if descriptions is not None else [""] * len(labels)
    return {
        "version": LABELME_VERSION,
        "flags": flags,
        "shapes": [
            {
                "label": label,
                "points": [[float(x), float(y)] for x, y in polygon],
                "group_id": None,
                "shape_type": "polygon",
                "flags": {},
                "description": description,
            }
            for label, polygon, description in zip(labels, polygons, descriptions, strict=True)
        ],
        "imagePath": image_path,
        "imageData": base64.b64encode(buffer.getvalue()).decode("ascii"),
        "imageHeight": int(image.shape[0]),
        "imageWidth": int(image.shape[1]),
    }
