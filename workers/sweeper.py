"""The sweeper, the last resort: the database is the source of truth, so a case stuck in a stage
longer than `KARYO_STUCK_AFTER_S` is enqueued again from segmentation. Outages of the database,
Redis or object storage are waited out by the tasks' own retries (workers.retry); what is left
here is a message that is gone: lost with a Redis that keeps no data, never enqueued (an upload
while Redis was down), or held by a worker gone for good, and an outage longer than the retry
deadline. `KARYO_STUCK_AFTER_S` must exceed a task's retry deadline plus its time limit, or a
case still retrying is enqueued twice. Tasks are idempotent, so a slow case that was not really
lost only costs repeated work. After `MAX_SWEEPS` attempts the case fails with the reason.

    python -m workers.sweeper [--interval 15]
"""

from __future__ import annotations

import argparse
import logging
import time
from datetime import UTC, datetime, timedelta

from db.lifecycle import sweep_stuck
from infra.settings import get_settings

MAX_SWEEPS = 5
log = logging.getLogger("karyoflow.sweeper")


def enqueue_image(image_id: str) -> None:
    from workers.tasks import segment_image

    segment_image.apply_async(args=(image_id,))


def sweep(now: datetime | None = None) -> list[str]:
    """Re-enqueue the stuck cases; return their ids."""
    now = now or datetime.now(UTC)
    return sweep_stuck(now - timedelta(seconds=get_settings().stuck_after_s), MAX_SWEEPS, enqueue_image, now)


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
    while True:
        try:
            swept = sweep()
            if swept:
                log.info("re-enqueued %d stuck case(s): %s", len(swept), ", ".join(swept))
        except Exception as error:  # Redis or the database down: try again next round
            log.warning("sweep failed: %s", error)
        time.sleep(args.interval)


if __name__ == "__main__":
    main()
