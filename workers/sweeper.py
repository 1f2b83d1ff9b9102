"""The sweeper: the database is the source of truth, so an unfinished image whose message is gone
is enqueued again from segmentation. Outages of the database, Redis or object storage are waited
out by the tasks' own retries (workers.retry); what is left here:

- **A lost message**, found by looking: an unfinished image with no message in Redis (none
  queued, none held by a worker; workers.inflight) for `KARYO_LOST_AFTER_S` (60 s) on end. A
  message popped by a worker at the moment Redis stopped, lost with a Redis that keeps no data,
  or never enqueued (an upload while Redis was down) is redone within about a minute, whatever
  the stage, while a case waiting its turn behind a long queue is left alone however long it
  waits.
- **A case stuck in a stage** for `KARYO_STUCK_AFTER_S` (900 s) although its messages exist: a
  worker gone for good with its messages, an outage longer than the retry deadline. This limit
  must exceed a task's retry deadline plus its time limit, or a case still retrying is enqueued
  twice.

Tasks are idempotent, so an image enqueued again that was not really lost only costs repeated
work. After `MAX_SWEEPS` attempts the case fails with the reason.

    python -m workers.sweeper [--interval 15]
"""

from __future__ import annotations

import argparse
import logging
import time
from datetime import UTC, datetime, timedelta

import redis

from db.lifecycle import requeue_lost, sweep_stuck, unfinished_images
from infra.settings import get_settings
from workers.inflight import images_with_messages

MAX_SWEEPS = 5
log = logging.getLogger("karyoflow.sweeper")


def enqueue_image(image_id: str) -> None:
    from workers.tasks import segment_image

    segment_image.apply_async(args=(image_id,))


class LostMessages:
    """Unfinished images without a message, and since when each has been seen without one (this
    process's clock). An image counts as lost only after `lost_after_s` of every look finding
    it without a message: a message is briefly nowhere while the API enqueues an upload it has
    just stored, or while a worker that has just popped it records it as held."""

    def __init__(self, lost_after_s: float) -> None:
        self.lost_after_s = lost_after_s
        self.unseen_since: dict[str, float] = {}

    def look(self, unfinished: dict[str, str], with_messages: set[str], clock: float) -> dict[str, str]:
        """Given the unfinished images (image id -> case id) and the images with a message,
        the images lost: image id -> case id."""
        without = {image_id for image_id in unfinished if image_id not in with_messages}
        self.unseen_since = {image_id: self.unseen_since.get(image_id, clock) for image_id in without}
        return {
            image_id: unfinished[image_id]
            for image_id, since in self.unseen_since.items()
            if clock - since >= self.lost_after_s
        }

    def forget(self, image_ids: set[str]) -> None:
        """Enqueued again: watched afresh."""
        for image_id in image_ids:
            self.unseen_since.pop(image_id, None)


def sweep(now: datetime | None = None) -> list[str]:
    """Re-enqueue the cases stuck in a stage for `KARYO_STUCK_AFTER_S`; return their ids."""
    now = now or datetime.now(UTC)
    return sweep_stuck(now - timedelta(seconds=get_settings().stuck_after_s), MAX_SWEEPS, enqueue_image, now)


def sweep_lost(watch: LostMessages, client: redis.Redis, clock: float | None = None) -> list[str]:
    """Re-enqueue the images `watch` finds lost; return their cases' ids. The unfinished images
    are read before Redis, so an image enqueued in between is seen with its message."""
    unfinished = unfinished_images()
    try:
        with_messages = images_with_messages(client)
    except redis.RedisError:
        watch.forget(set(watch.unseen_since))  # "on end" starts again once Redis answers
        raise
    lost = watch.look(unfinished, with_messages, time.monotonic() if clock is None else clock)
    if not lost:
        return []
    swept = requeue_lost(lost, MAX_SWEEPS, enqueue_image, datetime.now(UTC))
    watch.forget(set(lost))
    return swept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interval", type=float, default=15.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s sweeper %(message)s")
    settings = get_settings()
    floor = settings.retry_deadline_s + settings.task_soft_time_limit_s + 60  # + the hard limit's margin
    if settings.stuck_after_s < floor:
        log.warning(
            "KARYO_STUCK_AFTER_S=%d s is below a task's retry deadline plus its time limit (%d s): "
            "cases whose tasks are still retrying may be enqueued again",
            settings.stuck_after_s,
            floor,
        )
    watch = LostMessages(settings.lost_after_s)
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=5)
    while True:
        for name, sweeper in (("lost", lambda: sweep_lost(watch, client)), ("stuck", sweep)):
            try:
                swept = sweeper()
                if swept:
                    log.info("re-enqueued %d case(s) (%s): %s", len(swept), name, ", ".join(swept))
            except Exception as error:  # Redis or the database down: try again next round
                log.warning("%s sweep failed: %s", name, error)
        time.sleep(args.interval)


if __name__ == "__main__":
    main()
