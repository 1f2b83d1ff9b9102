"""Admission of the heavy image work: a case upload's checks and storing, and the forward pass
of ICI classification.

They run at most `KARYO_UPLOAD_CONCURRENCY` at a time per API process; the others wait for a
slot, up to `KARYO_UPLOAD_WAIT_S`, then get a 503 to retry. Five uploads decoded, hashed and
stored at once share one interpreter and the machine's cores with every listing and page: on
two cores a `GET /v1/cases` then took 6-8 x its idle time. One at a time, an upload's work is
spread over a few more milliseconds and the reads keep a core (docs/service.md, "Latency during
uploads"). Their CPU work is the same in sum, done in turn: an upload may wait for the ones
admitted before it (`karyo latency` reports the uploads' own times)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from api.errors import Unavailable
from infra.settings import Settings

_slots: dict[int, threading.BoundedSemaphore] = {}
_slots_lock = threading.Lock()


def _semaphore(concurrency: int) -> threading.BoundedSemaphore:
    with _slots_lock:
        if concurrency not in _slots:
            _slots[concurrency] = threading.BoundedSemaphore(concurrency)
        return _slots[concurrency]


@contextmanager
def image_request_slot(settings: Settings) -> Iterator[None]:
    """Hold one of the process's slots for the block. Called from sync handlers (the
    threadpool): the wait blocks a thread, never the event loop."""
    slots = _semaphore(settings.upload_concurrency)
    if not slots.acquire(timeout=settings.upload_wait_s):
        raise Unavailable(f"too many image uploads at once (waited {settings.upload_wait_s:g} s); try again shortly")
    try:
        yield
    finally:
        slots.release()
