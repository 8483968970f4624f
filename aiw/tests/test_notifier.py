"""The feed notifier keeps the channel-layer round trip off the writer's path and coalesces."""

from __future__ import annotations

import threading

from aiw.feed import FeedNotifier


def test_announcing_never_waits_for_the_channel_layer_and_a_burst_coalesces():
    """GIVEN a channel layer that hangs on the first message
    WHEN 1,000 commits announce their ids meanwhile
    THEN every announce returns at once, and once the layer answers only the newest id is
    sent: the burst costs one message."""
    release, first_sent, newest_sent, sent = (threading.Event(), threading.Event(),
                                             threading.Event(), [])

    def send(event_id: int) -> None:
        sent.append(event_id)
        if event_id == 1:
            first_sent.set()
            release.wait(10)
        if event_id == 1000:
            newest_sent.set()

    notifier = FeedNotifier(send)
    notifier.announce(1)
    assert first_sent.wait(10)
    for event_id in range(2, 1001):
        notifier.announce(event_id)  # would hang here if it sent synchronously
    assert sent == [1]
    release.set()
    assert newest_sent.wait(10)
    assert sent == [1, 1000]


def test_the_thread_keeps_its_connection_while_commits_come_and_releases_it_when_idle():
    """GIVEN a notifier that releases what it holds after 1 s without a commit
    WHEN commits arrive every 10 ms for a while, then stop
    THEN nothing is released while they come (no checkout per notification), it is
    released once after they stop, and every send carried the newest id announced before it."""
    sent, released = [], threading.Event()
    release_calls = []

    def release() -> None:
        release_calls.append(len(sent))
        released.set()

    notifier = FeedNotifier(sent.append, release, min_interval=0.001, idle=1.0)
    for event_id in range(1, 11):
        notifier.announce(event_id)
        threading.Event().wait(0.01)
    assert release_calls == []
    assert released.wait(10)
    assert release_calls == [len(sent)]
    assert sent == sorted(sent) and sent[-1] == 10
