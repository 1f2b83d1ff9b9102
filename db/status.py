"""The life cycle of a case and of its images: the statuses and the moves allowed between them,
in one place. Stored as their string values (portable between PostgreSQL and SQLite).

    received -> segmenting -> classifying -> assembling -> done
         \\____________\\_____________\\____________\\----> failed
    done | failed -> deleting (DELETE /v1/cases/{id}; its rows go last, so an interrupted
                               deletion stays visible and is finished by repeating the request)

A case follows its furthest image through the stages and is done when every image is. The
sweeper may send an active case back to segmentation (its message was lost), and a task may
repeat its own stage (a redelivered message): both are allowed moves.
"""

from __future__ import annotations

from enum import StrEnum


class CaseStatus(StrEnum):
    RECEIVED = "received"
    SEGMENTING = "segmenting"
    CLASSIFYING = "classifying"
    ASSEMBLING = "assembling"
    DONE = "done"
    FAILED = "failed"
    DELETING = "deleting"


# an image has its case's statuses but `deleting` (a deletion is the case's)
ImageStatus = StrEnum(
    "ImageStatus", {status.name: status.value for status in CaseStatus if status is not CaseStatus.DELETING}
)


class TaskRunStatus(StrEnum):
    OK = "ok"
    FAILED = "failed"


class Stage(StrEnum):
    """A worker stage: the task that runs it, and the status of an image while it runs."""

    SEGMENT = "segment"
    CLASSIFY = "classify"
    ASSEMBLE = "assemble"

    @property
    def status(self) -> CaseStatus:
        return _STAGE_STATUS[self]


_STAGE_STATUS = {
    Stage.SEGMENT: CaseStatus.SEGMENTING,
    Stage.CLASSIFY: CaseStatus.CLASSIFYING,
    Stage.ASSEMBLE: CaseStatus.ASSEMBLING,
}

# the stages in their order; a case is in work while in one of these
ACTIVE: tuple[CaseStatus, ...] = (
    CaseStatus.RECEIVED,
    CaseStatus.SEGMENTING,
    CaseStatus.CLASSIFYING,
    CaseStatus.ASSEMBLING,
)
FINISHED: tuple[CaseStatus, ...] = (CaseStatus.DONE, CaseStatus.FAILED)

TRANSITIONS: dict[CaseStatus, frozenset[CaseStatus]] = {
    **{status: frozenset({*ACTIVE[ACTIVE.index(status) :], CaseStatus.SEGMENTING, *FINISHED}) for status in ACTIVE},
    CaseStatus.DONE: frozenset({CaseStatus.DELETING}),
    CaseStatus.FAILED: frozenset({CaseStatus.DELETING}),
    CaseStatus.DELETING: frozenset({CaseStatus.DELETING}),  # a deletion repeated
}


class IllegalTransition(ValueError):
    def __init__(self, current: str, wanted: str) -> None:
        super().__init__(f"a {current} case cannot become {wanted}")
        self.current, self.wanted = current, wanted


def can_move(current: str, wanted: str) -> bool:
    return CaseStatus(wanted) in TRANSITIONS[CaseStatus(current)]


def check_move(current: str, wanted: str) -> None:
    if not can_move(current, wanted):
        raise IllegalTransition(current, wanted)


def is_active(status: str) -> bool:
    return status in ACTIVE
