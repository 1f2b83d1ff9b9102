"""Image requests (uploads, ICI classification) take turns: at most KARYO_UPLOAD_CONCURRENCY at
once per API process, the rest wait, and one that waits too long is a 503 to retry."""

from __future__ import annotations

import threading
import time

import pytest

from api.admission import image_request_slot
from api.errors import Unavailable
from infra.settings import Settings

pytestmark = pytest.mark.unit


def _most_at_once(settings: Settings, requests: int) -> int:
    inside = most = 0
    lock = threading.Lock()

    def request() -> None:
        nonlocal inside, most
        with image_request_slot(settings):
            with lock:
                inside += 1
                most = max(most, inside)
            time.sleep(0.05)
            with lock:
                inside -= 1

    threads = [threading.Thread(target=request) for _ in range(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return most


@pytest.mark.parametrize("concurrency", [1, 3])
def test_no_more_image_requests_at_once_than_the_setting(concurrency: int) -> None:
    assert _most_at_once(Settings(upload_concurrency=concurrency), requests=6) == concurrency


def test_a_request_that_waits_too_long_for_its_turn_is_a_503() -> None:
    settings = Settings(upload_concurrency=1, upload_wait_s=0.1)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with image_request_slot(settings):
            holding.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(5)
    try:
        with pytest.raises(Unavailable, match="too many image uploads at once"):
            with image_request_slot(settings):
                pass
    finally:
        release.set()
        holder.join()
    with image_request_slot(settings):  # the slot was given back
        pass


def test_the_setting_must_allow_one_request() -> None:
    with pytest.raises(ValueError):
        Settings(upload_concurrency=0)
