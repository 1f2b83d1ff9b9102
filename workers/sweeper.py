"""The sweeper: the database is the source of truth, so an unfinished image whose message is gone
is enqueued again from segmentation. Outages of the database, Redis or object storage are waited
out by the tasks' own retries (workers.retry); what is left here:

- **A lost message**, found by looking: an unfinished image with no message in Redis (none
  queued, none held by a worker; workers.inflight) for `KARYO_LOST_AFTER_S` (60 s) on end. A
  message popped by a worker at the moment Redis stopped, lost with a Redis that keeps no data,
  or never enqueued (an upload while Redis was down) is redone within about a minute, whatever
  the stage, while a case waiting its turn behind a long queue is left alone however long it
  waits.
- **A message held by a dead worker**: a held message that no live worker says it holds
  (workers.control) for `KARYO_LOST_AFTER_S` on end goes back on its queue, as Redis itself
  would put it back only after its visibility timeout (an hour): a worker killed outright, or
  its machine gone, is redone within about a minute. It is the same message, so the deliveries
  count against KARYO_MAX_REDELIVERIES.
- **A case stuck in a stage** for `KARYO_STUCK_AFTER_S` (900 s) although its messages exist and
  a live worker holds them: what the two watches above cannot see, such as a worker that answers
  but whose tasks never end, or an outage longer than the retry deadline. This limit
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
from celery import Celery

from db.lifecycle import requeue_lost, sweep_stuck, unfinished_images
from infra.settings import get_settings
from workers.inflight import InFlight, orphaned, read_in_flight, restore_held, tasks_held_by_live_workers

MAX_SWEEPS = 5
log = logging.getLogger("karyoflow.sweeper")


def enqueue_image(image_id: str) -> None:
    from workers.tasks import segment_image

    segment_image.apply_async(args=(image_id,))


class LostMessages:
    """What is missing, and since when each has been seen missing (this process's clock):
    unfinished images without a message, or held messages without a live worker. One counts as
    lost only once every look for `lost_after_s`, and at least `min_looks` of them, found it
    missing: a message is briefly nowhere while the API enqueues an upload it has just stored,
    or while a worker that has just popped it records it as held; a worker too busy to answer
    once answers the next time; a sweeper that stalled has looked only once."""

    def __init__(self, lost_after_s: float, min_looks: int = 3) -> None:
        self.lost_after_s = lost_after_s
        self.min_looks = min_looks
        self.unseen_since: dict[str, float] = {}
        self.looks: dict[str, int] = {}

    def look(self, watched: dict[str, str], present: set[str], clock: float) -> dict[str, str]:
        """Given what is watched (key -> what to act on: image id -> case id, delivery tag ->
        image id) and the keys present, those lost: key -> value."""
        missing = {key for key in watched if key not in present}
        self.unseen_since = {key: self.unseen_since.get(key, clock) for key in missing}
        self.looks = {key: self.looks.get(key, 0) + 1 for key in missing}
        return {
            key: watched[key]
            for key, since in self.unseen_since.items()
            if clock - since >= self.lost_after_s and self.looks[key] >= self.min_looks
        }

    def forget(self, keys: set[str]) -> None:
        """Acted on: watched afresh."""
        for key in keys:
            self.unseen_since.pop(key, None)
            self.looks.pop(key, None)


def sweep(now: datetime | None = None) -> list[str]:
    """Re-enqueue the cases stuck in a stage for `KARYO_STUCK_AFTER_S`; return their ids."""
    now = now or datetime.now(UTC)
    return sweep_stuck(now - timedelta(seconds=get_settings().stuck_after_s), MAX_SWEEPS, enqueue_image, now)


class Sweeper:
    """The lost-message sweep's state between rounds: one watch for images without a message,
    one for held messages without a live worker."""

    def __init__(self, lost_after_s: float, client: redis.Redis) -> None:
        self.images = LostMessages(lost_after_s)
        self.held = LostMessages(lost_after_s)
        self.client = client

    def sweep_lost(self, clock: float | None = None) -> list[str]:
        """Restore the held messages found orphaned and re-enqueue the images found lost; return
        the re-enqueued images' cases' ids. The unfinished images are read before Redis, so an
        image enqueued in between is seen with its message; an image whose task a live worker
        runs has its message too (a message lost with a Redis restart while its task ran)."""
        clock = time.monotonic() if clock is None else clock
        unfinished = unfinished_images()
        try:
            in_flight = read_in_flight(self.client)
            live = tasks_held_by_live_workers(celery_app()) if unfinished or in_flight.held else {}
        except Exception:  # noqa: BLE001 - Redis's errors, or kombu's wrapping of them
            # Redis unreadable: "on end" starts again once it answers
            self.images.forget(set(self.images.unseen_since))
            self.held.forget(set(self.held.unseen_since))
            raise
        if live is None:  # a worker that cannot say what it holds: its messages are not orphans
            self.held.forget(set(self.held.unseen_since))
            live = {}
        else:
            self.restore_orphans(in_flight, live, clock)
        in_work = in_flight.images | {image for image in live.values() if image}
        lost = self.images.look(unfinished, in_work, clock)
        if not lost:
            return []
        swept = requeue_lost(lost, MAX_SWEEPS, enqueue_image, datetime.now(UTC))
        self.images.forget(set(lost))
        return swept

    def restore_orphans(self, in_flight: InFlight, live: dict[str, str | None], clock: float) -> list[str]:
        """Put back on their queues the held messages no live worker (`live`: its tasks) has held
        for `lost_after_s`; return their delivery tags."""
        candidates = {message.tag: message.image_id or "" for message in in_flight.held}
        without_worker = orphaned(in_flight, live)
        lost = self.held.look(candidates, set(candidates) - set(without_worker), clock)
        if not lost:
            return []
        restore_held(celery_app(), lost)
        self.held.forget(set(lost))
        log.warning("put back on their queues %d message(s) held by no live worker, of image(s) %s", len(lost),
                    ", ".join(sorted({image for image in lost.values() if image})))  # fmt: skip
        return sorted(lost)


def celery_app() -> Celery:
    from workers.app import app

    return app


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
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=5)
    lost = Sweeper(settings.lost_after_s, client)
    while True:
        for name, sweeper in (("lost", lost.sweep_lost), ("stuck", sweep)):
            try:
                swept = sweeper()
                if swept:
                    log.info("re-enqueued %d case(s) (%s): %s", len(swept), name, ", ".join(swept))
            except Exception as error:  # Redis or the database down: try again next round
                log.warning("%s sweep failed: %s", name, error)
        time.sleep(args.interval)


if __name__ == "__main__":
    main()
