"""FastAPI application: `uvicorn api.main:app`."""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from api.readiness import describe_error
from api.routers import (
    audit,
    case_pages,
    case_reports,
    cases,
    dashboard,
    health,
    icis,
    metrics,
    review,
    reviewed_metaphases,
)

log = logging.getLogger("karyoflow.api")
app = FastAPI(title="Karyoflow", version="0.1.0")
app.include_router(health.router)
app.include_router(icis.router)
app.include_router(cases.router)
app.include_router(review.router)
app.include_router(case_reports.router)
app.include_router(reviewed_metaphases.router)
app.include_router(audit.router)
app.include_router(dashboard.router)
app.include_router(case_pages.router)
app.include_router(metrics.router)
app.mount("/static", StaticFiles(directory=Path(__file__).with_name("static")), name="static")


@app.exception_handler(OperationalError)  # server gone, connection refused, deadlock, ...
@app.exception_handler(InterfaceError)  # a connection closed under us
@app.exception_handler(PoolTimeout)  # every pooled connection busy
async def database_unavailable(_request: Request, error: Exception) -> JSONResponse:
    """The database is down, unreachable or overloaded: a 503 the client can retry, not a 500.
    The driver's message (hosts, users) goes to the log, not to the client."""
    log.error("database unavailable: %s", describe_error(getattr(error, "orig", None) or error))
    return JSONResponse({"detail": "database unavailable; try again shortly"}, status_code=503)
