from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from api.deps import get_classifier
from api.readiness import OK, check_dependencies
from api.schemas import Health, Readiness
from infra.settings import Settings, get_settings

router = APIRouter(tags=["health"])
log = logging.getLogger("karyoflow.api")


@router.get("/health", response_model=Health)
def health() -> Health:
    """Liveness: the process answers. Independent of the dependencies (a restart of the API
    would not bring a database or Redis back)."""
    return Health(status="ok", classifier_loaded=get_classifier.cache_info().currsize > 0)


@router.get("/health/ready", response_model=Readiness, responses={503: {"model": Readiness}})
def ready(settings: Annotated[Settings, Depends(get_settings)]) -> JSONResponse:
    """Readiness: the database (reachable, migrated), Redis and the object storage (reachable with
    the credentials), each "ok" or "unavailable" (the reason is logged); 503 when any is not."""
    checks = check_dependencies(settings)
    all_ok = all(result == OK for result in checks.values())
    for name, reason in checks.items():
        if reason != OK:
            log.warning("not ready: %s: %s", name, reason)
    # no key is needed here, so the reasons (hosts, users, driver messages) stay in the log
    public = {name: OK if reason == OK else "unavailable" for name, reason in checks.items()}
    body = Readiness(status="ok" if all_ok else "unavailable", checks=public)
    return JSONResponse(body.model_dump(), status_code=200 if all_ok else 503)
