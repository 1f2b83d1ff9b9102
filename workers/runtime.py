"""Per-process state of a worker: the models, the object store. Created lazily, once per process
(in the child after the fork: see workers.app)."""

from __future__ import annotations

from functools import lru_cache

from karyoflow.pipeline import Karyotyper
from service.settings import get_settings
from service.storage import ObjectStore


@lru_cache
def get_karyotyper() -> Karyotyper:
    settings = get_settings()
    return Karyotyper(settings.segmenter_weights, settings.classifier_weights, device=settings.device)


@lru_cache
def get_store() -> ObjectStore:
    store = ObjectStore(get_settings())
    store.ensure_bucket()
    return store
