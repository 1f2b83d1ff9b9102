"""Two images of one case finishing at the same moment (two assemble tasks in parallel, as a
worker with -c 2 runs them) on PostgreSQL: the second to commit must see the first done and
finish the case. Each transaction waits, after marking its own image done, until the other has
done so too (or 3 s have passed), which is the interleaving that once left such a case in
`assembling` with every image done."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
from sqlalchemy import create_engine, event
from sqlalchemy.orm import Session

from db.lifecycle import finish_image
from db.models import Case, CaseImage, Clinic
from infra.case_objects import ImageKeys

pytestmark = pytest.mark.system


def _assembling_case(session: Session, images: int) -> tuple[str, list[str]]:
    clinic = Clinic(name="Race clinic")
    session.add(clinic)
    session.flush()
    case = Case(clinic_id=clinic.id, status="assembling")
    session.add(case)
    session.flush()
    rows = [
        CaseImage(case_id=case.id, position=n, filename=f"{n}.png", content_type="image/png",
                  object_key=f"k/{n}", sha256="0" * 64, width=768, height=576, status="assembling")
        for n in range(images)
    ]  # fmt: skip
    session.add_all(rows)
    session.commit()
    return case.id, [row.id for row in rows]


def _result() -> SimpleNamespace:
    """What the database transaction of assembly reads of a karyotyping result."""
    return SimpleNamespace(
        chromosomes=[], stain="q", karyotype=SimpleNamespace(iscn="46,XX", abnormal=False), timings_ms={}
    )


def _finish_image(session: Session, image_id: str) -> None:
    """The database transaction of `assemble_image`, in the session given."""
    finish_image(session, image_id, _result(), ImageKeys(f"p/{image_id}"))  # type: ignore[arg-type]


def test_two_images_finishing_together_finish_their_case(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    with Session(engine) as session:
        case_id, image_ids = _assembling_case(session, 2)
    both_marked = threading.Barrier(2, timeout=3)
    errors: list[BaseException] = []

    def wait_for_the_other(*_args) -> None:
        try:
            both_marked.wait()
        except threading.BrokenBarrierError:  # the other is held elsewhere (by a lock): go on
            pass

    def finish(image_id: str) -> None:
        try:
            with Session(engine) as session:
                event.listen(session, "after_flush", wait_for_the_other)
                _finish_image(session, image_id)
                session.commit()
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=finish, args=(image_id,)) for image_id in image_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    with Session(engine) as session:
        case = session.get(Case, case_id)
        statuses = [image.status for image in case.images]
        assert statuses == ["done", "done"]
        assert case.status == "done", f"case {case.status} with images {statuses}"
        assert case.karyotype == "46,XX" and case.finished_at is not None
    engine.dispose()
