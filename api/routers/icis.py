"""Synchronous karyotyping of one cell given as its cut-out chromosome images (ICIs), in the API
process: how many labs export a metaphase from their current software. Whole MCIs go through
/v1/cases and the workers. Needs a clinic's API key like every other /v1 route: it spends
CPU/GPU time."""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Depends, Form, HTTPException, UploadFile

from api.admission import image_request_slot
from api.auth import current_clinic
from api.deps import get_classifier
from api.errors import invalid_field
from api.schemas import CellClassification, IciClassification
from api.uploads import check_image, read_upload
from infra.settings import Settings, get_settings
from karyoflow.classify.weights import WeightsError
from karyoflow.ici_cell import karyotype_icis
from karyoflow.labels import LABEL_TO_INDEX
from karyoflow.pipeline import KaryotypeResult
from karyoflow.stain import STAIN_NAMES, resolve_stain

router = APIRouter(prefix="/v1/icis", tags=["icis"])
StainForm = Literal["q", "g", "auto"]
MIN_ICI_SIDE = 4  # pixels; the smallest BioImLab ICIs are about 10 wide


def _karyotype_cell(images: list[np.ndarray], names: list[str], stain_choice: str) -> KaryotypeResult:
    """The cell's karyotype from its ICIs (blocking: torch)."""
    stain = resolve_stain(stain_choice, images)
    try:
        classifier = get_classifier(stain)
    except WeightsError as error:
        raise HTTPException(422, f"no {STAIN_NAMES[stain]} classifier is installed on this server") from error
    try:
        return karyotype_icis(classifier, images, names, stain)
    except ValueError as error:  # the configured weights were trained on another stain
        raise HTTPException(422, str(error)) from error


@router.post("/classify", response_model=CellClassification, responses={413: {}, 415: {}, 422: {}})
def classify_icis(
    files: list[UploadFile],
    settings: Annotated[Settings, Depends(get_settings)],
    _clinic_id: Annotated[int, Depends(current_clinic)],
    stain: Annotated[StainForm, Form(description="q, g or auto (a bright background means G)")] = "auto",
) -> CellClassification:
    """Classify the ICIs of one cell and call its karyotype (send all of a cell's ICIs together:
    they share its scale, and the karyotype assignment needs the whole cell). A sync handler:
    the decoding and the forward pass run in the threadpool, not on the event loop; the forward
    pass takes its turn with the uploads (api.admission)."""
    if len(files) > settings.max_icis_per_request:
        raise invalid_field(("body", "files"), f"at most {settings.max_icis_per_request} ICIs per request")
    checked = [
        check_image(
            read_upload(f, position, max_bytes=settings.max_upload_bytes),
            max_pixels=settings.max_image_pixels,
            min_side=MIN_ICI_SIDE,
            kind="a chromosome image",
        )
        for position, f in enumerate(files)
    ]
    names = [f.filename or "" for f in files]
    with image_request_slot(settings):
        result = _karyotype_cell([item.grey() for item in checked], names, stain)
    return CellClassification(
        n=len(result.chromosomes),
        stain=result.stain,
        karyotype=result.karyotype.iscn,
        abnormal=result.karyotype.abnormal,
        icis=[
            IciClassification(
                filename=c.source,
                label=c.argmax_label,
                class_index=LABEL_TO_INDEX[c.argmax_label] + 1,
                score=c.top3[0][1],  # the classifier's own first choice, as `label`
                top3=c.top3,
                angle=c.angle,
                assigned_label=c.label,
            )
            for c in result.chromosomes
        ],
    )
