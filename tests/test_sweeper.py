"""The sweeper's watch for lost messages: an unfinished image counts as lost only after every
look for `lost_after_s` found it without a message."""

from __future__ import annotations

import pytest

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
    watch = LostMessages(lost_after_s=60)
    watch.look(UNFINISHED, {"image-a", "image-b"}, clock=0)
    assert watch.look(UNFINISHED, {"image-a", "image-b", "image-c"}, clock=30) == {}
    assert watch.look(UNFINISHED, {"image-a", "image-b"}, clock=70) == {}
    assert watch.look(UNFINISHED, {"image-a", "image-b"}, clock=130) == {"image-c": "case-2"}


def test_finished_images_drop_out_and_enqueued_ones_are_watched_afresh() -> None:
    watch = LostMessages(lost_after_s=10)
    watch.look(UNFINISHED, set(), clock=0)
    assert watch.look({"image-c": "case-2"}, set(), clock=10) == {"image-c": "case-2"}
    assert set(watch.unseen_since) == {"image-c"}  # images a and b finished: forgotten
    watch.forget({"image-c"})
    assert watch.look({"image-c": "case-2"}, set(), clock=15) == {}
    assert watch.look({"image-c": "case-2"}, set(), clock=25) == {"image-c": "case-2"}
