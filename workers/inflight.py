"""Which images have a message in Redis: waiting in a queue, or delivered to a worker and not
yet acknowledged (tasks are acknowledged late, so kombu's Redis transport keeps every message a
worker holds, running or waiting for its retry countdown, in its `unacked` hash until the task
has run). An unfinished image with neither has lost its message: popped by a worker at the
moment Redis stopped (kombu pops a message before it records it as unacknowledged), gone with a
Redis that keeps no data, or never enqueued (an upload while Redis was down). The sweeper
(workers.sweeper) enqueues such an image again soon, instead of after the stuck-case limit.

A held message whose worker died with it (the whole worker killed, its machine gone) stays
unacknowledged until Redis's visibility timeout (an hour). Which held messages a live worker
holds, the workers say (`tasks_held_by_live_workers`); the sweeper puts one that none holds
back on its queue (`restore_held`), as kombu would after the visibility timeout: the same
message, counted as a redelivery against KARYO_MAX_REDELIVERIES.

A message names its image the way every task's arguments do (`image_of_args`, which
`CaseTask.on_failure` and the workers' `held_tasks` use too): the first string among the
task's positional arguments (segment_image, classify_ici and record_failure take it first,
assemble_image after the chord's results).
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import redis
from celery import Celery

log = logging.getLogger("karyoflow.sweeper")

QUEUES = ("segment", "classify", "assemble")
UNACKED_KEY = "unacked"  # kombu's Redis transport default (transport option `unacked_key`)


@dataclass(frozen=True)
class HeldMessage:
    """A message delivered to a worker and not yet acknowledged: its delivery tag (its key in
    the `unacked` hash), its task's id and its image."""

    tag: str
    task_id: str | None
    image_id: str | None


@dataclass(frozen=True)
class InFlight:
    """What Redis holds at one moment: the images with a queued message, and the held messages."""

    queued: frozenset[str]
    held: tuple[HeldMessage, ...]

    @property
    def images(self) -> set[str]:
        """The images with a message, queued or held."""
        return set(self.queued) | {message.image_id for message in self.held if message.image_id}


def image_of_args(args: object) -> str | None:
    """The image a task is about, from its positional arguments: the first string among them."""
    return next((arg for arg in args if isinstance(arg, str)), None) if isinstance(args, (list, tuple)) else None


def image_of_message(envelope: dict) -> str | None:
    """The image a kombu message (its envelope as stored in Redis, decoded) is about; None when
    the message names none or cannot be read."""
    try:
        body = envelope["body"]
        if envelope.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]  # Celery's protocol 2 body: [args, kwargs, embed]
    except (ValueError, KeyError, IndexError, TypeError) as error:
        log.debug("a message not read: %r", error)
        return None
    return image_of_args(args)


def _envelope(raw: bytes, held: bool) -> dict:
    """A queued message is stored as its envelope, a held one as [envelope, exchange, routing key]."""
    try:
        decoded = json.loads(raw)
        return decoded[0] if held else decoded
    except (ValueError, IndexError, KeyError, TypeError):
        return {}


def _task_id(envelope: dict) -> str | None:
    task_id = envelope.get("headers", {}).get("id") if isinstance(envelope.get("headers"), dict) else None
    return task_id if isinstance(task_id, str) else None


def read_in_flight(client: redis.Redis, queues: tuple[str, ...] = QUEUES, unacked_key: str = UNACKED_KEY) -> InFlight:
    """The messages in `queues` and those held by workers. One transaction reads them all, so a
    message that moves meanwhile between a queue and the unacknowledged set (a delivery, a
    redelivery) is seen where it is. Raises Redis's errors: a Redis that cannot be read says
    nothing about which messages are lost."""
    with client.pipeline(transaction=True) as pipe:
        for queue in queues:
            pipe.lrange(queue, 0, -1)
        pipe.hgetall(unacked_key)
        *queued, held = pipe.execute()
    images = (image_of_message(_envelope(raw, False)) for raws in queued for raw in raws)
    held_messages = []
    for tag, raw in held.items():
        envelope = _envelope(raw, True)
        held_messages.append(HeldMessage(tag.decode(), _task_id(envelope), image_of_message(envelope)))
    return InFlight(frozenset(image for image in images if image is not None), tuple(held_messages))


def tasks_held_by_live_workers(app: Celery, timeout_s: float = 2.0) -> dict[str, str | None] | None:
    """The tasks the workers that answer hold, running, prefetched or waiting for their retry
    countdown (workers.control): task id -> image. A worker that does not answer within
    `timeout_s` (dead, or too busy for once) contributes nothing; the sweeper acts only on what
    several looks agree on. None when a worker answers without knowing the command (an older
    version still running): then nothing can be said of what it holds."""
    held: dict[str, str | None] = {}
    for reply in app.control.broadcast("held_tasks", reply=True, timeout=timeout_s) or []:
        for worker, tasks in reply.items():
            if not isinstance(tasks, list):
                log.warning("worker %s cannot say which tasks it holds: %r", worker, tasks)
                return None
            held.update((task_id, image) for task_id, image in tasks)
    return held


def orphaned(in_flight: InFlight, live_tasks: Iterable[str]) -> dict[str, str | None]:
    """The held messages no live worker holds: delivery tag -> image."""
    live = set(live_tasks)
    return {message.tag: message.image_id for message in in_flight.held if message.task_id not in live}


def restore_held(app: Celery, tags: Iterable[str]) -> None:
    """Put held messages back on their queues, each in one transaction that also removes it from
    the unacknowledged set (kombu's own restore: marked redelivered, at the head of its queue).
    A tag acknowledged meanwhile is only removed."""
    with app.connection_for_write() as connection:
        qos = connection.default_channel.qos
        for tag in tags:
            qos.restore_by_tag(tag, leftmost=False)
