"""Pydantic response schemas (kept apart from any ORM model)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class FieldError(BaseModel):
    loc: list[str | int]  # where: ["query", "reference"], ["body", "files", 0, "filename"], ...
    msg: str
    type: str


class ErrorBody(BaseModel):
    """Every error the API answers (4xx and 5xx) has this shape."""

    detail: str  # what went wrong, for a person; never SQL, hosts or keys
    request_id: str  # also the X-Request-ID header; the service's log has the details under it
    errors: list[FieldError] = []  # 422: each field that was refused


class Health(BaseModel):
    status: str
    classifier_loaded: bool


class Readiness(BaseModel):
    status: str  # "ok" or "unavailable"
    checks: dict[str, str]  # dependency -> "ok" or "unavailable" (the reason is in the API's log)


class IciClassification(BaseModel):
    filename: str
    label: str
    class_index: int
    score: float
    top3: list[tuple[str, float]]
    angle: float
    assigned_label: str  # the class the cell's karyotype assignment gives it


class CellClassification(BaseModel):
    n: int
    stain: str  # q or g: what the cell was classified as
    karyotype: str  # ISCN of the cell from the karyotype assignment over its ICIs
    abnormal: bool
    icis: list[IciClassification]


class ChromosomeOut(BaseModel):
    number: int
    label: str
    class_index: int
    score: float
    bbox: list[int]


class ImageOut(BaseModel):
    position: int
    filename: str
    status: str
    width: int
    height: int
    sha256: str
    stain: str | None = None  # q or g: the banding the image was analysed as
    chromosome_count: int | None = None
    karyotype: str | None = None
    abnormal: bool | None = None
    chromosomes: list[ChromosomeOut] = []


class CaseSummary(BaseModel):
    id: str
    reference: str
    stain: str  # q, g or auto, as given at upload
    status: str
    karyotype: str | None = None
    abnormal: bool | None = None
    error: str | None = None
    created_at: datetime
    finished_at: datetime | None = None
    # the consensus's figures and the review (GET /v1/cases/{id}/review has the details)
    cells_analysed: int | None = None
    needs_review: bool | None = None
    review_status: str = "unreviewed"  # unreviewed | in_review | signed
    signed_by: str | None = None
    signed_at: datetime | None = None


class CaseOut(CaseSummary):
    images: list[ImageOut]


class CaseCreated(BaseModel):
    id: str
    status: str
    images: int


class CasePage(BaseModel):
    items: list[CaseSummary]
    next_cursor: str | None = None


class AuditEventOut(BaseModel):
    at: datetime
    action: str  # case.created | case.deleted | case.corrected | case.signed | case.reopened
    case_id: str
    reference: str
    api_key_id: int | None  # the api_keys row of the key used (only its hash is stored)
    detail: dict | None = None
    actor: str | None = None  # the person named (the reviewer of a correction, sign-off or reopen)
