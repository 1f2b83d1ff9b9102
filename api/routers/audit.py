"""The clinic's audit trail: which API key created and erased which case, and when (kept after
the case itself is erased)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.auth import current_clinic, get_db
from api.fields import PRINTABLE, column_length
from api.schemas import AuditEventOut
from db.models import AuditEvent

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get("", response_model=list[AuditEventOut])
def list_audit_events(
    clinic_id: Annotated[int, Depends(current_clinic)],
    db: Annotated[Session, Depends(get_db)],
    case_id: Annotated[str | None, Query(max_length=column_length(AuditEvent.case_id), pattern=PRINTABLE)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[AuditEventOut]:
    """The clinic's audit events, newest first; `case_id` narrows them to one case."""
    query = select(AuditEvent).where(AuditEvent.clinic_id == clinic_id)
    if case_id is not None:
        query = query.where(AuditEvent.case_id == case_id)
    rows = db.scalars(query.order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(limit)).all()
    return [AuditEventOut.model_validate(row, from_attributes=True) for row in rows]
