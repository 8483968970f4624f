"""Asset page charts (issue 15): min/max per bucket so spikes survive, gaps stay gaps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from policy.tests import factories
from telemetry.chart_data import choose_bucket

pytestmark = pytest.mark.django_db
T0 = datetime(2020, 3, 1, tzinfo=UTC)  # replayed data: sensor times years ago


def series_of(response, metric: str) -> dict:
    return next(s for s in response.context["chart_data"]["series"] if s["metric"] == metric)


def test_a_one_sample_spike_survives_downsampling(supervisor_client, pump):
    values = [1.0] * 1500
    values[917] = 9.5  # one reading among 1,500
    factories.window(pump, "Pressure", values, start=T0)
    response = supervisor_client.get("/twins/plant/pump-1/?range=all")
    series = series_of(response, "Pressure")
    assert len(series["t"]) <= 400  # downsampled ...
    assert max(v for v in series["max"] if v is not None) == 9.5  # ... and the spike is kept
    assert min(v for v in series["min"] if v is not None) == 1.0


def test_a_gap_in_the_data_is_a_gap_in_the_chart(supervisor_client, pump):
    factories.window(pump, "Pressure", [1.0] * 60, start=T0)
    factories.window(pump, "Pressure", [2.0] * 60, start=T0 + timedelta(hours=1))
    series = series_of(supervisor_client.get("/twins/plant/pump-1/?range=all"), "Pressure")
    nulls = [k for k, v in enumerate(series["avg"]) if v is None]
    assert len(nulls) == 1  # one break, between the two runs of readings
    k = nulls[0]
    assert series["avg"][k - 1] == 1.0 and series["avg"][k + 1] == 2.0


def test_ranges_end_at_the_newest_reading_in_sensor_time(supervisor_client, pump):
    factories.window(pump, "Pressure", [float(k) for k in range(720)], start=T0, step_s=10)
    response = supervisor_client.get("/twins/plant/pump-1/?range=1h")
    window = response.context["window"]
    assert window.end == T0 + timedelta(seconds=7190)
    assert window.start == window.end - timedelta(hours=1)
    page = response.content.decode()
    assert "1 Mar 2020, 00:59:50 UTC – 1 Mar 2020, 01:59:50 UTC" in page
    assert 'id="chart-data"' in page and "uPlot.iife.min.js" in page


def test_a_custom_range_reads_only_that_span(supervisor_client, pump):
    factories.window(pump, "Pressure", [float(k) for k in range(600)], start=T0)
    response = supervisor_client.get(
        "/twins/plant/pump-1/?range=custom&start=2020-03-01T00:01:00&end=2020-03-01T00:02:00")
    series = series_of(response, "Pressure")
    assert min(series["min"]) == 60.0 and max(series["max"]) == 119.0  # [start, end)


def test_the_bucket_is_never_finer_than_the_sampling_interval():
    assert choose_bucket(timedelta(minutes=5), interval_s=10) == "10s"
    assert choose_bucket(timedelta(days=7)) == "30m"


def test_the_asset_page_labels_sensor_and_receipt_times(supervisor_client, pump):
    factories.window(pump, "Pressure", [1.0] * 5, start=T0)
    page = supervisor_client.get("/twins/plant/pump-1/").content.decode()
    assert "Sensor time" in page and "Last received by OpsTwin" in page
    assert "1 Mar 2020, 00:00:04 UTC" in page
