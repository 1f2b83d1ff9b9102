"""The data of a case's report (karyoflow.case_report), read from SQL and object storage: the
printable page and the PDF show the same."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.objects import read_object
from db.models import AuditEvent, Case, CaseImage
from db.review import case_consensus, current_karyotype
from karyoflow.case_report import CaseReport, ReportMetaphase
from karyoflow.karyotype import CLINICAL_NOTE


def _models(images: list[CaseImage]) -> list[str]:
    """The weights that made the case's results, each once: file, short sha256, training stain."""
    seen: dict[str, str] = {}
    for image in images:
        if image.report_key is None:
            continue
        models = json.loads(read_object(image.report_key)).get("models", {})
        for role in ("segmenter", "classifier"):
            info = models.get(role) or {}
            if info.get("sha256"):
                stain = {"q": "Q-band", "g": "G-band"}.get(info.get("stain", ""), info.get("stain", ""))
                text = f"{role} {info.get('file', '?')} sha256 {info['sha256'][:12]} ({stain})"
                seen.setdefault(info["sha256"], text)
    return list(seen.values())


def case_report(db: Session, case: Case, with_karyograms: bool = True) -> CaseReport:
    result = case_consensus(case.images)
    corrections = db.scalar(
        select(func.count())
        .select_from(AuditEvent)
        .where(AuditEvent.case_id == case.id, AuditEvent.action == "case.corrected")
    )
    metaphases = [
        ReportMetaphase(
            position=image.position,
            filename=image.filename,
            machine_karyotype=image.karyotype,
            karyotype=current_karyotype(image),
            excluded=image.excluded,
            corrections=image.revision,
            karyogram_png=read_object(image.reviewed_karyogram_key or image.karyogram_key)
            if with_karyograms and (image.reviewed_karyogram_key or image.karyogram_key)
            else None,
        )
        for image in case.images
    ]
    return CaseReport(
        case_id=case.id,
        reference=case.reference,
        karyotype=result.karyotype if result else None,
        cells_analysed=result.cells if result else 0,
        cell_lines=result.cell_lines if result else [],
        non_clonal=[f"{c['change']} in metaphase {int(c['cell']) + 1}" for c in (result.non_clonal if result else [])],
        reasons=result.reasons if result else ["no metaphase analysed"],
        metaphases=metaphases,
        models=_models(case.images),
        signed_by=case.signed_by if case.review_status == "signed" else None,
        signed_at=case.signed_at if case.review_status == "signed" else None,
        generated_at=datetime.now(UTC),
        corrections=corrections or 0,
        notes=[CLINICAL_NOTE] if case.review_status != "signed" else [],
    )
