"""Peak resident memory of a segment worker's work on one MCI, by image size: what
KARYO_MAX_IMAGE_PIXELS must keep under the worker's memory (KARYO_WORKER_MAX_MEMORY_MB, the
container's limit).

    python scripts/segment_memory.py ../shared/data/bioimlab-labelled/mci/original_1.json 0.44 2 4

Each size runs in a fresh process (the MCI resized to that many megapixels, then what
`segment_image` does: working image, detection, cut-out and straightening, the cell's PNGs);
prints the process's peak RSS and its growth over the loaded models.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


class Discard:
    """An object store that keeps nothing: the encoding is measured, not the upload."""

    def put(self, key: str, data: bytes, content_type: str) -> None:
        pass


def measure(path: str, megapixels: float) -> dict:
    import resource

    import numpy as np
    from PIL import Image

    from infra.case_objects import ImageKeys, store_cell
    from karyoflow.data.bioimlab import read_mci
    from karyoflow.pipeline import Karyotyper

    karyotyper = Karyotyper(device="cpu")
    image = read_mci(Path(path)).image
    scale = (megapixels * 1e6 / image.size) ** 0.5
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    grey = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
    karyotyper.detect(*karyotyper.working_image(image, "auto"))  # models loaded and warm
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    working, stain = karyotyper.working_image(grey, "auto")
    detections = karyotyper.detect(working, stain)
    cell = karyotyper.cut_and_straighten(working, detections, stain)
    store_cell(Discard(), ImageKeys.of(1, "case", 1), cell, {})  # the PNGs and arrays, encoded
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"megapixels": round(grey.size / 1e6, 2), "size": list(size), "detections": len(detections.masks),
            "peak_mib": round(peak / 1024), "growth_mib": round((peak - before) / 1024)}  # fmt: skip


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--one":
        print(json.dumps(measure(sys.argv[2], float(sys.argv[3]))))
        return
    path, sizes = sys.argv[1], sys.argv[2:]
    for megapixels in sizes:
        out = subprocess.run([sys.executable, __file__, "--one", path, megapixels], capture_output=True, text=True)
        print(out.stdout.strip() or out.stderr.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
