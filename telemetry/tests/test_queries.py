"""Reading telemetry back: raw pages, aggregates (raw and rollups), latest values, limits."""

from __future__ import annotations

import json
import math
import statistics
from datetime import timedelta

import numpy as np
import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from guardian.shortcuts import assign_perm

from telemetry import handoff, rollups
from telemetry.ingest_status import LagHistogram, write_status
from telemetry.services import RawPayload, ingest_batch
from tests.fixtures import T0, event
from twins.models import Asset, Twin

pytestmark = pytest.mark.django_db

METRICS = ["Pressure", "Current"]


@pytest.fixture(autouse=True)
def no_detection(monkeypatch):
    monkeypatch.setitem(handoff.DIVERTED, handoff.DETECT, [])


@pytest.fixture
def reader(django_user_model, twin):
    """A user who may see ``twin`` (object permission) and read telemetry; nothing else."""
    user = django_user_model.objects.create_user(username="reader", password="pw")
    user.user_permissions.add(Permission.objects.get(codename="view_telemetrysample"))
    assign_perm("twins.view_twin", user, twin)
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def hidden(db) -> Asset:
    """An asset of a twin the reader may not see."""
    other = Twin.objects.create(slug="hidden", name="Hidden plant")
    return Asset.objects.create(twin=other, slug="pump-9", name="P9",
                                metrics=[{"name": m, "unit": ""} for m in METRICS])


def ingest(asset: Asset, points: list[tuple[float, dict]]) -> None:
    """Ingest events at ``T0 + seconds`` with the given metrics, in batches of 500."""
    payloads = [RawPayload(body=event(asset, T0 + timedelta(seconds=s), m)) for s, m in points]
    for k in range(0, len(payloads), 500):
        report = ingest_batch(payloads[k:k + 500], source="replay")
        assert not report.rejected, report.rejected


def series(n: int, step: float = 10.0, seed: int = 1) -> list[tuple[float, dict]]:
    rng = np.random.default_rng(seed)
    return [(i * step, {"Pressure": float(100 + rng.normal(0, 3)),
                        "Current": float(rng.normal(2, 0.1))}) for i in range(n)]


def get(client: Client, path: str, **params):
    return client.get(f"/telemetry/{path}", params)


def iso(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


# --- /telemetry/query ---------------------------------------------------------------------------
def test_query_pages_through_every_sample_exactly_once_with_the_cursor(reader, pump):
    ingest(pump, series(23))
    seen, cursor, pages = [], None, 0
    while True:
        params = {"twin": "plant", "start": iso(0), "end": iso(10_000), "limit": 7}
        response = get(reader, "query", **params, **({"cursor": cursor} if cursor else {}))
        assert response.status_code == 200, response.content
        body = response.json()
        seen += [(r["metric"], r["ts"], r["value"]) for r in body["results"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == math.ceil(46 / 7)
    assert len(seen) == 46 and len(set(seen)) == 46
    assert [m for m, _, _ in seen] == ["Current"] * 23 + ["Pressure"] * 23  # (metric, ts) order


def test_query_filters_by_asset_metric_and_time_range(reader, pump):
    ingest(pump, series(30))
    response = get(reader, "query", twin="plant", asset="pump-1", metric="Pressure",
                   start=iso(100), end=iso(200))
    rows = response.json()["results"]
    assert [r["ts"] for r in rows] == [iso(s).replace("+00:00", "Z") for s in range(100, 200, 10)]
    assert {r["metric"] for r in rows} == {"Pressure"} and {r["asset"] for r in rows} == {"pump-1"}


def test_query_refuses_a_cursor_from_another_query(reader, pump):
    ingest(pump, series(10))
    first = get(reader, "query", twin="plant", start=iso(0), end=iso(1000), limit=3).json()
    response = get(reader, "query", twin="plant", start=iso(0), end=iso(500), limit=3,
                   cursor=first["next_cursor"])
    assert response.status_code == 400
    assert "different query" in response.json()["detail"]


def test_query_refuses_a_tampered_cursor(reader, pump):
    response = get(reader, "query", twin="plant", start=iso(0), end=iso(10), cursor="!!nope")
    assert response.status_code == 400
    assert response.json()["detail"] == "cursor is not valid"


@pytest.mark.parametrize("path", ["query", "aggregate"])
def test_start_equal_to_end_is_an_empty_range_not_an_error(reader, pump, path):
    """[start, end) is half-open: start == end selects nothing (issue 13 item 3)."""
    response = get(reader, path, twin="plant", start=iso(0), end=iso(0), bucket="1m")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body.get("results", []) == [] and body.get("series", []) == []
    assert body.get("next_cursor") is None


@pytest.mark.parametrize(("params", "fragment"), [
    ({"start": iso(0), "end": iso(40 * 86400)}, "at most 31 days"),
    ({"start": iso(10), "end": iso(0)}, "end must not be before start"),
    ({"start": iso(0), "end": iso(10), "limit": 10_001}, "limit must be between"),
])
def test_query_answers_400_problems_for_requests_over_the_limits(reader, pump, params, fragment):
    response = get(reader, "query", twin="plant", **params)
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert fragment in response.json()["detail"]


def test_query_reports_missing_parameters_field_by_field(reader, pump):
    response = get(reader, "query", twin="plant")
    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"start", "end"}


# --- scope ----------------------------------------------------------------------------------------
ENDPOINTS = [
    ("query", {"start": iso(0), "end": iso(60)}),
    ("aggregate", {"start": iso(0), "end": iso(60), "bucket": "1m"}),
    ("latest", {}),
]


@pytest.mark.parametrize(("path", "params"), ENDPOINTS)
def test_a_twin_outside_the_users_scope_answers_404(reader, hidden, path, params):
    ingest(hidden, series(5))
    response = get(reader, path, twin="hidden", asset="pump-9", **params)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"


@pytest.mark.parametrize(("path", "params"), ENDPOINTS)
def test_an_unknown_asset_answers_404(reader, pump, path, params):
    response = get(reader, path, twin="plant", asset="nope", **params)
    assert response.status_code == 404


@pytest.mark.parametrize(("path", "params"), ENDPOINTS)
def test_a_user_without_any_grant_sees_nothing(outsider_client, pump, path, params):
    response = get(outsider_client, path, twin="plant", asset="pump-1", **params)
    assert response.status_code == 404


def test_anonymous_requests_are_refused(client, pump):
    response = get(client, "latest", twin="plant", asset="pump-1")
    assert response.status_code in (401, 403)


def test_an_undeclared_metric_is_a_400(reader, pump):
    response = get(reader, "query", twin="plant", metric="Bogus", start=iso(0), end=iso(10))
    assert response.status_code == 400
    assert "Bogus" in response.json()["detail"]


# --- /telemetry/aggregate -------------------------------------------------------------------------
def expected(values: list[float]) -> dict:
    ordered = sorted(values)
    return {"count": len(values), "sum": sum(values), "avg": statistics.fmean(values),
            "min": min(values), "max": max(values), "last": values[-1],
            "stddev": statistics.stdev(values) if len(values) > 1 else None,
            "p50": float(np.percentile(ordered, 50)), "p95": float(np.percentile(ordered, 95))}


def test_aggregate_computes_every_function_per_bucket(reader, pump):
    points = series(60, step=7)  # 7 minutes of data, 1-minute buckets
    ingest(pump, points)
    response = get(reader, "aggregate", twin="plant", asset="pump-1", metric="Pressure",
                   start=iso(0), end=iso(420), bucket="1m",
                   fn="avg,min,max,count,sum,stddev,last,p50,p95")
    body = response.json()
    assert response.status_code == 200, body
    assert body["source"] == "raw"
    [only] = body["series"]
    for k, ts in enumerate(only["ts"]):
        values = [m["Pressure"] for s, m in points if k * 60 <= s < (k + 1) * 60]
        assert ts == iso(k * 60).replace("+00:00", "Z")
        for fn, value in expected(values).items():
            assert only["values"][fn][k] == pytest.approx(value, rel=1e-9), (fn, k)


@pytest.mark.parametrize(("bucket", "fns", "metric"), [
    ("1m", "avg,min,max,count,sum,stddev,last", None),
    ("1m", "avg,min,max,count,sum,stddev,last", "Pressure"),  # one series: read by equality
    ("5m", "avg,stddev,last", None),
    ("1h", "avg,min,max,count,sum,stddev,last", None),
    ("1h", "avg,count,last", "Current"),
    ("2h", "avg,count,stddev", None),
])
def test_rollups_agree_with_raw_samples_before_and_after_refresh(reader, pump, bucket, fns,
                                                                 metric):
    ingest(pump, series(800, step=17))  # ~3.8 hours
    params = {"twin": "plant", "asset": "pump-1", "start": iso(0), "end": iso(4 * 3600),
              "bucket": bucket, "fn": fns} | ({"metric": metric} if metric else {})

    def both():
        raw = get(reader, "aggregate", source="raw", **params).json()
        rolled = get(reader, "aggregate", source="rollup", **params).json()
        assert raw["source"] == "raw" and rolled["source"].startswith("rollup_")
        return raw["series"], rolled["series"]

    dirty_raw, dirty_rolled = both()  # nothing refreshed: rollups answer from raw minutes
    assert rollups.refresh_rollups().ranges > 0
    clean_raw, clean_rolled = both()
    ingest(pump, [(5 * 60 + 1, {"Pressure": 1e3, "Current": -5.0})])  # late: one dirty minute
    late_raw, late_rolled = both()
    for raw, rolled in [(dirty_raw, dirty_rolled), (clean_raw, clean_rolled),
                        (late_raw, late_rolled)]:
        assert [s["ts"] for s in raw] == [s["ts"] for s in rolled]
        for a, b in zip(raw, rolled, strict=True):
            for fn in fns.split(","):
                assert b["values"][fn] == pytest.approx(a["values"][fn], rel=1e-9, abs=1e-12)
    assert late_raw != clean_raw  # the late sample did change the answer


def test_refresh_rewrites_buckets_whole_so_late_data_lands_in_the_rollup_tables(pump):
    from django.db import connection

    points = series(100, step=30)
    ingest(pump, points)
    rollups.refresh_rollups()
    ingest(pump, [(15, {"Pressure": 500.0})])  # late, inside the first minute
    report = rollups.refresh_rollups()
    with connection.cursor() as c:
        c.execute("SELECT n, vmax, last_value FROM telemetry_rollup_1m WHERE asset_id = %s "
                  "AND metric = 'Pressure' AND bucket = %s", [pump.pk, T0])
        minute = c.fetchone()
        c.execute("SELECT sum(n) FROM telemetry_rollup_1h WHERE asset_id = %s "
                  "AND metric = 'Pressure'", [pump.pk])
        hours = c.fetchone()[0]
        c.execute("SELECT count(*) FROM telemetry_rollup_dirty WHERE asset_id = %s", [pump.pk])
        dirty = c.fetchone()[0]
    assert (report.ranges, report.minute_rows) == (1, 2)  # Pressure and Current of minute 0
    # samples at 0 s, 15 s (arrived last) and 30 s: "last" is by time, so the one at 30 s
    assert minute == (3, 500.0, points[1][1]["Pressure"])
    assert hours == 101 and dirty == 0


def test_gap_fill_null_returns_every_bucket_and_previous_carries_values(reader, pump):
    ingest(pump, [(0, {"Pressure": 1.0}), (30, {"Pressure": 3.0}), (185, {"Pressure": 7.0})])
    params = {"twin": "plant", "asset": "pump-1", "metric": "Pressure", "start": iso(0),
              "end": iso(300), "bucket": "1m", "fn": "avg,count"}
    none = get(reader, "aggregate", **params).json()["series"][0]
    null = get(reader, "aggregate", fill="null", **params).json()["series"][0]
    previous = get(reader, "aggregate", fill="previous", **params).json()["series"][0]
    assert none["values"] == {"avg": [2.0, 7.0], "count": [2, 1]}
    assert len(null["ts"]) == 5
    assert null["values"] == {"avg": [2.0, None, None, 7.0, None], "count": [2, 0, 0, 1, 0]}
    assert previous["values"] == {"avg": [2.0, 2.0, 2.0, 7.0, 7.0], "count": [2, 0, 0, 1, 0]}


def test_gap_fill_includes_declared_series_without_any_data(reader, pump):
    ingest(pump, [(0, {"Pressure": 1.0})])
    body = get(reader, "aggregate", twin="plant", asset="pump-1", start=iso(0), end=iso(120),
               bucket="1m", fill="null", fn="count").json()
    counts = {s["metric"]: s["values"]["count"] for s in body["series"]}
    assert counts["Pressure"] == [1, 0]
    assert counts["Current"] == [0, 0]
    assert len(counts) == len(pump.metric_names)


def test_long_ranges_read_the_rollups_and_percentiles_read_raw(reader, pump, settings):
    settings.TELEMETRY_ROLLUP_AFTER_SECONDS = 3600
    ingest(pump, series(10))
    base = {"twin": "plant", "asset": "pump-1", "start": iso(0)}
    sources = {
        "short": get(reader, "aggregate", end=iso(1800), bucket="1m", **base),
        "long minutes": get(reader, "aggregate", end=iso(7200), bucket="5m", **base),
        "long hours": get(reader, "aggregate", end=iso(7200), bucket="1h", **base),
        "percentile": get(reader, "aggregate", end=iso(7200), bucket="1h", fn="p95", **base),
        "seconds": get(reader, "aggregate", end=iso(7200), bucket="30s", **base),
    }
    assert {k: r.json()["source"] for k, r in sources.items()} == {
        "short": "raw", "long minutes": "rollup_1m", "long hours": "rollup_1h",
        "percentile": "raw", "seconds": "raw"}


@pytest.mark.parametrize(("params", "status", "fragment"), [
    ({"bucket": "7m"}, 400, "errors"),
    ({"bucket": "1m", "fn": "avg,median"}, 400, "errors"),
    ({"bucket": "1m", "fill": "linear"}, 400, "errors"),
    ({"bucket": "1s", "end": iso(86400)}, 400, "points"),
    ({"bucket": "1d", "end": iso(500 * 86400)}, 400, "at most 400 days"),
    ({"bucket": "1m", "end": iso(40 * 86400), "fn": "p50"}, 400, "limited to 31 days"),
    ({"bucket": "30s", "source": "rollup"}, 400, "whole minutes"),
])
def test_aggregate_validates_its_parameters(reader, pump, params, status, fragment):
    query = {"twin": "plant", "asset": "pump-1", "start": iso(0), "end": iso(600)} | params
    response = get(reader, "aggregate", **query)
    assert response.status_code == status
    assert response["Content-Type"] == "application/problem+json"
    assert fragment in json.dumps(response.json())


def test_aggregate_over_a_whole_twin_returns_one_series_per_asset_and_metric(reader, pump, twin):
    second = Asset.objects.create(twin=twin, slug="pump-2", name="P2",
                                  metrics=[{"name": m, "unit": ""} for m in METRICS])
    ingest(pump, series(12))
    ingest(second, series(12, seed=2))
    body = get(reader, "aggregate", twin="plant", start=iso(0), end=iso(120), bucket="1m",
               fn="count").json()
    keys = sorted((s["asset"], s["metric"]) for s in body["series"])
    assert keys == [("pump-1", "Current"), ("pump-1", "Pressure"),
                    ("pump-2", "Current"), ("pump-2", "Pressure")]
    assert all(s["values"]["count"] == [6, 6] for s in body["series"])


# --- /telemetry/latest ----------------------------------------------------------------------------
def test_latest_returns_the_newest_value_of_each_declared_metric(reader, pump):
    ingest(pump, [(0, {"Pressure": 1.0, "Current": 2.0}), (60, {"Pressure": 5.0}),
                  (30, {"Current": 9.0})])
    body = get(reader, "latest", twin="plant", asset="pump-1").json()
    by_metric = {m["metric"]: m for m in body["metrics"]}
    assert [m["metric"] for m in body["metrics"]] == pump.metric_names
    pressure = by_metric["Pressure"]
    assert (pressure["value"], pressure["ts"]) == (5.0, "2024-01-01T00:01:00Z")
    assert (by_metric["Current"]["value"], by_metric["Current"]["unit"]) == (9.0, "A")
    assert by_metric["Voltage"]["value"] is None and by_metric["Voltage"]["ts"] is None


def test_latest_lists_the_metrics_present_when_an_asset_declares_none(reader, twin):
    free = Asset.objects.create(twin=twin, slug="free", name="Free", metrics=[])
    ingest(free, [(0, {"b": 1.0, "a": 2.0}), (5, {"c": 3.0})])
    body = get(reader, "latest", twin="plant", asset="free").json()
    assert [(m["metric"], m["value"]) for m in body["metrics"]] == [("a", 2.0), ("b", 1.0),
                                                                    ("c", 3.0)]


# --- schema, status, building blocks ------------------------------------------------------------
def test_the_query_endpoints_are_in_the_openapi_schema(admin_client):
    response = admin_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    schema = json.loads(response.content)
    paths = schema["paths"]
    for path in ("/telemetry/query", "/telemetry/aggregate", "/telemetry/latest",
                 "/telemetry/ingest/status"):
        assert "get" in paths[path], path
    names = {p["name"] for p in paths["/telemetry/aggregate"]["get"]["parameters"]}
    assert {"twin", "asset", "metric", "start", "end", "bucket", "fn", "fill"} <= names


def test_ingest_status_merges_the_status_files_of_every_process(reader, settings, tmp_path):
    import time

    settings.INGEST_STATUS_DIR = tmp_path
    for name, lags in (("a", [0.01] * 98 + [2.0, 2.0]), ("b", [0.02] * 100)):
        histogram = LagHistogram()
        for lag in lags:
            histogram.add(lag)
        write_status(tmp_path / f"{name}.json", {"buffered": 7, "updated_at": time.time(),
                                                 "event_lag": histogram.to_dict(),
                                                 "commit_lag": histogram.to_dict()})
    write_status(tmp_path / "old.json", {"buffered": 1000, "updated_at": time.time() - 3600})
    body = get(reader, "ingest/status").json()
    assert len(body["processes"]) == 3
    assert [p["stale"] for p in body["processes"]] == [False, False, True]
    assert body["buffered"] == 14
    assert body["event_lag_p50_s"] == pytest.approx(0.015, rel=0.4)
    assert body["event_lag_p99_s"] == pytest.approx(0.02, rel=0.05)


def test_lag_histogram_quantiles_are_within_three_percent():
    rng = np.random.default_rng(3)
    lags = rng.lognormal(mean=-2, sigma=1, size=20_000)
    histogram = LagHistogram()
    for lag in lags:
        histogram.add(float(lag))
    for q in (0.5, 0.9, 0.99):
        assert histogram.quantile(q) == pytest.approx(np.quantile(lags, q), rel=0.03)


def test_adding_a_batch_of_lags_counts_each_in_the_bucket_add_gives_it():
    rng = np.random.default_rng(4)
    lags = [*rng.lognormal(mean=-2, sigma=3, size=2_000).tolist(),
            -0.5, 0.0, 1e-3, 5e-4, 1e5, 1e7]  # skew, the floor, beyond the top bucket
    one_by_one, at_once = LagHistogram(), LagHistogram()
    for lag in lags:
        one_by_one.add(lag)
    at_once.add_all(lags)
    at_once.add_all([])
    assert at_once.counts == one_by_one.counts
    assert (at_once.n, at_once.max_s) == (len(lags), 1e7)


def test_merge_spans_aligns_and_merges_overlapping_ranges():
    a = T0 + timedelta(seconds=5)
    spans = rollups.merge_spans([
        (1, a, a + timedelta(seconds=70)),          # minutes 0..1
        (1, a + timedelta(seconds=100), a + timedelta(seconds=100)),  # minute 1 again
        (1, a + timedelta(seconds=300), a + timedelta(seconds=301)),  # minute 5
        (2, a, a),
    ], timedelta(minutes=1))
    minute = timedelta(minutes=1)
    assert spans == [(1, T0, T0 + 2 * minute), (1, T0 + 5 * minute, T0 + 6 * minute),
                     (2, T0, T0 + minute)]


def test_rollup_stddev_stays_exact_for_values_far_from_zero(reader, pump):
    """Merging buckets with Chan's update keeps stddev exact where sum-of-squares would not."""
    rng = np.random.default_rng(5)
    points = [(i * 5.0, {"Pressure": 1e9 + float(rng.normal(0, 1e-3))}) for i in range(2000)]
    ingest(pump, points)
    rollups.refresh_rollups()
    params = {"twin": "plant", "asset": "pump-1", "metric": "Pressure", "start": iso(0),
              "end": iso(3 * 3600), "bucket": "3h", "fn": "stddev"}
    raw = get(reader, "aggregate", source="raw", **params).json()["series"][0]["values"]
    rolled = get(reader, "aggregate", source="rollup", **params).json()["series"][0]["values"]
    exact = statistics.stdev([m["Pressure"] for _, m in points])
    assert raw["stddev"][0] == pytest.approx(exact, rel=1e-3)
    assert rolled["stddev"][0] == pytest.approx(exact, rel=1e-3)


def test_celery_beat_runs_the_registered_rollup_task_which_folds_dirty_ranges(pump, settings):
    from opstwin_site.celery import app as celery_app
    from telemetry.rollup_tasks import refresh_rollups

    entry = settings.CELERY_BEAT_SCHEDULE["refresh-rollups"]
    assert entry["task"] == refresh_rollups.name
    assert entry["task"] in celery_app.tasks
    ingest(pump, series(20))
    result = refresh_rollups.delay().get()
    assert result["ranges"] == 1 and result["minute_rows"] == 2 * 4  # 200 s: minutes 0..3


@pytest.mark.parametrize("query", ["source=", "fill=", "fn=", "fn=avg,", "metric=", "asset=",
                                   "limit="])
def test_a_query_parameter_given_empty_is_a_400_naming_it(reader, pump, query):
    """An empty value is outside every parameter's schema; it is not "use the default"."""
    name = query.split("=")[0]
    response = reader.get(f"/telemetry/aggregate?twin=plant&start={iso(0)}&end={iso(60)}"
                          f"&bucket=1m&{query}".replace("+", "%2B"))
    if name == "limit":
        response = reader.get(f"/telemetry/query?twin=plant&start={iso(0)}&end={iso(60)}"
                              f"&{query}".replace("+", "%2B"))
    assert response.status_code == 400, response.content
    assert name in response.json()["errors"]
