"""SQLAlchemy 2 models: the database is the source of truth for every case.

clinics (tenants) own API keys and cases; a case has images (MCIs); an analysed image has
chromosomes; every task execution leaves a task run; model versions record which weights made
a result; audit events record who created, corrected, signed, reopened and erased which case. Statuses are plain strings
(portable between PostgreSQL and SQLite).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy import false as sa_false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from db.status import CaseStatus, ImageStatus


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


class Base(DeclarativeBase):
    pass


# the case and image life cycle and its allowed moves: db.status; every change goes through db.lifecycle
CASE_STATUSES = tuple(CaseStatus)


class Clinic(Base):
    __tablename__ = "clinics"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    api_keys: Mapped[list[ApiKey]] = relationship(back_populates="clinic")


class ApiKey(Base):
    """Only a SHA-256 of the key is stored; `prefix`, its first `db.admin.KEY_PREFIX_LENGTH` (12)
    characters ("kf_" and 9 more), finds the row."""

    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    clinic_id: Mapped[int] = mapped_column(ForeignKey("clinics.id"), index=True)
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    clinic: Mapped[Clinic] = relationship(back_populates="api_keys")


class Case(Base):
    __tablename__ = "cases"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    clinic_id: Mapped[int] = mapped_column(ForeignKey("clinics.id"), index=True)
    reference: Mapped[str] = mapped_column(String(200), default="", index=True)  # patient or sample ref
    # the banding of the case's images as the lab gave it: q (Q-band), g (G-band) or auto
    # (detected per image from its background); each image records the stain it was analysed as
    stain: Mapped[str] = mapped_column(String(4), default="auto")
    status: Mapped[str] = mapped_column(String(20), default=CaseStatus.RECEIVED.value, index=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    karyotype: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    abnormal: Mapped[bool | None] = mapped_column(Boolean, nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    stage_started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    enqueue_count: Mapped[int] = mapped_column(Integer, default=0)
    # the consensus of the analysed images (karyoflow.consensus): why a person must look first
    needs_review: Mapped[bool | None] = mapped_column(Boolean, nullable=True, index=True)
    review_reasons: Mapped[list | None] = mapped_column(JSON, nullable=True)
    cells_analysed: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # review: unreviewed (as the machine left it) -> in_review (corrected) -> signed (locked);
    # an explicit reopen turns a signed case back to in_review
    review_status: Mapped[str] = mapped_column(String(20), default="unreviewed", server_default="unreviewed")
    signed_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    signed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True, index=True)
    images: Mapped[list[CaseImage]] = relationship(back_populates="case", order_by="CaseImage.position")


class CaseImage(Base):
    __tablename__ = "images"
    __table_args__ = (UniqueConstraint("case_id", "position"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    filename: Mapped[str] = mapped_column(String(300))
    content_type: Mapped[str] = mapped_column(String(50))
    object_key: Mapped[str] = mapped_column(String(400))
    sha256: Mapped[str] = mapped_column(String(64))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default=ImageStatus.RECEIVED.value)
    stain: Mapped[str | None] = mapped_column(String(1), nullable=True)  # q or g, once segmented
    chromosome_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    karyotype: Mapped[str | None] = mapped_column(String(200), nullable=True)
    abnormal: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    report_key: Mapped[str | None] = mapped_column(String(400), nullable=True)
    karyogram_key: Mapped[str | None] = mapped_column(String(400), nullable=True)
    timings_ms: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    # review: the metaphase left out of the consensus, and its corrected call and outputs (the
    # machine's karyotype, karyogram and report above are kept as they were)
    excluded: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())
    reviewed_karyotype: Mapped[str | None] = mapped_column(String(200), nullable=True)
    reviewed_karyogram_key: Mapped[str | None] = mapped_column(String(400), nullable=True)
    reviewed_report_key: Mapped[str | None] = mapped_column(String(400), nullable=True)
    revision: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # corrections applied
    case: Mapped[Case] = relationship(back_populates="images")
    chromosomes: Mapped[list[ChromosomeRow]] = relationship(back_populates="image", order_by="ChromosomeRow.number")


class ChromosomeRow(Base):
    __tablename__ = "chromosomes"
    __table_args__ = (UniqueConstraint("image_id", "number"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(String(2))
    class_index: Mapped[int] = mapped_column(Integer)
    score: Mapped[float] = mapped_column(Float)
    detection_score: Mapped[float] = mapped_column(Float)
    bbox: Mapped[list] = mapped_column(JSON)
    ici_key: Mapped[str] = mapped_column(String(400))
    mask_key: Mapped[str] = mapped_column(String(400))
    # review (karyoflow.review): how the chromosome came to be (detected, or made by a split or
    # a merge) and the classifier's label when a reviewer changed it
    origin: Mapped[str] = mapped_column(String(10), default="detected", server_default="detected")
    machine_label: Mapped[str | None] = mapped_column(String(2), nullable=True)
    image: Mapped[CaseImage] = relationship(back_populates="chromosomes")


class TaskRun(Base):
    __tablename__ = "task_runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id"), index=True)
    image_id: Mapped[str | None] = mapped_column(ForeignKey("images.id"), nullable=True)
    stage: Mapped[str] = mapped_column(String(20), index=True)  # segment | classify | assemble
    task_id: Mapped[str] = mapped_column(String(64))
    worker: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(20))  # ok | retry | failed
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    duration_ms: Mapped[float] = mapped_column(Float)
    retries: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class AuditEvent(Base):
    """Who did what to a case, kept after the case itself is erased (so no foreign key to it):
    the clinic, the API key used, the person named (`actor`: the reviewer of a correction,
    sign-off or reopen), the action ("case.created", "case.deleted", "case.corrected",
    "case.signed", "case.reopened"), the case's id and reference, and what changed (`detail`:
    before -> after)."""

    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    clinic_id: Mapped[int] = mapped_column(ForeignKey("clinics.id"), index=True)
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"), nullable=True)
    action: Mapped[str] = mapped_column(String(40))
    case_id: Mapped[str] = mapped_column(String(36), index=True)
    reference: Mapped[str] = mapped_column(String(200), default="")
    detail: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    actor: Mapped[str | None] = mapped_column(String(200), nullable=True)  # the person named (a reviewer)


class ModelVersion(Base):
    __tablename__ = "model_versions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50))  # segmenter | classifier
    file: Mapped[str] = mapped_column(String(200))
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    architecture: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
