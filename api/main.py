"""FastAPI application: `uvicorn api.main:app`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from api.errors import install_error_handling
from api.intake import pool as intake_pool
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
from infra.settings import get_settings


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    """The intake processes start with the API (their imports take seconds) and stop with it."""
    intake_pool.start(get_settings().intake_processes)
    yield
    intake_pool.shutdown()


app = FastAPI(title="Karyoflow", version="0.1.0", lifespan=lifespan)
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
# one error shape, the request id, and every route's errors in the OpenAPI document (api/errors.py)
install_error_handling(app)
