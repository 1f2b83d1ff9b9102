"""Synchronous classification of one cell's uploaded ICIs, in the API process (already cut out
and straightened by the lab; whole MCIs go through /v1/cases and the workers). Needs a clinic's
API key like every other /v1 route: it spends CPU/GPU time."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, UploadFile

from api.auth import current_clinic
from api.deps import get_classifier
from api.schemas import CellClassification, IciClassification
from api.uploads import check_image
from infra.settings import Settings, get_settings
from karyoflow.classify.predictor import ChromosomeClassifier

router = APIRouter(prefix="/v1/icis", tags=["icis"])
MIN_ICI_SIDE = 4  # pixels; the smallest BioImLab ICIs are about 10 wide


@router.post("/classify", response_model=CellClassification)
async def classify_icis(
    files: list[UploadFile],
    settings: Annotated[Settings, Depends(get_settings)],
    classifier: Annotated[ChromosomeClassifier, Depends(get_classifier)],
    _clinic_id: Annotated[int, Depends(current_clinic)],
) -> CellClassification:
    """Classify the ICIs of one cell (send all of a cell's ICIs together: they share its scale)."""
    if len(files) > settings.max_icis_per_request:
        raise HTTPException(422, f"at most {settings.max_icis_per_request} ICIs per request")
    checked = [
        await check_image(
            f,
            max_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_image_pixels,
            min_side=MIN_ICI_SIDE,
            kind="a chromosome image",
        )
        for f in files
    ]
    images = [item.grey() for item in checked]
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
