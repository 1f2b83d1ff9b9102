"""The sweeper's watch for lost messages: an unfinished image (or a held message) counts as lost
only after every look for `lost_after_s`, and at least `min_looks` of them, found it missing;
which held messages no live worker holds."""

from __future__ import annotations

import pytest

from workers.inflight import HeldMessage, InFlight, orphaned
from workers.sweeper import LostMessages

pytestmark = pytest.mark.unit

UNFINISHED = {"image-a": "case-1", "image-b": "case-1", "image-c": "case-2"}


def test_an_image_without_a_message_is_lost_only_after_the_limit() -> None:
    watch = LostMessages(lost_after_s=60)
    assert watch.look(UNFINISHED, {"image-a", "image-b"}, clock=0) == {}
    assert watch.look(UNFINISHED, {"image-a", "image-b"}, clock=59) == {}
    assert watch.look(UNFINISHED, {"image-a", "image-b"}, clock=60) == {"image-c": "case-2"}


def test_a_message_seen_again_restarts_the_watch() -> None:
    """A message that was only in transit (enqueued just after a look, or popped by a worker
    that records it as held a moment later) is seen on a later look: the image is not lost."""
    watch = LostMessages(lost_after_s=60, min_looks=1)
    watch.look(UNFINISHED, {"image-a", "image-b"}, clock=0)
    assert watch.look(UNFINISHED, {"image-a", "image-b", "image-c"}, clock=30) == {}
    assert watch.look(UNFINISHED, {"image-a", "image-b"}, clock=70) == {}
    assert watch.look(UNFINISHED, {"image-a", "image-b"}, clock=130) == {"image-c": "case-2"}


def test_finished_images_drop_out_and_enqueued_ones_are_watched_afresh() -> None:
    watch = LostMessages(lost_after_s=10, min_looks=1)
    watch.look(UNFINISHED, set(), clock=0)
    assert watch.look({"image-c": "case-2"}, set(), clock=10) == {"image-c": "case-2"}
    assert set(watch.unseen_since) == {"image-c"}  # images a and b finished: forgotten
    watch.forget({"image-c"})
    assert watch.look({"image-c": "case-2"}, set(), clock=15) == {}
    assert watch.look({"image-c": "case-2"}, set(), clock=25) == {"image-c": "case-2"}


def test_one_late_look_is_not_enough() -> None:
    """A sweeper that stalled past the limit has looked only once or twice: nothing is lost yet."""
    watch = LostMessages(lost_after_s=10, min_looks=3)
    assert watch.look(UNFINISHED, {"image-a", "image-b"}, clock=0) == {}
    assert watch.look(UNFINISHED, {"image-a", "image-b"}, clock=100) == {}
    assert watch.look(UNFINISHED, {"image-a", "image-b"}, clock=101) == {"image-c": "case-2"}


def test_held_messages_no_live_worker_holds_are_orphans() -> None:
    in_flight = InFlight(
        queued=frozenset({"image-q"}),
        held=(HeldMessage("tag-1", "task-1", "image-a"), HeldMessage("tag-2", "task-2", "image-b"),
              HeldMessage("tag-3", None, None)),
    )  # fmt: skip
    assert in_flight.images == {"image-q", "image-a", "image-b"}
    assert orphaned(in_flight, {"task-1": "image-a", "task-9": "image-z"}) == {"tag-2": "image-b", "tag-3": None}
    assert orphaned(in_flight, {}) == {"tag-1": "image-a", "tag-2": "image-b", "tag-3": None}
