"""Synchronous classification of uploaded ICIs, in process. The asynchronous MCI pipeline
(upload -> queue -> workers) arrives with the service issue."""

from __future__ import annotations

import io
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, UploadFile
from PIL import Image, UnidentifiedImageError

from api.deps import get_classifier
from api.schemas import CellClassification, IciClassification
from api.settings import Settings, get_settings
from karyoflow.classify.predictor import ChromosomeClassifier

router = APIRouter(prefix="/v1/icis", tags=["icis"])


async def _read_grey(upload: UploadFile, limit: int) -> np.ndarray:
    raw = await upload.read(limit + 1)
    if len(raw) > limit:
        raise HTTPException(413, f"{upload.filename}: larger than {limit} bytes")
    try:
        with Image.open(io.BytesIO(raw)) as image:
            grey = np.asarray(image.convert("L"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as error:
        raise HTTPException(422, f"{upload.filename}: not a readable image ({error})") from error
    if min(grey.shape) < 4:
        raise HTTPException(422, f"{upload.filename}: image too small ({grey.shape[1]}x{grey.shape[0]})")
    if not (grey > 8).any():
        raise HTTPException(422, f"{upload.filename}: no chromosome (image is empty/black)")
    return grey


@router.post("/classify", response_model=CellClassification)
async def classify_icis(
    files: list[UploadFile],
    settings: Annotated[Settings, Depends(get_settings)],
    classifier: Annotated[ChromosomeClassifier, Depends(get_classifier)],
) -> CellClassification:
    """Classify the ICIs of one cell (send all of a cell's ICIs together: they share its scale)."""
    if len(files) > settings.max_icis_per_request:
        raise HTTPException(422, f"at most {settings.max_icis_per_request} ICIs per request")
    images = [await _read_grey(f, settings.max_upload_bytes) for f in files]
    predictions = classifier.classify_cell(images)
    return CellClassification(
        n=len(predictions),
        icis=[
            IciClassification(
                filename=f.filename or "",
                label=p.label,
                class_index=p.class_index,
                score=p.score,
                top3=p.top3,
                angle=p.angle,
            )
            for f, p in zip(files, predictions, strict=True)
        ],
    )
