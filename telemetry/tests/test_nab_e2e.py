"""End to end on real plant telemetry (issue 12): NAB development files replayed through
``POST /telemetry/ingest`` give, read back from ``/diff``, the same alert onsets as the
benchmark's library run of the same detector on the same rows (``benchmarks/nab_eval.py``).

The data is read in place from ``../shared/datasets/nab-dev`` (``$OPSTWIN_NAB_DIR``); without it
the test fails under ``OPSTWIN_REQUIRE_SERVICES=1`` (CI) and skips on a developer laptop.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from django.test import TestCase

from benchmarks.nab_eval import default_data_dir, onsets
from telemetry.models import DetectorConfig
from telemetry.scoring import nab
from tests.fixtures import event, missing
from twins.choices import AssetKind
from twins.models import Asset

pytestmark = pytest.mark.django_db
ROWS = 1500
BATCH = 500
#: An irregular 5-11 minute cadence with three onsets in its first 1,500 rows, and an hourly
#: one with two: both far from SKAB's one reading a second.
TRAFFIC, EXCHANGE = "realTraffic/TravelTime_451.csv", "realAdExchange/exchange-4_cpc_results.csv"


def nab_rows(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The first ``ROWS`` timestamps (datetime64[s], UTC) and values of one NAB file."""
    path = default_data_dir() / "data" / name
    if not path.exists():
        missing(f"NAB development split missing: {path}")
    ts, values = nab.read_csv(path)
    return ts[:ROWS], values[:ROWS]


def as_datetime(ts: np.datetime64) -> datetime:
    return ts.astype("datetime64[us]").astype(datetime).replace(tzinfo=UTC)


def library_onsets(values: np.ndarray, ts: np.ndarray) -> list[datetime]:
    """The benchmark's library run of the generic default (``smoothed_z``) on these rows."""
    return [as_datetime(ts[i]) for i in onsets("smoothed_z", {}, "filter", values)]


def events_of(asset: Asset, ts: np.ndarray, values: np.ndarray) -> list[dict]:
    return [event(asset, as_datetime(t), {"value": float(v)})
            for t, v in zip(ts, values, strict=True)]


def post(client, body: list[dict]) -> None:
    """One ingest request, its after-commit detection (and policy response) run as committed."""
    with TestCase.captureOnCommitCallbacks(execute=True):
        response = client.post("/telemetry/ingest", body, content_type="application/json")
    assert response.status_code == 201, response.content[:500]
    assert response.json()["rejected"] == []


def opened_onsets(client) -> dict[str, list[datetime]]:
    """Every ``anomaly.created`` (an anomaly opened) on the change feed, page by page:
    asset -> started_at."""
    found: dict[str, list[datetime]] = {}
    since = "0"
    while True:
        page = client.get("/diff", {"since": since, "types": "anomaly.created"}).json()
        for item in page["events"]:
            data = item["data"]
            started = datetime.fromisoformat(data["started_at"].replace("Z", "+00:00"))
            found.setdefault(data["asset"], []).append(started)
        since = page["next_cursor"]
        if not page["has_more"]:
            return {asset: sorted(times) for asset, times in found.items()}


@pytest.fixture
def plant(twin) -> dict[str, Asset]:
    """Two generic one-metric assets under the shipped generic default (migration 0006)."""
    assert DetectorConfig.objects.get(asset_kind=AssetKind.GENERIC).detector == "smoothed_z"
    return {name: Asset.objects.create(twin=twin, slug=slug, name=slug, kind=AssetKind.GENERIC,
                                       metrics=[{"name": "value"}])
            for name, slug in ((TRAFFIC, "travel-time"), (EXCHANGE, "exchange-cpc"))}


def test_one_asset_per_request_gives_the_library_onsets(plant, agent_client):
    """GIVEN the first 1,500 rows of a 5-11 minute traffic file WHEN they are posted in
    500-event requests THEN /diff shows one anomaly per library onset, at the same times."""
    ts, values = nab_rows(TRAFFIC)
    body = events_of(plant[TRAFFIC], ts, values)
    for k in range(0, len(body), BATCH):
        post(agent_client, body[k : k + BATCH])
    expected = library_onsets(values, ts)
    assert len(expected) == 3
    assert opened_onsets(agent_client) == {"travel-time": expected}


def test_mixed_assets_per_request_give_each_assets_library_onsets(plant, agent_client):
    """GIVEN two files of different cadences (irregular 5-11 min, hourly) WHEN every request
    carries readings of both assets THEN each asset's anomalies open at its library onsets."""
    series = {name: nab_rows(name) for name in plant}
    streams = [events_of(plant[name], *series[name]) for name in plant]
    half = BATCH // 2
    for k in range(0, ROWS, half):
        post(agent_client, [e for stream in streams for e in stream[k : k + half]])
    expected = {plant[name].slug: library_onsets(values, ts)
                for name, (ts, values) in series.items()}
    assert [len(v) for v in expected.values()] == [3, 2]
    assert opened_onsets(agent_client) == expected
