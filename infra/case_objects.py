"""What a case keeps in object storage: the key layout, and a segmented cell stored and loaded.

One bucket, keys per clinic and case, so a clinic's data is one prefix (export, erasure):

    clinics/<clinic>/cases/<case>/images/<position>/original<.ext>   the uploaded MCI
    .../images/<position>/cell.json       scores, boxes, angles, the cell's normalisation, timings
    .../images/<position>/cell.npz        the straightened ICIs and the masks in one object (what
                                          assembly reads: one request instead of one per ICI)
    .../images/<position>/icis/<n>.png    ICI n, cut out with its mask, rotated & cropped
    .../images/<position>/masks/<n>.png   mask n (full MCI size, 0/255)
    .../images/<position>/karyogram.png   the karyogram
    .../images/<position>/report.json     the JSON report

Writes of the same key with the same bytes are idempotent: a re-run task rewrites the same
objects rather than adding new ones.
"""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from infra.storage import ObjectStore

if TYPE_CHECKING:  # importing the analysis loads torch, which the API's intake never needs
    from karyoflow.pipeline import SegmentedCell

PNG = "image/png"
JSON = "application/json"
# uploads of one cell's objects in parallel: each is a small request whose time is the round trip
PUT_THREADS = 8


def case_prefix(clinic_id: int, case_id: str) -> str:
    """Everything stored for a case, with the trailing slash (a prefix to list or erase)."""
    return f"clinics/{clinic_id}/cases/{case_id}/"


@dataclass(frozen=True)
class ImageKeys:
    """The object keys of one image of a case."""

    prefix: str  # no trailing slash

    @classmethod
    def of(cls, clinic_id: int, case_id: str, position: int) -> ImageKeys:
        return cls(f"{case_prefix(clinic_id, case_id)}images/{position}")

    def original(self, suffix: str) -> str:
        return f"{self.prefix}/original{suffix}"

    def ici(self, number: int) -> str:
        """ICI `number`, counted from 1 (the candidate's index + 1)."""
        return f"{self.prefix}/icis/{number}.png"

    def mask(self, number: int) -> str:
        return f"{self.prefix}/masks/{number}.png"

    @property
    def cell_summary(self) -> str:
        return f"{self.prefix}/cell.json"

    @property
    def cell_arrays(self) -> str:
        return f"{self.prefix}/cell.npz"

    @property
    def karyogram(self) -> str:
        return f"{self.prefix}/karyogram.png"

    @property
    def report(self) -> str:
        return f"{self.prefix}/report.json"

    def reviewed_ici(self, number: int) -> str:
        """A chromosome a reviewer's split or merge made (numbered after the machine's)."""
        return f"{self.prefix}/review/icis/{number}.png"

    def reviewed_mask(self, number: int) -> str:
        return f"{self.prefix}/review/masks/{number}.png"

    def reviewed_karyogram(self, revision: int) -> str:
        """The karyogram after a review revision (the machine's one is kept)."""
        return f"{self.prefix}/review/{revision}/karyogram.png"

    def reviewed_report(self, revision: int) -> str:
        return f"{self.prefix}/review/{revision}/report.json"

    @property
    def all(self) -> str:
        """The image's prefix with the trailing slash."""
        return f"{self.prefix}/"


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)  # speed over a few bytes
    return buffer.getvalue()


def _arrays_bytes(cell: SegmentedCell) -> bytes:
    """The ICIs (ragged: stored flat with their shapes) and the masks (bit-packed)."""
    shapes = np.array([ici.shape for ici in cell.straightened], np.int32).reshape(-1, 2)
    flat = np.concatenate([ici.ravel() for ici in cell.straightened]) if cell.straightened else np.zeros(0, np.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, shapes=shapes, icis=flat, masks=np.packbits(cell.masks.astype(bool), axis=-1))
    return buffer.getvalue()


def _arrays_from(data: bytes, count: int, height: int, width: int) -> tuple[list[np.ndarray], np.ndarray]:
    with np.load(io.BytesIO(data)) as arrays:
        shapes, flat = arrays["shapes"], arrays["icis"]
        masks = np.unpackbits(arrays["masks"], axis=-1, count=width).astype(bool).reshape(count, height, width)
    icis, start = [], 0
    for rows, columns in shapes:
        icis.append(flat[start : start + rows * columns].reshape(rows, columns))
        start += rows * columns
    return icis, masks


def store_cell(store: ObjectStore, keys: ImageKeys, cell: SegmentedCell, timings_ms: dict[str, float]) -> list[bytes]:
    """Store a segmented cell: every ICI and mask as its own PNG (what the chromosome rows point
    at), the arrays in one object for assembly, and the summary last (its presence means the rest
    is there). Returns the ICIs' PNG bytes, numbered from 1 like their keys."""
    icis = [png_bytes(ici) for ici in cell.straightened]
    objects = [(keys.ici(n), data, PNG) for n, data in enumerate(icis, start=1)]
    objects += [(keys.mask(n), png_bytes(mask.astype(np.uint8) * 255), PNG) for n, mask in enumerate(cell.masks, 1)]
    objects.append((keys.cell_arrays, _arrays_bytes(cell), "application/octet-stream"))
    with ThreadPoolExecutor(PUT_THREADS) as pool:
        for _ in pool.map(lambda item: store.put(*item), objects):  # raises the first failure
            pass
    summary = {
        "width": cell.width,
        "height": cell.height,
        "detection_scores": cell.detection_scores.tolist(),
        "boxes": [list(box) for box in cell.boxes],
        "angles": cell.angles.tolist(),
        "scale": cell.scale,
        "level": cell.level,
        "stain": cell.stain,
        "timings_ms": timings_ms,
    }
    store.put(keys.cell_summary, json.dumps(summary).encode(), JSON)
    return icis


def load_cell(store: ObjectStore, keys: ImageKeys) -> tuple[SegmentedCell, dict[str, float]]:
    """A stored segmented cell and its segmentation timings."""
    from karyoflow.pipeline import SegmentedCell

    summary = json.loads(store.get(keys.cell_summary))
    count, height, width = len(summary["detection_scores"]), summary["height"], summary["width"]
    icis, masks = _arrays_from(store.get(keys.cell_arrays), count, height, width)
    cell = SegmentedCell(
        width=width,
        height=height,
        detection_scores=np.asarray(summary["detection_scores"]),
        masks=masks,
        boxes=[tuple(box) for box in summary["boxes"]],
        straightened=icis,
        angles=np.asarray(summary["angles"], dtype=np.float32),
        scale=summary["scale"],
        level=summary["level"],
        stain=summary.get("stain", "q"),  # cells stored before stains were recorded are Q-band
    )
    return cell, summary["timings_ms"]
