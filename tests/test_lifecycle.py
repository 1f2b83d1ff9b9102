"""The case life cycle (db.status, db.lifecycle), the stored cell's arrays (infra.case_objects)
and the classification batcher (workers.batching): no services."""

from __future__ import annotations

import ast
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from db.lifecycle import TaskRunRecord
from db.status import ACTIVE, CaseStatus, IllegalTransition, Stage, can_move, check_move
from infra.case_objects import ImageKeys, _arrays_bytes, _arrays_from, case_prefix
from karyoflow.pipeline import SegmentedCell
from workers.batching import ClassifyBatcher

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[1]
STATUS_WORDS = {status.value for status in CaseStatus}


def test_a_case_moves_forward_fails_or_is_swept_back_never_out_of_deletion() -> None:
    assert can_move("received", "segmenting") and can_move("segmenting", "assembling")
    assert can_move("assembling", "segmenting")  # the sweeper re-enqueues from segmentation
    assert can_move("classifying", "classifying")  # a redelivered task repeats its stage
    assert not can_move("assembling", "classifying")  # a late classify never moves a case back
    for status in ACTIVE:
        assert can_move(status, "done") and can_move(status, "failed") and not can_move(status, "deleting")
    assert can_move("done", "deleting") and can_move("failed", "deleting") and can_move("deleting", "deleting")
    for finished in ("done", "failed", "deleting"):
        assert not any(can_move(finished, status) for status in ACTIVE)
    assert not can_move("done", "failed")  # a late failure leaves a finished case alone
    with pytest.raises(IllegalTransition, match="a segmenting case cannot become deleting"):
        check_move("segmenting", "deleting")
    assert [stage.status for stage in Stage] == ["segmenting", "classifying", "assembling"]


def test_no_status_literal_outside_the_lifecycle_layer() -> None:
    """Statuses are compared and set through db.status's enums in the API, the workers and
    monitoring; a string literal there would bypass the allowed moves."""
    found = []
    for package in ("api", "workers", "db", "infra"):
        for path in (REPO / package).rglob("*.py"):
            if path.name == "status.py" or "migrations" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and node.value in STATUS_WORDS:
                    found.append(f"{path.relative_to(REPO)}:{node.lineno} {node.value!r}")
    assert not found, found


def test_object_keys_of_an_image() -> None:
    keys = ImageKeys.of(3, "c1", 2)
    assert case_prefix(3, "c1") == "clinics/3/cases/c1/"
    assert keys.original(".png") == "clinics/3/cases/c1/images/2/original.png"
    assert (keys.ici(1), keys.mask(46)) == (
        "clinics/3/cases/c1/images/2/icis/1.png",
        "clinics/3/cases/c1/images/2/masks/46.png",
    )
    assert keys.all.startswith(case_prefix(3, "c1")) and keys.all.endswith("/images/2/")


def test_the_stored_cell_arrays_come_back_exactly() -> None:
    rng = np.random.default_rng(0)
    icis = [rng.integers(0, 255, (h, w), dtype=np.uint8) for h, w in ((40, 12), (7, 31), (90, 20))]
    masks = rng.random((3, 57, 77)) > 0.5  # a width that is no multiple of 8
    cell = SegmentedCell(77, 57, np.ones(3), masks, [(0, 0, 1, 1)] * 3, icis, np.zeros(3, np.float32), 1.0, 0.5)
    loaded, loaded_masks = _arrays_from(_arrays_bytes(cell), 3, 57, 77)
    assert all(np.array_equal(a, b) for a, b in zip(icis, loaded, strict=True))
    assert np.array_equal(masks, loaded_masks)
    empty = SegmentedCell(77, 57, np.ones(0), np.zeros((0, 57, 77), bool), [], [], np.zeros(0, np.float32), 1.0, 0.5)
    assert _arrays_from(_arrays_bytes(empty), 0, 57, 77)[0] == []


def _run(n: int) -> TaskRunRecord:
    return TaskRunRecord("case", "image", Stage.CLASSIFY, f"task-{n}", "test", 0.0, 0.0)


def test_concurrent_tasks_share_forward_passes_and_each_gets_its_own_result() -> None:
    passes: list[int] = []
    taken: list[int] = []  # ICIs in forward passes begun
    recorded: list[TaskRunRecord] = []
    gate = threading.Event()

    def forward(stain: str, canvases: np.ndarray) -> np.ndarray:
        taken.append(len(canvases))
        gate.wait(5)  # the first pass waits until every task has handed its ICI over
        passes.append(len(canvases))
        sums = canvases.reshape(len(canvases), -1).sum(1)
        return np.stack([np.full(24, s) for s in sums])

    batcher = ClassifyBatcher(forward, record=recorded.extend, gap_s=0.0)
    results: dict[int, float] = {}

    def task(n: int) -> None:
        results[n] = float(batcher.classify(np.full((4, 2), n, np.float32), "q", _run(n)).probabilities[0])

    threads = [threading.Thread(target=task, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    # every ICI handed over: waiting, or in the first pass (one or more ICIs, as they came)
    deadline = time.monotonic() + 10
    while batcher.waiting.qsize() + sum(taken) < 20 and time.monotonic() < deadline:
        threading.Event().wait(0.01)
    gate.set()
    for thread in threads:
        thread.join(10)
    assert results == {n: 8.0 * n for n in range(20)}
    assert sum(passes) == 20 and len(passes) <= 3  # not one pass per task
    assert sorted(r.task_id for r in recorded) == sorted(f"task-{n}" for n in range(20))
    assert all(r.finished > 0 for r in recorded)


def test_a_failed_forward_pass_fails_each_task_of_its_batch() -> None:
    def forward(stain: str, canvases: np.ndarray) -> np.ndarray:
        raise RuntimeError("device lost")

    batcher = ClassifyBatcher(forward, record=lambda runs: None)
    with pytest.raises(RuntimeError, match="device lost"):
        batcher.classify(np.zeros((4, 2), np.float32), "q", _run(0))
    assert batcher.batch_sizes == [1]


def test_api_handlers_never_block_the_event_loop() -> None:
    """Route handlers are plain functions (FastAPI runs them in its threadpool): an `async def`
    handler calling minio, SQLAlchemy or torch would stall every other request."""
    handlers = []
    for path in (REPO / "api" / "routers").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.AsyncFunctionDef):
                handlers.append(f"{path.name}:{node.lineno} {node.name}")
    assert not handlers, handlers
