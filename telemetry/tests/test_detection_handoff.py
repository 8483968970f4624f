"""The ingest subscriber's detection thread gathers the assets of batches committed close
together into one handoff, and hands what is pending over at once when it stops."""

from __future__ import annotations

import threading
import time

import pytest

from telemetry import handoff
from telemetry.subscriber import DetectionHandoff
from telemetry.tests.harness import wait_for

# The thread publishes the assets' state after each handoff: it needs the (empty) database.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def handed(monkeypatch) -> list[list[int]]:
    """Each handoff to detection, in order."""
    rounds: list[list[int]] = []
    lock = threading.Lock()

    def record(ids: list[int]) -> None:
        with lock:
            rounds.append(list(ids))

    monkeypatch.setitem(handoff.DIVERTED, handoff.DETECT, record)
    return rounds


def test_batches_committed_within_the_spacing_go_to_detection_in_one_handoff(handed):
    """GIVEN a detection thread that has just handed over asset 1
    WHEN three more batches commit within its spacing
    THEN their assets go over together, once each, after the spacing."""
    detection = DetectionHandoff(spacing=0.5)
    detection.add([1])
    assert wait_for(lambda: handed == [[1]], 5, every=0.01)
    started = time.monotonic()
    for ids in ([3, 2], [2], [4]):
        detection.add(ids)
    assert wait_for(lambda: len(handed) == 2, 5, every=0.01)
    assert handed == [[1], [2, 3, 4]]
    assert time.monotonic() - started >= 0.3  # waited for the spacing, not sent on first add
    detection.stop()


def test_stopping_hands_over_what_is_pending_without_waiting_for_the_spacing(handed):
    """GIVEN a detection thread within a long spacing, with assets pending
    WHEN it is stopped
    THEN the pending assets go to detection right away."""
    detection = DetectionHandoff(spacing=60)
    detection.add([1])
    assert wait_for(lambda: handed == [[1]], 5, every=0.01)
    detection.add([5])
    started = time.monotonic()
    detection.stop(timeout=10)
    assert handed == [[1], [5]]
    assert time.monotonic() - started < 5
