"""FastAPI application: `uvicorn api.main:app`."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import OperationalError

from api.routers import cases, dashboard, health, icis, metrics

app = FastAPI(title="Karyoflow", version="0.1.0")
app.include_router(health.router)
app.include_router(icis.router)
app.include_router(cases.router)
app.include_router(dashboard.router)
app.include_router(metrics.router)
app.mount("/static", StaticFiles(directory=Path(__file__).with_name("static")), name="static")


@app.exception_handler(OperationalError)
async def database_unavailable(_request: Request, error: OperationalError) -> JSONResponse:
    """The database is down or unreachable: a 503 the client can retry, with the driver's reason
    (its first line; the rest is SQL and links), not a 500."""
    lines = str(error.orig or error).strip().splitlines()
    return JSONResponse({"detail": f"database unavailable: {lines[0] if lines else 'unreachable'}"}, status_code=503)
