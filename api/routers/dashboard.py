"""The throughput dashboard: `/dashboard` (HTML, refreshes itself) and `/dashboard/data` (JSON).

Behind the same API-key auth as the API: the page takes the key once (`/dashboard/login`) and
keeps it in an HttpOnly cookie; a request with `X-API-Key` works too. Case figures are the
viewer's clinic's; queues and workers are the whole service's. Chart.js is served by the API
itself (`/static/vendor`), no CDN: a lab network may be closed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Cookie, Depends, Form, Header, HTTPException
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy.orm import Session

from api.auth import SESSION_COOKIE, clinic_for_key, get_db
from api.errors import answers
from api.monitoring import case_figures, queue_depths, workers_online
from api.pages import login_html, safe_next
from infra.settings import Settings, get_settings

router = APIRouter(tags=["dashboard"])
PAGE = (Path(__file__).resolve().parents[1] / "templates" / "dashboard.html").read_text()


@answers(401)
def dashboard_clinic(
    db: Annotated[Session, Depends(get_db)],
    karyoflow_key: Annotated[str | None, Cookie()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> int:
    clinic = clinic_for_key(db, x_api_key or karyoflow_key)
    if clinic is None:
        raise HTTPException(401, "log in at /dashboard/login with your API key")
    return clinic


@router.get("/dashboard/login", response_class=HTMLResponse, include_in_schema=False)
def login_page() -> str:
    return login_html("/dashboard")


@router.post("/dashboard/login", include_in_schema=False)
def login(
    key: Annotated[str, Form()], db: Annotated[Session, Depends(get_db)], next: Annotated[str, Form()] = "/dashboard"
) -> RedirectResponse:
    """The key checked and kept in the login cookie; then on to `next` (the dashboard, or the
    case review page that asked for the login)."""
    if clinic_for_key(db, key) is None:
        raise HTTPException(401, "unknown or revoked API key")
    response = RedirectResponse(safe_next(next, "/dashboard"), status_code=303)
    response.set_cookie(SESSION_COOKIE, key, httponly=True, samesite="strict", max_age=12 * 3600)
    return response


@router.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
def dashboard(
    db: Annotated[Session, Depends(get_db)],
    settings: Annotated[Settings, Depends(get_settings)],
    karyoflow_key: Annotated[str | None, Cookie()] = None,
) -> HTMLResponse:
    if clinic_for_key(db, karyoflow_key) is None:
        return HTMLResponse(login_html("/dashboard"), status_code=401)
    return HTMLResponse(PAGE.replace("{{FLOWER_URL}}", settings.flower_url))


@router.get("/dashboard/data")
def dashboard_data(
    clinic_id: Annotated[int, Depends(dashboard_clinic)],
    db: Annotated[Session, Depends(get_db)],
    settings: Annotated[Settings, Depends(get_settings)],
) -> dict:
    figures = case_figures(db, clinic_id)
    figures["queues"] = queue_depths(settings.redis_url)
    figures["workers"] = workers_online(settings.redis_url)
    figures["flower_url"] = settings.flower_url
    return figures
