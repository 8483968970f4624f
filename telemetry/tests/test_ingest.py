"""Ingest: valid events become narrow rows; bad ones become dead letters; duplicates vanish."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from telemetry.models import DeadLetter, TelemetryEvent, TelemetrySample
from telemetry.services import RawPayload, ingest_batch
from tests.fixtures import T0, event

pytestmark = pytest.mark.django_db


def test_it_stores_one_narrow_row_per_metric(pump):
    report = ingest_batch([RawPayload(body=event(pump, T0, {"Pressure": 1.5, "Current": 2.0}))],
                          source="http")
    assert (report.accepted, report.samples, report.rejected) == (1, 2, [])
    rows = dict(TelemetrySample.objects.filter(asset=pump).values_list("metric", "value"))
    assert rows == {"Pressure": 1.5, "Current": 2.0}


def test_it_drops_a_redelivered_event_id(pump):
    doc = event(pump, T0, {"Pressure": 1.0})
    ingest_batch([RawPayload(body=doc)], source="mqtt")
    report = ingest_batch([RawPayload(body=doc), RawPayload(body=json.dumps(doc))], source="mqtt")
    assert (report.accepted, report.duplicates) == (0, 2)
    assert TelemetrySample.objects.count() == 1
    assert TelemetryEvent.objects.count() == 1


@pytest.mark.parametrize(("body", "reason"), [
    (b"{not json", "invalid JSON"),
    (b'{"event_id": "x"}', "telemetry.v1"),
    ('{"event_id":"%s","twin_id":"plant","asset_id":"pump-1","ts":"2024-01-01T00:00:00Z",'
     '"metrics":{"Pressure": NaN}}', "NaN"),
    ("METRICS_WRONG_TYPE", "is not of type 'number'"),
    ("UNKNOWN_ASSET", "unknown asset"),
    ("UNDECLARED_METRIC", "not declared"),
    ("FAR_FUTURE", "future"),
    ("NO_OFFSET", "UTC offset"),
    ("HUGE", "maximum"),
])
def test_it_sends_each_kind_of_bad_payload_to_the_dead_letter_table(pump, body, reason):
    good = event(pump, T0, {"Pressure": 1.0})
    cases = {
        "METRICS_WRONG_TYPE": good | {"metrics": {"Pressure": "high"}},
        "UNKNOWN_ASSET": good | {"asset_id": "nope"},
        "UNDECLARED_METRIC": good | {"metrics": {"Bogus": 1.0}},
        "FAR_FUTURE": good | {"ts": (timezone.now() + timedelta(days=2)).isoformat()},
        "NO_OFFSET": good | {"ts": "2024-01-01T00:00:00"},
        "HUGE": good | {"metrics": {"Pressure": 1e300}},
    }
    topic = "opstwin/plant/pump-1/telemetry"
    if isinstance(body, str) and body in cases:
        doc = cases[body]
        topic = f"opstwin/{doc['twin_id']}/{doc['asset_id']}/telemetry"
        body = json.dumps(doc)
    elif isinstance(body, str):
        body = body % good["event_id"]
    report = ingest_batch([RawPayload(body=body, topic=topic)], source="mqtt")
    assert report.accepted == 0
    assert len(report.rejected) == 1 and reason in report.rejected[0][1]
    letter = DeadLetter.objects.get()
    assert reason in letter.reason
    assert letter.topic == topic
    assert TelemetrySample.objects.count() == 0


def test_it_rejects_an_event_whose_topic_names_another_asset(pump):
    report = ingest_batch([RawPayload(body=event(pump, T0, {"Pressure": 1.0}),
                                      topic="opstwin/plant/other/telemetry")], source="mqtt")
    assert "does not match" in report.rejected[0][1]


def test_it_keeps_the_good_events_of_a_mixed_batch(pump):
    report = ingest_batch([RawPayload(body=event(pump, T0, {"Pressure": 1.0})),
                           RawPayload(body=b"garbage")], source="mqtt")
    assert report.accepted == 1
    assert report.rejected[0][0] == 1
    assert DeadLetter.objects.count() == 1


def test_http_ingest_answers_201_for_an_array(agent_client, pump):
    body = [event(pump, T0, {"Pressure": 1.0}), event(pump, T0 + timedelta(seconds=1),
                                                      {"Pressure": 1.1})]
    response = agent_client.post("/telemetry/ingest", json.dumps(body),
                                 content_type="application/json")
    assert response.status_code == 201, response.content
    assert response.json() == {"accepted": 2, "duplicates": 0, "samples": 2, "rejected": []}


def test_http_ingest_takes_ndjson(agent_client, pump):
    lines = "\n".join(json.dumps(event(pump, T0 + timedelta(seconds=i), {"Current": 1.0}))
                      for i in range(3))
    response = agent_client.post("/telemetry/ingest", lines, content_type="application/x-ndjson")
    assert response.status_code == 201
    assert response.json()["accepted"] == 3


def test_http_ingest_reports_each_rejected_event_by_index(agent_client, pump):
    body = [event(pump, T0, {"Pressure": 1.0}), {"event_id": "nope"}]
    response = agent_client.post("/telemetry/ingest", json.dumps(body),
                                 content_type="application/json")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert problem["accepted"] == 1
    assert [r["index"] for r in problem["rejected"]] == [1]


def test_http_ingest_answers_400_with_a_problem_for_a_broken_body(agent_client, pump):
    response = agent_client.post("/telemetry/ingest", "{", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["title"] == "Invalid telemetry"


def test_http_ingest_is_refused_to_a_viewer(viewer_client, pump):
    response = viewer_client.post("/telemetry/ingest", json.dumps(event(pump, T0, {"Pressure": 1})),
                                  content_type="application/json")
    assert response.status_code == 403
    assert TelemetrySample.objects.count() == 0


def test_http_ingest_refuses_a_body_over_the_limit(agent_client, pump, settings):
    settings.INGEST_MAX_BODY_BYTES = 1024
    body = json.dumps([event(pump, T0, {"Pressure": 1.0})] * 20)
    response = agent_client.post("/telemetry/ingest", body, content_type="application/json")
    assert response.status_code == 413
