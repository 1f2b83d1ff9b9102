"""Request and response schemas of a case's review (kept apart from the ORM models)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from api.schemas import AuditEventOut

Reviewer = Field(min_length=1, max_length=200, description="the person who reviews (written to the audit trail)")


class CorrectionIn(BaseModel):
    """One correction of one metaphase (image) of the case.

    - relabel: `chromosome`, `label`
    - delete (a false detection): `chromosome`
    - split (one detection is two chromosomes): `chromosome`, `labels` (two)
    - merge (two detections are one chromosome): `chromosomes` (two), `label`
    - exclude / include: the whole metaphase left out of (or back into) the consensus
    """

    reviewer: str = Reviewer
    image: int = Field(ge=0, description="the metaphase's position in the case")
    action: Literal["relabel", "delete", "split", "merge", "exclude", "include"]
    chromosome: int | None = Field(default=None, ge=1)
    chromosomes: list[int] | None = None
    label: str | None = None
    labels: list[str] | None = None


class SignOffIn(BaseModel):
    reviewer: str = Reviewer


class ReopenIn(BaseModel):
    reviewer: str = Reviewer
    reason: str = Field(min_length=1, max_length=1000, description="why a signed case is opened again")


class ReviewChromosomeOut(BaseModel):
    number: int
    label: str
    score: float | None  # the classifier's probability of the label; None for a label only the reviewer gave
    bbox: list[int] | None
    origin: str  # detected | split | merged
    machine_label: str | None = None  # the classifier's label, when the reviewer changed it
    outline: list[list[int]] = []  # polygon (x, y) in the metaphase's pixels


class ReviewImageOut(BaseModel):
    position: int
    filename: str
    status: str
    width: int
    height: int
    stain: str | None = None
    excluded: bool
    machine_karyotype: str | None  # the automated call, kept
    karyotype: str | None  # the call as it stands (the reviewer's where corrected)
    revision: int  # corrections applied to this metaphase
    chromosomes: list[ReviewChromosomeOut]


class ConsensusOut(BaseModel):
    karyotype: str
    cells: int  # metaphases analysed (excluded ones left out)
    cell_lines: list[tuple[str, int]]
    clonal_changes: list[str]
    non_clonal: list[dict[str, str]]
    needs_review: bool
    reasons: list[str]


class ReviewOut(BaseModel):
    case_id: str
    reference: str
    status: str
    review_status: str  # unreviewed | in_review | signed
    signed_by: str | None = None
    signed_at: datetime | None = None
    consensus: ConsensusOut | None  # None while no metaphase is analysed
    images: list[ReviewImageOut]
    audit: list[AuditEventOut]  # the case's events, newest first


class ReviewedMetaphaseOut(BaseModel):
    """A metaphase of a signed case, as training data: its chromosomes' outlines and labels."""

    case_id: str
    reference: str
    position: int
    filename: str
    width: int
    height: int
    stain: str | None
    karyotype: str
    signed_by: str
    signed_at: datetime
    chromosomes: list[ReviewChromosomeOut]
