"""One settings object for the API, the workers and the CLI's stack, read from the environment
(prefix KARYO_, e.g. KARYO_DATABASE_URL)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KARYO_")

    # models
    # default: the shipped weights (models/ of the checkout or the wheel; KARYO_MODELS_DIR moves them)
    classifier_weights: Path | None = None  # Q-band ChrNet4 (chrnet4.pt)
    classifier_weights_gband: Path | None = None  # G-band ChrNet4 (chrnet4-gband.pt)
    segmenter_weights: Path | None = None  # Q-band; default: the engine's (models/chrrender.pt for torchvision)
    segmenter_weights_gband: Path | None = None  # G-band; default: models/chrrender-gband.pt where shipped
    # torchvision (this project's ChrRender) or detectron2 (its PointRend; the workers need
    # detectron2 installed: `make detectron2`); the segmenter weights must be the engine's
    segment_engine: Literal["torchvision", "detectron2"] = "torchvision"
    device: str | None = None  # cpu or cuda; default: cuda when present
    # a second, mirrored segmentation pass fused with the first (docs/segmentation.md): +1 box
    # and mask AP, twice the segmentation time, no better karyotypes on our sets: opt-in
    segment_tta: bool = False

    # single-ICI endpoint
    max_upload_bytes: int = 4 * 1024 * 1024
    max_icis_per_request: int = 60

    # cases
    max_image_bytes: int = 32 * 1024 * 1024  # per uploaded MCI
    # decompression-bomb guard and what a segment worker's memory holds: segmenting an MCI of
    # n megapixels peaks near 1.0 GiB + 0.4 GiB x n (scripts/segment_memory.py), so 6 M
    # pixels stay under KARYO_WORKER_MAX_MEMORY_MB's 4 GiB (a 768x576 MCI has 0.44 M)
    max_image_pixels: int = 6_000_000
    max_images_per_case: int = 16
    # requests that decode and store images (uploads, ICI classification) processed at once
    # per API process, and how long one waits for its turn before a 503 (api.admission)
    upload_concurrency: int = Field(default=1, ge=1)
    upload_wait_s: float = Field(default=60.0, gt=0)
    # processes per API process that decode, store and enqueue new cases, so that the API's
    # interpreter keeps serving reads during uploads; 0: in the request's thread (api.intake)
    intake_processes: int = Field(default=1, ge=0)

    # infrastructure
    database_url: str = "sqlite:///karyoflow.db"
    redis_url: str = "redis://127.0.0.1:6379/0"
    s3_endpoint: str = "127.0.0.1:8333"  # host:port, as the minio SDK wants it
    s3_access_key: str = "karyoflow"
    s3_secret_key: str = "karyoflow-secret"
    s3_secure: bool = False
    s3_region: str = "us-east-1"
    bucket: str = "karyoflow"

    # monitoring
    flower_url: str = "http://127.0.0.1:5555"  # as the lab's browsers reach it
    # the bearer token Prometheus scrapes /metrics with; unset or empty: /metrics refuses everyone
    metrics_token: SecretStr | None = None

    # reliability
    task_soft_time_limit_s: int = 300
    visibility_timeout_s: int = 3600  # above the longest task: a late ack is never redelivered early
    # the sweeper re-enqueues a case this long in one stage: the last resort, above a task's
    # retry deadline plus its time limit, so it never races a task that is still retrying
    stuck_after_s: int = 900
    # an unfinished image with no message in Redis (none queued, none held by a worker) for this
    # long lost its message: the sweeper enqueues it again (workers.inflight)
    lost_after_s: int = Field(default=60, ge=1)
    # transient errors (database, Redis, S3 unreachable) are retried with capped exponential
    # backoff (equal jitter: half the step fixed, half random) until this many seconds after
    # the task's first try (workers.retry)
    retry_first_s: float = 1.0
    retry_cap_s: float = 30.0
    retry_deadline_s: float = 300.0
    # a message delivered again after its worker process died mid-task (killed for memory, a
    # crash in native code) runs at most this many times more; the next delivery fails its case
    max_redeliveries: int = 3
    # a prefork worker process is replaced after a task leaves it above this resident memory
    # (MiB); 0: never
    worker_max_memory_mb: int = 4096
    # how long a new prefork worker process may take to load its models and report up
    worker_start_timeout_s: float = 300.0
    # the most ICIs of one forward pass in a classify worker (workers.batching)
    classify_batch: int = 256
    # a task whose work is stored waits this long for Redis (restarting, a network blip) to
    # enqueue its next step, rather than failing and doing the work again; past it the case is
    # left in its stage for the sweeper
    broker_wait_s: int = 300


@lru_cache
def get_settings() -> Settings:
    return Settings()
