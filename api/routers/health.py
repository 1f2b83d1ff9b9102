from __future__ import annotations

from fastapi import APIRouter

from api.deps import get_classifier
from api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
def health() -> Health:
    return Health(status="ok", classifier_loaded=get_classifier.cache_info().currsize > 0)
