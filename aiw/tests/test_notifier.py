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
