"""The JSON report of one analysed MCI (documented in docs/report.md, schema in
karyoflow/schemas/report.schema.json) and writing a result's files atomically."""

from __future__ import annotations

import dataclasses
import io
import json
import math
from functools import cache

import jsonschema
from pycocotools import mask as mask_utils

from karyoflow.files import write_atomically
from karyoflow.karyogram import render_karyogram
from karyoflow.karyotype import CLINICAL_NOTE
from karyoflow.pipeline import KaryotypeResult
from karyoflow.resources import report_schema_path

__all__ = ["build_report", "render_outputs", "validate_report", "write_atomically"]


@cache
def report_schema() -> dict:
    return json.loads(report_schema_path().read_text())


def validate_report(report: dict) -> None:
    """Raise jsonschema.ValidationError when `report` does not follow the documented schema."""
    jsonschema.validate(report, report_schema())


def mask_rle(mask) -> dict:
    import numpy as np

    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode("ascii")}


def _chromosome_entry(c) -> dict:
    entry = {
        "id": c.id,
        "label": c.label,
        "class_index": c.class_index,
        "score": round(c.score, 4),
        "top3": [[label, round(p, 4)] for label, p in c.top3],
        "argmax_label": c.argmax_label,
        "detection_score": round(c.detection_score, 4),
        "low_confidence": c.low_confidence,
        "angle": round(c.angle, 2),
    }
    if c.bbox is not None and c.mask is not None:
        entry["bbox"] = list(c.bbox)
        entry["mask"] = mask_rle(c.mask)
    if c.source:
        entry["file"] = c.source
    return entry


def build_report(result: KaryotypeResult) -> dict:
    report = {
        "schema_version": 1,
        "image": result.image_name,
        "source": result.source,
        "stain": result.stain,
        "width": result.width,
        "height": result.height,
        "karyotype": result.karyotype.iscn,
        "note": CLINICAL_NOTE,
        "chromosome_count": len(result.chromosomes),
        "abnormalities": result.karyotype.abnormalities,
        "call": {
            "karyotype": result.karyotype.iscn,
            "confidence": round(result.confidence, 4),
            "margin_nats": None if math.isinf(result.margin_nats) else round(result.margin_nats, 3),
            "rival": result.rival,
            "review": [{k: v for k, v in dataclasses.asdict(item).items() if v is not None} for item in result.review],
        },
        "chromosomes": [_chromosome_entry(c) for c in result.chromosomes],
        "timings_ms": result.timings_ms,
        "models": result.models,
    }
    if result.source == "icis":  # a cell given as its ICIs has no metaphase image to measure
        del report["width"], report["height"]
    return report


def karyogram_image(result: KaryotypeResult):
    return render_karyogram(
        [(c.label, c.straightened, c.low_confidence) for c in result.chromosomes],
        title=result.image_name,
        karyotype=result.karyotype.iscn,
        count=len(result.chromosomes),
        stain=result.stain,
    )


def karyogram_png(result: KaryotypeResult) -> bytes:
    buffer = io.BytesIO()
    karyogram_image(result).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def render_outputs(result: KaryotypeResult) -> tuple[dict, bytes]:
    """The report and the karyogram PNG; drawing the karyogram is timed as part of `assemble`."""
    import time

    started = time.perf_counter()
    png = karyogram_png(result)
    drawn_ms = (time.perf_counter() - started) * 1000
    result.timings_ms["assemble"] = round(result.timings_ms.get("assemble", 0.0) + drawn_ms, 1)
    return build_report(result), png
