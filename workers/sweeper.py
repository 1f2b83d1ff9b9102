"""The sweeper: the database is the source of truth, so a case stuck in a stage longer than
`KARYO_STUCK_AFTER_S` (its message lost: Redis restarted without persistence, a worker died
between tasks) is enqueued again from segmentation. Tasks are idempotent, so a slow case that
was not really lost only costs repeated work. After `MAX_SWEEPS` attempts the case fails with
the reason.

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
