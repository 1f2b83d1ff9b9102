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

from sqlalchemy import select

from db.models import Case, CaseImage
from db.session import session_scope
from infra.settings import get_settings

ACTIVE = ("received", "segmenting", "classifying", "assembling")
MAX_SWEEPS = 5
log = logging.getLogger("karyoflow.sweeper")


def enqueue_image(image_id: str) -> None:
    from workers.tasks import segment_image

    segment_image.apply_async(args=(image_id,))


def sweep(now: datetime | None = None) -> list[str]:
    """Re-enqueue the stuck cases; return their ids."""
    settings = get_settings()
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(seconds=settings.stuck_after_s)
    swept = []
    with session_scope() as session:
        query = select(Case).where(Case.status.in_(ACTIVE), Case.stage_started_at < cutoff)
        stuck = session.scalars(query.with_for_update(skip_locked=True)).all()
        for case in stuck:
            if case.enqueue_count >= MAX_SWEEPS:
                case.error = f"stuck in '{case.status}' after {case.enqueue_count} attempts"
                case.status, case.finished_at = "failed", now
                continue
            pending = session.scalars(
                select(CaseImage.id).where(CaseImage.case_id == case.id, CaseImage.status != "done")
            ).all()
            for image_id in pending:
                enqueue_image(image_id)
            case.enqueue_count += 1
            case.stage_started_at = now
            swept.append(case.id)
    return swept


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
