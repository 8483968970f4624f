"""Streaming detection: anomalies do not depend on how telemetry was batched (the detectors'
state, EWMA level and CUSUM sums included, is carried in the database), and time parameters
follow the asset's own cadence (5-minute readings here, not SKAB's 1 s)."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pytest
from django.test import TestCase

from telemetry import handoff
from telemetry.detectors import (
    OnsetFilter,
    OnsetState,
    SmoothedZScore,
    build_detector,
    sampling_interval,
)
from telemetry.models import Anomaly, DetectorConfig, DetectorStreamState
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
    payloads = [
        RawPayload(body=event(asset, T0 + k * CADENCE, {"occupancy": float(v)}))
        for k, v in enumerate(x)
    ]
    for k in range(0, len(payloads), batch):
        with TestCase.captureOnCommitCallbacks(execute=True):
            report = ingest_batch(payloads[k : k + batch], source="replay")
        assert not report.rejected


def episodes(asset: Asset) -> list[tuple]:
    rows = Anomaly.objects.filter(asset=asset).order_by("started_at")
    return [(a.started_at, a.last_seen_at, a.n_points, a.severity, a.status) for a in rows]


@pytest.fixture
def sensors(twin, no_policy_response):
    return [
        Asset.objects.create(
            twin=twin,
            slug=f"occ-{k}",
            name=f"Occupancy {k}",
            kind="generic",
            metrics=[{"name": "occupancy", "unit": "%"}],
        )
        for k in range(3)
    ]


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
    ts = np.datetime64("2020-01-01T00:00:00") + seconds.astype("timedelta64[s]")
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
    parts = [
        det.score(x[i : i + 1], history=x[max(0, i - h) : i] if i else None).statistic
        for i in range(len(x))
    ]
    assert np.array_equal(whole, np.concatenate(parts))
    assert whole[321:324].max() > det.threshold and whole[:203].max() == 0.0


PUMP_DEFAULT = {"lam": 0.7, "L": 3.0, "smooth": 3, "adapt_every": 3600, "adapt_rate": 0.5}
CHARTS = [
    ("ewma", PUMP_DEFAULT),
    ("cusum", {"k": 0.5, "h": 8.0, "smooth": 5, "adapt_every": 40, "adapt_rate": 0.5}),
]


def two_metrics(n: int = 420) -> np.ndarray:
    """Vibration and current every 5 min, slowly wandering, with a drift fault from row 300."""
    rng = np.random.default_rng(5)
    X = rng.normal(0, 1.0, (n, 2)) + 0.02 * rng.normal(0, 1.0, (n, 2)).cumsum(axis=0)
    X[:, 1] += 20.0
    X[300:370, 0] += np.linspace(0.0, 6.0, 70)
    return X


def send_rows(asset: Asset, X: np.ndarray, batch: int) -> None:
    payloads = [
        RawPayload(
            body=event(asset, T0 + k * CADENCE, {"vibration": float(r[0]), "current": float(r[1])})
        )
        for k, r in enumerate(X)
    ]
    for k in range(0, len(payloads), batch):
        with TestCase.captureOnCommitCallbacks(execute=True):
            report = ingest_batch(payloads[k : k + batch], source="replay")
        assert not report.rejected


@pytest.mark.parametrize(("name", "params"), CHARTS)
def test_ewma_and_cusum_carry_their_state_so_every_batching_gives_the_same_anomalies(
    twin, no_policy_response, name, params
):
    """GIVEN motors watched by an EWMA or CUSUM chart calibrated on their first 200 rows, WHEN
    the same two-metric series is sent whole, in 500-row batches and one row at a time (every
    1-row call rebuilds the detector from the database, as after a restart), THEN the anomalies
    are identical, their first flagged point is the library's on the whole series, and the
    stream state holds the chart's per-metric recursion."""
    DetectorConfig.objects.update_or_create(
        asset_kind="motor", defaults={"detector": name, "params": params, "calibration_rows": 200}
    )
    motors = [
        Asset.objects.create(
            twin=twin,
            slug=f"motor-{k}",
            name=f"Motor {k}",
            kind="motor",
            metrics=[{"name": "vibration"}, {"name": "current"}],
        )
        for k in range(3)
    ]
    X = two_metrics()
    for motor, batch in zip(motors, (len(X), 500, 1), strict=True):
        send_rows(motor, X, batch)
    whole, five_hundred, single = (episodes(m) for m in motors)
    assert whole == five_hundred == single
    assert whole, "the drift fault opens an anomaly"
    det = build_detector(name, params).fit(X[:200])
    flags = det.score(X[200:], history=X[200 - det.history_length : 200]).flags
    assert whole[0][0] == T0 + (200 + int(np.argmax(flags))) * CADENCE
    carry = DetectorStreamState.objects.get(asset=motors[2], metric="").state["carry"]
    assert carry["rec"]["i"] == det.history_length + len(X) - 200
    recursion = carry["rec"]["e"] if name == "ewma" else carry["rec"]["up"]
    assert len(recursion) == 2


@pytest.mark.parametrize(
    ("name", "params"),
    [
        *CHARTS,
        ("zscore", {"smooth": 3}),
        ("mad", {"min_run": 3}),
        ("smoothed_z", {}),
        ("pca_t2q", {"lam": 0.3, "smooth": 3}),
    ],
)
def test_a_stream_split_anywhere_scores_bitwise_as_one_call(name, params):
    """score_stream in 1-, 7- and 500-row calls (the carry through JSON, as stored) gives the
    statistics of score() on the whole series bit for bit, and the same flags (PCA: equal to
    1e-12, its projections run through BLAS, whose rounding depends on the row count)."""
    X = two_metrics(900)
    det = build_detector(name, params)
    if det.requires_fit:
        det.fit(X[:200])
    h = det.history_length
    whole = det.score(X[200:], history=X[max(0, 200 - h) : 200])
    for size in (1, 7, 500):
        carry, stats, flags = None, [], []
        for k in range(200, len(X), size):
            out, carry = det.score_stream(
                X[k : k + size], history=X[max(0, k - h) : k], carry=carry
            )
            carry = json.loads(json.dumps(carry))
            stats.append(out.statistic)
            flags.append(out.flags)
        assert np.array_equal(np.concatenate(flags), whole.flags)
        if name == "pca_t2q":
            assert np.allclose(np.concatenate(stats), whole.statistic, rtol=0, atol=1e-12)
        else:
            assert np.array_equal(np.concatenate(stats), whole.statistic)
