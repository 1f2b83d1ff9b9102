"""The Celery application: Redis as broker and result backend.

Queues: `segment` (GPU), `classify` (GPU or CPU), `assemble` (CPU). Worker command lines (models
load in each worker process after the fork, never in the parent, because CUDA is not fork-safe;
the classify worker is one process whose threads hand their ICIs to shared forward passes,
workers.batching):

    celery -A workers.app worker -Q segment -c 1 -n gpu0@%h                          # CUDA_VISIBLE_DEVICES=0
    celery -A workers.app worker -Q classify -P threads -c 128 -n classify0@%h       # CUDA_VISIBLE_DEVICES=0
    celery -A workers.app worker -Q assemble -c 2 -n cpu@%h                          # KARYO_DEVICE=cpu

Reliability: tasks are acknowledged late and rejected when their worker dies, so a killed worker's
task is delivered again; every task is idempotent (same objects, same rows); the Redis
visibility timeout is above the longest task; storage and database errors are retried with
exponential backoff. The database, not the broker, is the source of truth: `workers.sweeper`
re-enqueues any case stuck in a stage (a lost message, a Redis restart).
"""

from __future__ import annotations

from celery import Celery
from celery.signals import worker_process_init

from infra.settings import get_settings

settings = get_settings()
app = Celery("karyoflow", broker=settings.redis_url, backend=settings.redis_url, include=["workers.tasks"])
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_track_started=True,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_expires=24 * 3600,
    broker_transport_options={"visibility_timeout": settings.visibility_timeout_s},
    result_backend_transport_options={"visibility_timeout": settings.visibility_timeout_s},
    broker_connection_retry_on_startup=True,
    task_soft_time_limit=settings.task_soft_time_limit_s,
    task_time_limit=settings.task_soft_time_limit_s + 60,
    worker_send_task_events=True,
    task_send_sent_event=True,
    task_routes={
        "workers.tasks.segment_image": {"queue": "segment"},
        "workers.tasks.classify_ici": {"queue": "classify"},
        "workers.tasks.assemble_image": {"queue": "assemble"},
    },
    task_default_queue="assemble",
)


@worker_process_init.connect
def _load_models(**_kwargs) -> None:
    """Load the models in each worker process as it starts (after the fork)."""
    import logging

    from workers.runtime import get_karyotyper, register_models

    karyotyper = get_karyotyper()
    try:
        register_models(karyotyper)
    except Exception as error:  # the database may be down at start: tasks retry on their own
        logging.getLogger("karyoflow.worker").warning("model versions not recorded: %s", error)
