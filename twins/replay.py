"""Replaying SKAB files as telemetry.v1 events over MQTT, like sensors would publish them."""

from __future__ import annotations

import heapq
import json
import time
import uuid
from collections.abc import Callable, Iterator

import numpy as np

from opstwin_site.mqtt import connect_client, make_client, topic
from twins.skab import METRIC_NAMES, SkabRun

EVENT_NAMESPACE = uuid.UUID("6f1c3a2e-5b7d-4e8f-9a0b-1c2d3e4f5a6b")


def event_id(run_name: str, row: int) -> uuid.UUID:
    """Deterministic event id of a row: replaying the same file twice stores it once."""
    return uuid.uuid5(EVENT_NAMESPACE, f"skab:{run_name}:{row}")


def to_event(twin_slug: str, run: SkabRun, row: int) -> dict:
    """telemetry.v1 event of one row (timestamps taken as UTC). Labels are not included."""
    return {
        "event_id": str(event_id(run.name, row)), "twin_id": twin_slug,
        "asset_id": run.asset_slug, "ts": f"{run.ts[row]}Z",
        "metrics": {m: float(v) for m, v in zip(METRIC_NAMES, run.X[row], strict=True)},
        "tags": {"source": "skab", "file": run.name}, "quality": "good",
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


def publish_runs(
    url: str, twin_slug: str, runs: list[SkabRun], *, rate: float,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Publish every row of ``runs`` at QoS 1, at most ``rate`` events/s; return the count.

    Waits for the broker's PUBACK of every message before returning.
    """
    client = make_client(url, client_id=f"opstwin-replay-{uuid.uuid4().hex[:8]}")
    connect_client(client, url)
    client.loop_start()
    started, sent, last = time.monotonic(), 0, None
    try:
        for run, row in interleave(runs):
            event = to_event(twin_slug, run, row)
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
