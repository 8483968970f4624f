"""Replaying SKAB files (and NAB files, ``demo.nab.NabRun``) as telemetry.v1 events over
MQTT, like sensors would publish them."""

from __future__ import annotations

import heapq
import json
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import numpy as np

from demo.skab import METRIC_NAMES, SkabRun
from twins.mqtt import connect_client, make_client, topic

EVENT_NAMESPACE = uuid.UUID("6f1c3a2e-5b7d-4e8f-9a0b-1c2d3e4f5a6b")


def event_id(run_name: str, row: int, source: str = "skab") -> uuid.UUID:
    """Deterministic event id of a row: replaying the same file twice stores it once."""
    return uuid.uuid5(EVENT_NAMESPACE, f"{source}:{run_name}:{row}")


def to_event(twin_slug: str, run: SkabRun, row: int) -> dict:
    """telemetry.v1 event of one row (timestamps taken as UTC). Labels are not included.

    A run names its metrics and source with ``metric_names`` and ``source`` when it has them
    (a NAB run: ``("value",)``, ``"nab"``); a SkabRun uses SKAB's eight metrics.
    """
    source = getattr(run, "source", "skab")
    names = getattr(run, "metric_names", METRIC_NAMES)
    return {
        "event_id": str(event_id(run.name, row, source)), "twin_id": twin_slug,
        "asset_id": run.asset_slug, "ts": f"{run.ts[row]}Z",
        "metrics": {m: float(v) for m, v in zip(names, run.X[row], strict=True)},
        "tags": {"source": source, "file": run.name}, "quality": "good",
    }


def interleave(runs: list[SkabRun]) -> Iterator[tuple[SkabRun, int]]:
    """(run, row) pairs ordered by time since each run's start: all files play side by side."""
    heap = [((run.ts[0] - run.ts[0]) / np.timedelta64(1, "s"), i, 0) for i, run in enumerate(runs)]
    heapq.heapify(heap)
    while heap:
        _, i, row = heapq.heappop(heap)
        run = runs[i]
        yield run, row
        if row + 1 < len(run.ts):
            offset = (run.ts[row + 1] - run.ts[0]) / np.timedelta64(1, "s")
            heapq.heappush(heap, (offset, i, row + 1))


class AckWindow:
    """End-to-end flow control: how far a publisher may run ahead of its consumer's commits.

    ``acked()`` says how many messages the consumer has committed (e.g. the ingest subscriber's
    ``committed`` counter; it may lag a little and must never decrease). While the consumer is
    busy, the window is what it commits in ``target_lag`` seconds at its pace over the last
    ``span`` seconds, so the newest message waits about ``target_lag`` s for its commit however
    fast or slow the consumer is; when the consumer has caught up with everything sent, the
    window doubles (it was starved). Always between ``floor`` and ``ceiling`` messages.
    ``clock`` is ``time.monotonic`` unless a test passes another.
    """

    def __init__(self, acked: Callable[[], int], *, target_lag: float = 1.5, floor: int = 50,
                 ceiling: int = 5000, initial: int = 200, span: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._acked, self._clock = acked, clock
        self.target_lag, self.floor, self.ceiling, self.span = target_lag, floor, ceiling, span
        self.size = initial
        self._base = acked()
        self.done = 0  # committed, as last read: a lower bound, since acked only grows
        self._samples: deque[tuple[float, int]] = deque([(clock(), 0)])

    def read(self, sent: int) -> None:
        """Read ``acked`` and re-size the window for ``sent`` messages published so far."""
        now, self.done = self._clock(), self._acked() - self._base
        self._samples.append((now, self.done))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.span:
            self._samples.popleft()
        (t0, a0), (t1, a1) = self._samples[0], self._samples[-1]
        if self.done >= sent:
            self.size = min(self.ceiling, self.size * 2)
        elif t1 - t0 >= 1.0 and a1 > a0:
            pace = (a1 - a0) / (t1 - t0)
            self.size = max(self.floor, min(self.ceiling, int(pace * self.target_lag)))

    def full(self, sent: int) -> bool:
        """Whether ``sent`` messages are a window or more ahead of the commits last read."""
        return sent - self.done >= self.size

    def wait_for_room(self, sent: int, *, poll: float = 0.1,
                      on_wait: Callable[[], None] | None = None) -> float:
        """Block until ``sent`` is less than a window ahead, reading ``acked`` every ``poll``
        seconds (``on_wait`` is called each time); return the seconds waited. Exceptions from
        ``acked`` (e.g. "the consumer died") propagate."""
        started = self._clock()
        self.read(sent)
        while self.full(sent):
            if on_wait:
                on_wait()
            time.sleep(poll)
            self.read(sent)
        return self._clock() - started


def publish_runs(
    url: str, twin_slug: str, runs: list[SkabRun], *, rate: float,
    on_progress: Callable[[int], None] | None = None,
    window: AckWindow | None = None, poll: float = 0.1,
    sense: Callable[[dict], dict] | None = None,
) -> int:
    """Publish every row of ``runs`` at QoS 1, at most ``rate`` events/s; return the count.

    ``sense`` (the demo's plant, ``SimulatedDevice.sense``) gets every event just before it
    is published and returns the event to publish: the recording, or the plant's reading.

    Flow control: with a ``window`` (``AckWindow``), publishing pauses while the consumer's
    commits are a window or more behind, looking again every ``poll`` seconds; an exception
    from its ``acked`` (e.g. "the consumer died") ends the replay. The broker's PUBACK to this
    publisher only says the broker has the message: without flow control a publisher faster
    than ingest piles messages up between the broker and the subscriber, where they wait longer
    than the broker allows for the subscriber's PUBACK (amqtt: 5 s, then an error per message).

    Waits for the broker's PUBACK of every message before returning.
    """
    client = make_client(url, client_id=f"opstwin-replay-{uuid.uuid4().hex[:8]}")
    connect_client(client, url)
    client.loop_start()
    started, sent, last = time.monotonic(), 0, None

    def waiting() -> None:  # nothing published, but alive: a progress line can show the wait
        if on_progress:
            on_progress(0)

    try:
        for run, row in interleave(runs):
            if window is not None and window.full(sent):
                # The rate counts publishing time only.
                started += window.wait_for_room(sent, poll=poll, on_wait=waiting)
            event = to_event(twin_slug, run, row)
            if sense is not None:
                event = sense(event)
            last = client.publish(topic(twin_slug, run.asset_slug, "telemetry"),
                                  json.dumps(event), qos=1)
            sent += 1
            ahead = sent / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
            if on_progress and sent % 100 == 0:
                on_progress(100)
        if last is not None:
            last.wait_for_publish(timeout=60)
        if on_progress:
            on_progress(sent % 100)
    finally:
        client.loop_stop()
        client.disconnect()
    return sent


class RunOn:
    """The plant does not stop when its recording does: after the replay, an asset can keep
    running at its last recorded operating point, one row per recorded cadence (the median
    spacing of its file), each row passed through ``sense`` (the plant) before it is published
    like the replay's. The demo runs on the assets whose verification window reaches past
    their recording, so an action executed late in a file is still judged on readings (the
    plant's) instead of being inconclusive for want of them.

    ``published``: run-on events sent so far. Event ids are deterministic
    (``event_id(run, n + k, source + "-run-on")``). Call :meth:`close` when done.
    """

    def __init__(self, url: str, twin_slug: str, runs: list[SkabRun], *,
                 sense: Callable[[dict], dict] | None = None) -> None:
        self.url, self.twin_slug, self.sense = url, twin_slug, sense
        self._runs = {run.asset_slug: run for run in runs}
        self._rows: dict[str, int] = {}
        self._client = None
        self.published = 0

    def _connect(self):
        if self._client is None:
            self._client = make_client(self.url,
                                       client_id=f"opstwin-run-on-{uuid.uuid4().hex[:8]}")
            connect_client(self._client, self.url)
            self._client.loop_start()
        return self._client

    def until(self, asset_slug: str, end: datetime) -> int:
        """Publish the asset's run-on rows up to the first at or after ``end`` (aware
        datetime); returns how many were published now (0 for an asset of no run, or whose
        recording or earlier run-on already reaches ``end``). Waits for the broker's PUBACKs."""
        run = self._runs.get(asset_slug)
        if run is None or len(run.ts) < 2:
            return 0
        cadence = float(np.median(np.diff(run.ts) / np.timedelta64(1, "s")))
        last = datetime.fromisoformat(f"{run.ts[-1]}").replace(tzinfo=UTC)
        done, source = self._rows.get(asset_slug, 0), getattr(run, "source", "skab")
        sent, info = 0, None
        while cadence > 0 and last + timedelta(seconds=cadence * done) < end:
            done += 1
            ts = last + timedelta(seconds=cadence * done)
            event = to_event(self.twin_slug, run, len(run.ts) - 1) | {
                "event_id": str(event_id(run.name, len(run.ts) - 1 + done, f"{source}-run-on")),
                "ts": ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
            event["tags"] = {**event["tags"], "run_on": "true"}
            if self.sense is not None:
                event = self.sense(event)
            info = self._connect().publish(topic(self.twin_slug, asset_slug, "telemetry"),
                                           json.dumps(event), qos=1)
            sent += 1
        self._rows[asset_slug] = done
        if info is not None:
            info.wait_for_publish(timeout=60)
        self.published += sent
        return sent

    def close(self) -> None:
        """Disconnect (a no-op if nothing was published)."""
        if self._client is not None:
            self._client.loop_stop()
            self._client.disconnect()
            self._client = None
