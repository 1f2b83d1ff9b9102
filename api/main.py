"""FastAPI application: `uvicorn api.main:app`."""

from __future__ import annotations

from fastapi import FastAPI

from api.routers import cases, health, icis

app = FastAPI(title="Karyoflow", version="0.1.0")
app.include_router(health.router)
app.include_router(icis.router)
app.include_router(cases.router)
