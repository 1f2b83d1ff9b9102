"""Classification tasks of one worker process run as batched forward passes.

The classify worker runs its pool as threads (`-P threads -c 128`): each thread takes one
`classify_ici` message, prepares its ICI and hands it here; one batching thread runs the forward
pass for every ICI waiting at that moment (across images and cases) and returns each thread its
own probabilities. Every task is still acknowledged, retried and recorded on its own by Celery
(Flower shows one task per ICI); only the forward pass is shared. A batch waits for ICIs still
being prepared (`_take`), never longer than `gather_s`; while one batch runs, the next one fills.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace

import numpy as np

from db.lifecycle import TaskRunRecord, record_runs

log = logging.getLogger("karyoflow.worker")


@dataclass
class Pending:
    canvas: np.ndarray  # H x W, prepared with its cell's normalisation
    stain: str
    run: TaskRunRecord  # started; finished when its batch is
    future: Future = field(default_factory=Future)


@dataclass(frozen=True)
class Classified:
    probabilities: np.ndarray  # 24
    compute_ms: float  # this ICI's share of its batch's forward pass


class ClassifyBatcher:
    """`forward(stain, canvases) -> N x 24 probabilities`; `record` writes the batch's task runs
    (one transaction) before any of its tasks returns."""

    def __init__(
        self,
        forward: Callable[[str, np.ndarray], np.ndarray],
        record: Callable[[list[TaskRunRecord]], None] = record_runs,
        max_batch: int = 256,
        gap_s: float = 0.02,
        gather_s: float = 0.1,
    ) -> None:
        self.forward, self.record = forward, record
        self.max_batch, self.gap_s, self.gather_s = max_batch, gap_s, gather_s
        self.waiting: queue.Queue[Pending] = queue.Queue()
        self.batch_sizes: list[int] = []  # what ran, for the tests and the log
        threading.Thread(target=self._loop, name="classify-batcher", daemon=True).start()

    def classify(self, canvas: np.ndarray, stain: str, run: TaskRunRecord) -> Classified:
        """Blocks until the ICI's batch ran; raises what the batch raised."""
        pending = Pending(canvas, stain, run)
        self.waiting.put(pending)
        return pending.future.result()

    def _take(self) -> list[Pending]:
        """What waits now, and what follows it closely: an MCI's tasks arrive together but are
        prepared one thread after another, so the batch takes ICIs while they keep coming (no
        gap over `gap_s`), for at most `gather_s`."""
        batch = [self.waiting.get()]
        deadline = time.monotonic() + self.gather_s
        while len(batch) < self.max_batch:
            try:
                batch.append(self.waiting.get(timeout=max(min(self.gap_s, deadline - time.monotonic()), 0)))
            except queue.Empty:
                break
        return batch

    def _loop(self) -> None:
        while True:
            batch = self._take()
            try:
                results = self._run(batch)
            except BaseException as error:  # every task of the batch fails (and retries) alone
                for pending in batch:
                    pending.future.set_exception(error)
                continue
            for pending, result in zip(batch, results, strict=True):
                pending.future.set_result(result)

    def _run(self, batch: list[Pending]) -> list[Classified]:
        self.batch_sizes.append(len(batch))
        results: list[Classified | None] = [None] * len(batch)
        forward_ms = 0.0
        for stain in sorted({p.stain for p in batch}):  # one forward pass per stain's classifier
            members = [i for i, p in enumerate(batch) if p.stain == stain]
            started = time.perf_counter()
            probabilities = self.forward(stain, np.stack([batch[i].canvas for i in members]))
            elapsed_ms = (time.perf_counter() - started) * 1000
            forward_ms += elapsed_ms
            share_ms = elapsed_ms / len(members)
            for i, p in zip(members, probabilities, strict=True):
                results[i] = Classified(p, share_ms)
        finished = time.time()
        log.info("classified %d ICIs in one batch: %.0f ms of forward pass", len(batch), forward_ms)
        self.record([replace(p.run, finished=finished) for p in batch])
        return results  # type: ignore[return-value]
