"""Streaming detection: anomalies do not depend on how telemetry was batched, and time
parameters follow the asset's own cadence (5-minute readings here, not SKAB's 1 s)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from django.test import TestCase

from telemetry import handoff
from telemetry.detectors import OnsetFilter, OnsetState, SmoothedZScore, sampling_interval
from telemetry.models import Anomaly, DetectorStreamState
from telemetry.services import RawPayload, ingest_batch
from tests.fixtures import T0, event
from twins.models import Asset

pytestmark = pytest.mark.django_db
CADENCE = timedelta(minutes=5)


def occupancy(n: int = 600) -> np.ndarray:
    """A daily-cycle occupancy reading every 5 min with two faults: a spike and a level shift."""
    rng = np.random.default_rng(7)
    i = np.arange(n)
    x = 50 + 10 * np.sin(2 * np.pi * i / 288) + rng.normal(0, 1.0, n)
    x[320:324] += 40.0
    x[480:] += 80.0
    return x


def send(asset: Asset, x: np.ndarray, batch: int) -> None:
    payloads = [RawPayload(body=event(asset, T0 + k * CADENCE, {"occupancy": float(v)}))
                for k, v in enumerate(x)]
    for k in range(0, len(payloads), batch):
        with TestCase.captureOnCommitCallbacks(execute=True):
            report = ingest_batch(payloads[k : k + batch], source="replay")
        assert not report.rejected


def episodes(asset: Asset) -> list[tuple]:
    rows = Anomaly.objects.filter(asset=asset).order_by("started_at")
    return [(a.started_at, a.last_seen_at, a.n_points, a.severity, a.status) for a in rows]


@pytest.fixture
def sensors(twin, no_policy_response):
    return [Asset.objects.create(twin=twin, slug=f"occ-{k}", name=f"Occupancy {k}",
                                 kind="generic", metrics=[{"name": "occupancy", "unit": "%"}])
            for k in range(3)]


@pytest.fixture
def no_policy_response(monkeypatch):
    calls: list[int] = []
    monkeypatch.setitem(handoff.DIVERTED, handoff.RESPOND, calls)
    return calls


def test_one_batch_500_row_batches_and_1_row_batches_give_identical_anomalies(sensors):
    """GIVEN the same 5-minute series sent whole, in 500-row batches and one row at a time
    through ingest_batch, THEN the three assets get the same anomaly episodes, and each fault
    is one episode (not one per flagged point)."""
    x = occupancy()
    for asset, batch in zip(sensors, (len(x), 500, 1), strict=True):
        send(asset, x, batch)
    whole, five_hundred, single = (episodes(a) for a in sensors)
    assert whole == five_hundred == single
    starts = [e[0] for e in whole]
    assert T0 + 321 * CADENCE in starts and T0 + 482 * CADENCE in starts
    assert len(whole) == 2
    state = DetectorStreamState.objects.get(asset=sensors[2], metric="")
    assert state.interval_seconds == 300.0
    assert state.detector == "smoothed_z"


def test_the_sampling_interval_ignores_repeats_jitter_and_holes():
    seconds = np.array([0, 300, 300, 601, 899, 1200, 90000, 90300, 90600], dtype="int64")
    ts = (np.datetime64("2020-01-01T00:00:00") + seconds.astype("timedelta64[s]"))
    assert sampling_interval(ts) == pytest.approx(300.0, abs=1.5)
    assert sampling_interval(ts[:1]) is None


def test_a_flapping_signal_pages_once_until_it_is_quiet_for_the_rearm_span():
    """ratio > 1 every other point for 20 points: one onset; after 5 quiet points it re-arms,
    but the cooldown (30 points since the onset) holds the next alert back until then."""
    flt = OnsetFilter(release=0.5, rearm=5, cooldown=30)
    ratio = np.array([2.0, 0.8] * 10 + [0.1] * 5 + [2.0] + [0.1] * 5 + [2.0])
    found, state = flt.update(ratio, OnsetState())
    assert np.flatnonzero(found.onset).tolist() == [0, 31]
    stepwise, s = [], OnsetState()
    for r in ratio:
        out, s = flt.update(np.array([r]), s)
        stepwise.append(bool(out.onset[0]))
    assert np.flatnonzero(stepwise).tolist() == [0, 31] and s == state


def test_smoothed_z_scores_row_by_row_as_in_one_batch():
    x = occupancy(500)[:, None]
    det = SmoothedZScore()
    whole = det.score(x).statistic
    h = det.history_length
    parts = [det.score(x[i : i + 1], history=x[max(0, i - h) : i] if i else None).statistic
             for i in range(len(x))]
    assert np.array_equal(whole, np.concatenate(parts))
    assert whole[321:324].max() > det.threshold and whole[:203].max() == 0.0
