"""The API's object store: one client per process, storage errors as HTTP answers."""

from __future__ import annotations

import logging
from functools import lru_cache

from fastapi import HTTPException
from minio.error import S3Error

from api.errors import Unavailable
from infra.settings import get_settings
from infra.storage import ObjectStore

log = logging.getLogger("karyoflow.api")


@lru_cache
def _store() -> ObjectStore:
    store = ObjectStore(get_settings())
    store.ensure_bucket()
    return store


def get_store() -> ObjectStore:
    try:
        return _store()
    except Exception as error:  # S3 down at first use: say so, and try again next request
        raise Unavailable("object storage unavailable; try again shortly") from error


def read_object(key: str) -> bytes:
    """A stored object; storage down is a 503 the client can retry, not a 500."""
    store = get_store()
    try:
        return store.get(key)
    except Exception as error:  # S3 errors, connection refused, timeouts
        if isinstance(error, S3Error) and error.code == "NoSuchKey":  # retrying will not help
            log.error("object %s missing from storage", key)
            raise HTTPException(404, "the stored object is missing (reported to the service's log)") from error
        raise Unavailable("object storage unavailable; try again shortly") from error
