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
visibility timeout is above the longest task; storage, database and Redis errors are retried
with capped exponential backoff until a deadline (workers.retry), long enough to wait out a
minute-long outage of any of them: publishing (a retry, the next stage), storing a result and
counting a chord's members wait for Redis, and the worker reconnects to it. A message whose
worker process died under it is delivered again at most `KARYO_MAX_REDELIVERIES` times
(workers.tasks). The database, not the broker, is the source of truth: `workers.sweeper`, the
last resort, re-enqueues an unfinished image whose message is gone from Redis (lost in transit
as Redis stopped, with a Redis that keeps no data, never enqueued), puts back on its queue a
message held by a worker that died whole (workers.control: the workers say what they hold),
and re-enqueues any case stuck in a stage (an outage past the retry deadline).
"""

from __future__ import annotations

from celery import Celery
from celery.signals import worker_process_init

from infra.settings import get_settings
from workers.retry import RetryPolicy

# the segmentation task's name: what an upload enqueues (api.intake sends it by name, without
# loading the analysis that workers.tasks imports)
SEGMENT_IMAGE = "workers.tasks.segment_image"
settings = get_settings()
retry = RetryPolicy.from_settings(settings)
# Redis publishes wait this long for Redis: retries, the next stage, a chord's callback
PUBLISH_RETRY_POLICY = {
    "max_retries": max(3, int(retry.deadline_s / (retry.cap_s / 6)) + 5),
    "interval_start": 0,
    "interval_step": 1,
    "interval_max": retry.cap_s / 6,
}
app = Celery(
    "karyoflow",
    broker=settings.redis_url,
    # Celery's Redis backend, waiting for Redis where a chord's members are counted
    backend=f"workers.backend:PatientRedisBackend+{settings.redis_url}",
    include=["workers.tasks", "workers.control"],
)
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
    broker_connection_retry=True,
    # kombu's Redis transport, without stopping the worker when Redis goes away under its tasks
    broker_transport="workers.broker:Transport",
    broker_connection_max_retries=None,  # a worker reconnects to Redis for as long as it takes
    task_publish_retry=True,
    task_publish_retry_policy=PUBLISH_RETRY_POLICY,
    result_backend_always_retry=True,  # storing a result waits for Redis
    result_backend_max_retries=PUBLISH_RETRY_POLICY["max_retries"],
    result_backend_base_sleep_between_retries_ms=500,
    result_backend_max_sleep_between_retries_ms=int(retry.cap_s * 1000 / 6),
    # a prefork child is replaced once a task leaves it above this (KiB); a child killed by the
    # kernel mid-task instead is a redelivery, capped by KARYO_MAX_REDELIVERIES
    worker_max_memory_per_child=settings.worker_max_memory_mb * 1024 or None,
    # a new prefork child loads its models before it reports up (worker_process_init): on a busy
    # host that takes far longer than Celery's 4 s, after which the parent kills the child and
    # forks another, for ever (a child replaced after a kill or for its memory never came back)
    worker_proc_alive_timeout=settings.worker_start_timeout_s,
    task_soft_time_limit=settings.task_soft_time_limit_s,
    task_time_limit=settings.task_soft_time_limit_s + 60,
    worker_send_task_events=True,
    task_send_sent_event=True,
    task_routes={
        SEGMENT_IMAGE: {"queue": "segment"},
        "workers.tasks.classify_ici": {"queue": "classify"},
        "workers.tasks.assemble_image": {"queue": "assemble"},
        "workers.tasks.record_failure": {"queue": "assemble"},
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
