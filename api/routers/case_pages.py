"""The review pages: `/cases` (the clinic's cases with their consensus, review status and
filters), `/cases/{id}` (each metaphase with its chromosomes' outlines and labels, its
karyogram, corrections, exclusion, sign-off and the audit trail) and `/cases/{id}/report` (the
printable report). Same login as the dashboard (the clinic's key in an HttpOnly cookie); the
case page works through the review API (`/v1/cases/{id}/review`, `.../corrections`, ...)."""

from __future__ import annotations

import html
from typing import Annotated

from fastapi import APIRouter, Cookie, Depends, Query
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.auth import SESSION_COOKIE, caller_for_key, get_db, own_case
from api.case_report import case_report
from api.pages import fill, login_html
from db.models import Case
from db.review import REVIEW_STATUSES
from karyoflow.case_report import NOT_REVIEWED

router = APIRouter(tags=["review pages"], include_in_schema=False)
LIST_LIMIT = 200
Key = Annotated[str | None, Cookie(alias=SESSION_COOKIE)]


def _logged_in_clinic(db: Session, key: str | None) -> int | None:
    caller = caller_for_key(db, key)
    return caller.clinic_id if caller is not None else None


def _login(next_path: str) -> HTMLResponse:
    return HTMLResponse(login_html(next_path), status_code=401)


@router.get("/cases/login", response_class=HTMLResponse)
def cases_login() -> str:
    return login_html("/cases")


def _row(case: Case) -> str:
    e = html.escape
    needs = (
        ""
        if case.needs_review is None
        else ("yes: " + "; ".join(case.review_reasons or []) if case.needs_review else "no")
    )
    signed = f"{case.review_status} ({case.signed_by})" if case.review_status == "signed" else case.review_status
    return (
        f'<tr data-case="{e(case.id)}"><td><a href="/cases/{e(case.id)}">{e(case.reference or case.id[:8])}</a></td>'
        f"<td>{case.created_at:%Y-%m-%d %H:%M}</td><td>{e(case.status)}</td>"
        f"<td class='iscn'>{e(case.karyotype or '-')}</td>"
        f"<td>{case.cells_analysed if case.cells_analysed is not None else '-'}</td>"
        f"<td class='needs'>{e(needs)}</td><td class='review-{e(case.review_status)}'>{e(signed)}</td></tr>"
    )


@router.get("/cases", response_class=HTMLResponse)
def cases_page(
    db: Annotated[Session, Depends(get_db)],
    karyoflow_key: Key = None,
    status: str | None = None,
    review: str | None = None,
    needs_review: str | None = None,
    reference: str | None = None,
    abnormal: str | None = None,
) -> HTMLResponse:
    """The clinic's cases, newest first, filtered by status, review status, needs review,
    abnormal and reference (each left empty: any)."""
    clinic_id = _logged_in_clinic(db, karyoflow_key)
    if clinic_id is None:
        return _login("/cases")
    query = select(Case).where(Case.clinic_id == clinic_id)
    if status:
        query = query.where(Case.status == status)
    if review in REVIEW_STATUSES:
        query = query.where(Case.review_status == review)
    if needs_review in ("yes", "no"):
        query = query.where(Case.needs_review.is_(needs_review == "yes"))
    if abnormal in ("yes", "no"):
        query = query.where(Case.abnormal.is_(abnormal == "yes"))
    if reference:
        query = query.where(Case.reference.contains(reference))
    cases = db.scalars(query.order_by(Case.created_at.desc(), Case.id.desc()).limit(LIST_LIMIT)).all()
    rows = "".join(_row(case) for case in cases) or '<tr><td colspan="7">no case matches</td></tr>'
    page = fill(
        "cases.html",
        STATUS=status or "",
        REVIEW=review or "",
        NEEDS=needs_review or "",
        ABNORMAL=abnormal or "",
        REFERENCE=reference or "",
    )
    return HTMLResponse(page.replace("<!--ROWS-->", rows))


@router.get("/cases/{case_id}", response_class=HTMLResponse)
def case_page(case_id: str, db: Annotated[Session, Depends(get_db)], karyoflow_key: Key = None) -> HTMLResponse:
    clinic_id = _logged_in_clinic(db, karyoflow_key)
    if clinic_id is None:
        return _login(f"/cases/{case_id}")
    case = own_case(db, clinic_id, case_id)
    return HTMLResponse(fill("case.html", CASE_ID=case.id, REFERENCE=case.reference or case.id[:8]))


@router.get("/cases/{case_id}/report", response_class=HTMLResponse)
def report_page(
    case_id: str,
    db: Annotated[Session, Depends(get_db)],
    karyoflow_key: Key = None,
    print_dialog: Annotated[bool, Query(alias="print")] = False,
) -> HTMLResponse:
    """The printable report: the same content as the PDF (`/v1/cases/{id}/report.pdf`)."""
    clinic_id = _logged_in_clinic(db, karyoflow_key)
    if clinic_id is None:
        return _login(f"/cases/{case_id}/report")
    case = own_case(db, clinic_id, case_id)
    report = case_report(db, case, with_karyograms=False)
    e = html.escape
    metaphases = "".join(
        f"<section class='metaphase'><h3>Metaphase {m.position + 1}: {e(m.filename)} - "
        f"{'excluded from the consensus' if m.excluded else 'analysed'} - {e(m.karyotype or '-')}"
        + (f" <small>(reviewed; automated call {e(m.machine_karyotype or '-')})</small>" if m.corrections else "")
        + f"</h3><img alt='karyogram of metaphase {m.position + 1}' "
        f"src='/v1/cases/{e(case.id)}/images/{m.position}/karyogram?rev={m.corrections}'></section>"
        for m in report.metaphases
    )
    page = fill(
        "case_report.html",
        CASE_ID=case.id,
        REFERENCE=report.reference or "-",
        KARYOTYPE=report.karyotype or "none: no metaphase analysed",
        CELLS=f"{report.cells_analysed} of {len(report.metaphases)} metaphases",
        LINES=", ".join(f"{iscn} in {n}" for iscn, n in report.cell_lines) if len(report.cell_lines) > 1 else "-",
        NON_CLONAL=", ".join(report.non_clonal) or "none",
        REASONS="; ".join(report.reasons) or "none",
        CORRECTIONS=str(report.corrections),
        SIGNED=report.sign_off_line,
        SIGNED_CLASS="signed" if report.signed else "unsigned",
        MODELS="; ".join(report.models) or "-",
        GENERATED=f"{report.generated_at:%Y-%m-%d %H:%M} UTC",
        NOTE=" ".join(report.notes),
        BANNER="" if report.signed else NOT_REVIEWED,
        PRINT="1" if print_dialog else "",
    )
    return HTMLResponse(page.replace("<!--METAPHASES-->", metaphases))
