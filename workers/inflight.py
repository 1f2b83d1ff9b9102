"""Which images have a message in Redis: waiting in a queue, or delivered to a worker and not
yet acknowledged (tasks are acknowledged late, so kombu's Redis transport keeps every message a
worker holds, running or waiting for its retry countdown, in its `unacked` hash until the task
has run). An unfinished image with neither has lost its message: popped by a worker at the
moment Redis stopped (kombu pops a message before it records it as unacknowledged), gone with a
Redis that keeps no data, or never enqueued (an upload while Redis was down). The sweeper
(workers.sweeper) enqueues such an image again soon, instead of after the stuck-case limit.

A message names its image the way `CaseTask.on_failure` reads it: the first string among the
task's positional arguments (segment_image, classify_ici and record_failure take it first,
assemble_image after the chord's results).
"""

from __future__ import annotations

import base64
import json
import logging

import redis

log = logging.getLogger("karyoflow.sweeper")

QUEUES = ("segment", "classify", "assemble")
UNACKED_KEY = "unacked"  # kombu's Redis transport default (transport option `unacked_key`)


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
    return next((arg for arg in args if isinstance(arg, str)), None) if isinstance(args, list) else None


def _envelope(raw: bytes, held: bool) -> dict:
    """A queued message is stored as its envelope, a held one as [envelope, exchange, routing key]."""
    try:
        decoded = json.loads(raw)
        return decoded[0] if held else decoded
    except (ValueError, IndexError, KeyError, TypeError):
        return {}


def images_with_messages(
    client: redis.Redis, queues: tuple[str, ...] = QUEUES, unacked_key: str = UNACKED_KEY
) -> set[str]:
    """The images with a message in one of `queues` or held by a worker. One transaction reads
    them all, so a message that moves meanwhile between a queue and the unacknowledged set (a
    delivery, a redelivery after the visibility timeout) is seen where it is. Raises Redis's
    errors: a Redis that cannot be read says nothing about which messages are lost."""
    with client.pipeline(transaction=True) as pipe:
        for queue in queues:
            pipe.lrange(queue, 0, -1)
        pipe.hvals(unacked_key)
        *queued, held = pipe.execute()
    messages = [_envelope(raw, False) for raws in queued for raw in raws] + [_envelope(raw, True) for raw in held]
    return {image for image in map(image_of_message, messages) if image is not None}
