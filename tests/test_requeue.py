"""What the sweeper writes (db.lifecycle) on PostgreSQL: a lost image enqueued again counts as
one sweep of its case, which fails after the limit; finished images and finished cases are left
alone; the stuck-case sweep enqueues every unfinished image of a case in a stage too long."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from db import session as db_session
from db.lifecycle import requeue_lost, sweep_stuck, unfinished_images
from db.models import Case, CaseImage, Clinic
from infra.settings import get_settings

pytestmark = pytest.mark.system

NOW = datetime(2030, 1, 1, tzinfo=UTC)
EARLIER = NOW - timedelta(hours=1)


@pytest.fixture
def engine(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """The database layer pointed at a fresh database."""
    monkeypatch.setenv("KARYO_DATABASE_URL", postgres_url)
    caches = (get_settings, db_session.get_engine, db_session.get_sessionmaker)
    for cache in caches:
        cache.cache_clear()
    engine = create_engine(postgres_url)
    try:
        yield engine
    finally:
        engine.dispose()
        db_session.get_engine().dispose()
        monkeypatch.undo()
        for cache in caches:
            cache.cache_clear()


def _case(session: Session, status: str, image_statuses: list[str], enqueue_count: int = 0) -> tuple[str, list[str]]:
    clinic = Clinic(name=f"Clinic {status} {len(image_statuses)} {enqueue_count}")
    session.add(clinic)
    session.flush()
    case = Case(clinic_id=clinic.id, status=status, stage_started_at=EARLIER, enqueue_count=enqueue_count)
    session.add(case)
    session.flush()
    images = [
        CaseImage(case_id=case.id, position=n, filename=f"{n}.png", content_type="image/png",
                  object_key=f"k/{case.id}/{n}", sha256="0" * 64, width=768, height=576, status=image_status)
        for n, image_status in enumerate(image_statuses)
    ]  # fmt: skip
    session.add_all(images)
    session.commit()
    return case.id, [image.id for image in images]


def test_a_lost_image_is_enqueued_again_once_per_look_and_the_case_fails_after_the_limit(engine) -> None:
    with Session(engine) as session:
        working, (finished_image, lost_image) = _case(session, "classifying", ["done", "classifying"])
        spent, (spent_image,) = _case(session, "segmenting", ["segmenting"], enqueue_count=5)
        done, (done_image,) = _case(session, "done", ["done"])
    unfinished = unfinished_images()
    assert unfinished == {lost_image: working, spent_image: spent}  # no finished image, no finished case

    enqueued: list[str] = []
    lost = {finished_image: working, lost_image: working, spent_image: spent, done_image: done}
    swept = requeue_lost(lost, 5, enqueued.append, NOW)
    assert swept == [working]
    assert enqueued == [lost_image]  # the image that finished meanwhile is not redone
    with Session(engine) as session:
        case = session.get(Case, working)
        assert (case.status, case.enqueue_count, case.stage_started_at) == ("classifying", 1, NOW)
        failed = session.get(Case, spent)
        assert failed.status == "failed" and failed.error == "stuck in 'segmenting' after 5 attempts"
        assert session.get(Case, done).status == "done"


def test_a_case_in_a_stage_too_long_has_its_unfinished_images_enqueued(engine) -> None:
    with Session(engine) as session:
        stuck, (done_image, stuck_image) = _case(session, "assembling", ["done", "assembling"])
        recent, _ = _case(session, "segmenting", ["segmenting"])
        session.get(Case, recent).stage_started_at = NOW
        session.commit()
    enqueued: list[str] = []
    assert sweep_stuck(NOW - timedelta(minutes=15), 5, enqueued.append, NOW) == [stuck]
    assert enqueued == [stuck_image]
    with Session(engine) as session:
        assert session.get(Case, stuck).enqueue_count == 1
        assert session.get(Case, recent).enqueue_count == 0
