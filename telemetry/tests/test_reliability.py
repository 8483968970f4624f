"""Ingest under failure, against real processes: a private Mosquitto, ``ingest_mqtt`` children
killed with SIGKILL, PostgreSQL cut off behind a TCP proxy, malformed payloads; plus the
guarantees those rest on (fast validation = reference validation, acks, sessions, COPY)."""

from __future__ import annotations

import contextlib
import copy
import json
import math
import random
import shutil
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.db import DataError, connection
from django.utils import timezone

from telemetry import handoff, validation
from telemetry.models import DeadLetter, TelemetryEvent, TelemetrySample
from telemetry.services import RawPayload, ingest_batch
from telemetry.subscriber import IngestSubscriber, Received
from telemetry.tests.harness import (
    SKAB_METRICS,
    IngestProcess,
    Mosquitto,
    Publisher,
    TcpProxy,
    database_address,
    database_url,
    replay_messages,
    skab_event,
    wait_for,
)
from tests.fixtures import missing
from twins.models import Asset, Twin

pytestmark = pytest.mark.django_db(transaction=True)
TWIN = "rel"
ASSETS = ["pump-a", "pump-b", "pump-c", "pump-d"]


@pytest.fixture(autouse=True)
def no_detection(monkeypatch):
    monkeypatch.setitem(handoff.DIVERTED, handoff.DETECT, [])


@pytest.fixture
def assets(db) -> list[Asset]:
    twin = Twin.objects.create(slug=TWIN, name="Reliability plant")
    return [Asset.objects.create(twin=twin, slug=slug, name=slug, kind="pump",
                                 metrics=[{"name": m, "unit": ""} for m in SKAB_METRICS])
            for slug in ASSETS]


@pytest.fixture
def broker(tmp_path):
    """A private Mosquitto; skips where none is installed (fails with
    OPSTWIN_REQUIRE_SERVICES=1, as in CI)."""
    if shutil.which("mosquitto") is None:
        missing("the mosquitto binary is not installed")
    mosquitto = Mosquitto(tmp_path).start()
    yield mosquitto
    mosquitto.stop()


@pytest.fixture
def children():
    started: list[IngestProcess] = []
    yield started
    for process in started:
        process.stop()


def stored_ids() -> set[str]:
    return {str(i) for i in TelemetryEvent.objects.values_list("event_id", flat=True)}


def publish_in_background(publisher: Publisher, messages, rate: float, progress: list):
    def run():
        publisher.publish_at_rate(((t, p) for t, p, _ in messages), rate,
                                  on_progress=lambda n: progress.__setitem__(0, n))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


# --- crashes and restarts ------------------------------------------------------------------------
def test_every_event_is_stored_exactly_once_through_sigkills_and_a_broker_restart(
    assets, broker, children, tmp_path
):
    """GIVEN two ingest processes on one shared subscription, with persistent sessions
    WHEN 50,000 events are replayed while each process is killed with SIGKILL and restarted
    and the broker itself is restarted
    THEN every event is stored exactly once, and both processes did part of the work."""
    n = 50_000
    db = database_url(connection.settings_dict)
    for name in ("rel-a", "rel-b"):
        children.append(IngestProcess(tmp_path, url=broker.url, database=db, client_id=name,
                                      share_group="rel").start())
    for child in children:
        child.wait_connected()
    messages = replay_messages(TWIN, ASSETS, n)
    publisher, progress = Publisher(broker.url), [0]
    sender = publish_in_background(publisher, messages, rate=6000, progress=progress)
    accepted = {}
    for at, action in [(0.2, "kill-a"), (0.5, "broker"), (0.75, "kill-b")]:
        assert wait_for(lambda at=at: progress[0] >= at * n, 60)
        if action == "broker":
            broker.restart()
            continue
        victim = children[0] if action == "kill-a" else children[1]
        accepted[victim.client_id] = int(victim.status().get("accepted", 0))
        victim.kill()
        victim.start()
    sender.join(120)
    assert publisher.wait_all_acked(120), f"{publisher.unacked()} messages never acknowledged"
    publisher.close()
    assert wait_for(lambda: TelemetryEvent.objects.count() >= n, 120, every=0.5)
    time.sleep(1.0)  # anything redelivered late would show up as an extra sample now
    assert stored_ids() == {event_id for _, _, event_id in messages}
    assert TelemetrySample.objects.count() == n * len(SKAB_METRICS)
    assert [c.starts for c in children] == [2, 2]
    for child in children:
        accepted[child.client_id] += int(child.status().get("accepted", 0))
    assert all(count > 0 for count in accepted.values()), accepted


def test_nothing_is_lost_while_postgresql_is_unreachable_for_ten_seconds(
    assets, broker, children, tmp_path
):
    """GIVEN an ingest process that reaches PostgreSQL through a proxy
    WHEN the proxy drops every connection and refuses new ones for 10 s during a replay
    THEN ingest stops committing and acking, holds a bounded buffer, reports the outage, and
    stores every event exactly once when PostgreSQL is back."""
    n = 20_000
    proxy = TcpProxy(database_address(connection.settings_dict))
    db = database_url(connection.settings_dict, host="127.0.0.1", port=proxy.port)
    child = IngestProcess(tmp_path, url=broker.url, database=db, client_id="rel-db").start()
    children.append(child)
    child.wait_connected()
    messages = replay_messages(TWIN, ASSETS, n)
    publisher, progress = Publisher(broker.url), [0]
    try:
        sender = publish_in_background(publisher, messages, rate=2000, progress=progress)
        assert wait_for(lambda: progress[0] >= 4000, 30)
        proxy.cut()
        during = []
        for _ in range(10):
            time.sleep(1.0)
            during.append(child.status())
        proxy.restore()
        sender.join(60)
        assert publisher.wait_all_acked(60)
        assert wait_for(lambda: TelemetryEvent.objects.count() >= n, 90, every=0.5)
        time.sleep(1.0)
    finally:
        publisher.close()
        proxy.close()
    assert stored_ids() == {event_id for _, _, event_id in messages}
    assert TelemetrySample.objects.count() == n * len(SKAB_METRICS)
    later = [s for s in during[3:] if s]
    assert len({s["committed"] for s in later}) == 1  # no commit while the database is away
    assert all(0 < s["buffered"] <= s["buffer_limit"] for s in later)
    assert any(s["db_down_since"] for s in later) and child.status()["db_retries"] >= 2
    assert child.status()["db_down_since"] is None and child.alive


# --- malformed input -----------------------------------------------------------------------------
def malformed(i: int, good: dict) -> tuple[str, bytes, str]:
    """The ``i``-th malformed payload: (topic, bytes, kind)."""
    topic = f"opstwin/{TWIN}/{good['asset_id']}/telemetry"
    kinds = [
        ("bad json", b"{\"event_id\": " + str(i).encode()),
        ("not utf-8", b"\xff\xfe\xfa" + str(i).encode()),
        ("wrong type", good | {"metrics": {"Pressure": "high"}}),
        ("missing field", {k: v for k, v in good.items() if k != "ts"}),
        ("huge value", good | {"metrics": {"Pressure": 1e300}}),
        ("NaN", json.dumps(good).replace('"Current": ', '"Current": NaN, "x": ').encode()),
        ("unknown asset", good | {"asset_id": "ghost"}),
        ("far future", good | {"ts": (timezone.now() + timedelta(days=30)).isoformat()}),
        ("NUL in tags", good | {"tags": {"note": "a\u0000b"}}),
        ("NUL bytes", b"\x00\x00{\x00}"),
        ("not an object", json.dumps([good]).encode()),
        ("bool value", good | {"metrics": {"Pressure": True}}),
        ("undeclared metric", good | {"metrics": {"Bogus": 1.0}}),
        ("huge payload", good | {"tags": {"blob": "x" * 300_000}}),
    ]
    kind, body = kinds[i % len(kinds)]
    if kind == "unknown asset":
        topic = f"opstwin/{TWIN}/ghost/telemetry"
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    return topic, payload, kind


def test_malformed_payloads_become_dead_letters_and_the_subscriber_keeps_running(
    assets, broker, monkeypatch
):
    """GIVEN a running subscriber
    WHEN 1,000 malformed payloads of 14 kinds arrive mixed with 100 valid events
    THEN none of them is stored as telemetry, each is a dead letter with a reason, the valid
    events are stored, and the subscriber goes on storing what comes next."""
    sub = IngestSubscriber(broker.url, topic_filter="opstwin/+/+/telemetry", batch_size=200,
                           batch_seconds=0.1)
    sub.start()
    thread = threading.Thread(target=sub.run, daemon=True)
    thread.start()
    assert wait_for(lambda: sub.stats.connected, 10)
    start = datetime(2024, 3, 1, tzinfo=UTC)
    goods = [skab_event(TWIN, ASSETS[i % 4], start + timedelta(seconds=i), [1.0] * 8)
             for i in range(1100)]
    messages, kinds = [], set()
    for i, good in enumerate(goods):
        if i % 11 == 10:
            messages.append((f"opstwin/{TWIN}/{good['asset_id']}/telemetry",
                             json.dumps(good).encode()))
        else:
            topic, payload, kind = malformed(i, good)
            messages.append((topic, payload))
            kinds.add(kind)
    publisher = Publisher(broker.url)
    try:
        publisher.publish_at_rate(messages, rate=5000)
        assert publisher.wait_all_acked(30)
        assert wait_for(lambda: sub.stats.committed >= 1100, 30)
        late = skab_event(TWIN, ASSETS[0], start - timedelta(days=1), [2.0] * 8)
        publisher.publish(f"opstwin/{TWIN}/{ASSETS[0]}/telemetry", json.dumps(late).encode())
        assert wait_for(lambda: TelemetryEvent.objects.filter(event_id=late["event_id"]).exists(),
                        15)
    finally:
        publisher.close()
        sub.stop()
        thread.join(15)
    assert len(kinds) == 14
    assert DeadLetter.objects.count() == 1000
    assert DeadLetter.objects.filter(reason="").count() == 0
    assert TelemetryEvent.objects.count() == 101
    assert TelemetrySample.objects.count() == 101 * 8
    assert sub.stats.rejected == 1000 and sub.stats.poison == 0
    reasons = " ".join(DeadLetter.objects.values_list("reason", flat=True))
    for fragment in ("invalid JSON", "unknown asset", "future", "NUL", "maximum", "NaN",
                     "not declared", "is not of type"):
        assert fragment in reasons, fragment


def test_a_payload_the_database_refuses_is_isolated_and_dead_lettered(assets, monkeypatch):
    """GIVEN a batch in which one valid-looking payload makes the database raise a data error
    WHEN the subscriber stores the batch
    THEN it bisects down to that payload, dead-letters it with the database's reason, and
    stores the others."""
    real = ingest_batch

    def refusing(payloads, **kwargs):
        if any(b"poison" in p.body for p in payloads):
            raise DataError("value out of range for the storage")
        return real(payloads, **kwargs)

    monkeypatch.setattr("telemetry.subscriber.ingest_batch", refusing)
    sub = IngestSubscriber("mqtt://127.0.0.1:1", topic_filter="x/#")
    events = [skab_event(TWIN, "pump-a", datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=i),
                         [1.0] * 8, tags={"n": "poison" if i == 5 else "ok"}) for i in range(9)]
    payloads = [RawPayload(body=json.dumps(e).encode(), topic=f"opstwin/{TWIN}/pump-a/telemetry")
                for e in events]
    report = sub._ingest(payloads)
    sub.detection.stop()  # its detection and state publication finish before the flush
    assert report.accepted == 8 and [i for i, _ in report.rejected] == [5]
    letter = DeadLetter.objects.get()
    assert "database refused" in letter.reason and "poison" in letter.payload
    assert TelemetryEvent.objects.count() == 8 and sub.stats.poison == 1


# --- what losslessness rests on ------------------------------------------------------------------
def test_a_reconnect_never_acks_messages_of_the_previous_connection(assets, monkeypatch):
    """paho keeps packet ids across a session; a stale id could ack a newer message."""
    sub = IngestSubscriber("mqtt://127.0.0.1:1", topic_filter="x/#")
    acked = []
    monkeypatch.setattr(sub.client, "ack", lambda mid, qos: acked.append(mid))
    docs = [skab_event(TWIN, "pump-a", datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=i),
                       [1.0] * 8) for i in range(4)]
    batch = [Received(json.dumps(d).encode(), f"opstwin/{TWIN}/pump-a/telemetry", mid=10 + i,
                      qos=1, at=time.time(), generation=0 if i < 2 else 1)
             for i, d in enumerate(docs)]
    sub._on_disconnect(None, None, None, "lost")
    sub._commit(batch)
    sub.detection.stop()  # its detection and state publication finish before the flush
    assert acked == [12, 13]
    assert TelemetryEvent.objects.count() == 4  # stored all the same


def test_a_named_subscriber_asks_the_broker_to_keep_its_session(settings):
    settings.INGEST_SESSION_EXPIRY_SECONDS = 3600
    named = IngestSubscriber("mqtt://127.0.0.1:1", topic_filter="x/#", client_id="ingest-1",
                             buffer=4000)
    anonymous = IngestSubscriber("mqtt://127.0.0.1:1", topic_filter="x/#")
    properties = named._connect_properties()
    assert named.persistent and not anonymous.persistent
    assert (properties.SessionExpiryInterval, properties.ReceiveMaximum) == (3600, 4000)
    assert not hasattr(anonymous._connect_properties(), "SessionExpiryInterval")
    named.detection.stop()
    anonymous.detection.stop()


def test_binary_copy_stores_timestamps_and_values_exactly(assets):
    asset = assets[0]
    cases = [
        ("1999-12-31T23:59:59.999999Z", -1e15), ("2024-02-29T12:00:00.000001+02:00", 1e15),
        ("2025-06-30T23:59:59Z", 5e-324), ("2024-01-01T00:00:00Z", -0.0),
        ("2024-01-01T00:00:01Z", 0.1), ("2024-01-01T00:00:02Z", 123456789.123456789),
    ]
    payloads = [RawPayload(body={"event_id": str(uuid.uuid4()), "twin_id": TWIN,
                                 "asset_id": asset.slug, "ts": ts, "metrics": {"Pressure": v}})
                for ts, v in cases]
    report = ingest_batch(payloads, source="replay")
    assert report.accepted == len(cases)
    stored = sorted(TelemetrySample.objects.values_list("ts", "value"))
    expected = sorted((datetime.fromisoformat(ts.replace("Z", "+00:00")), v) for ts, v in cases)
    assert stored == expected
    assert math.copysign(1, dict(stored)[datetime(2024, 1, 1, tzinfo=UTC)]) == -1


# --- the fast validation path ---------------------------------------------------------------------
def _outcome(parse, doc):
    try:
        return parse(doc)
    except validation.InvalidEvent as exc:
        return f"rejected: {exc}"


MUTATIONS = [
    lambda d, r: d.pop(r.choice(sorted(d))),
    lambda d, r: d.__setitem__("extra", 1),
    lambda d, r: d.__setitem__(r.choice(sorted(d)), r.choice(
        [None, 1, 1.5, True, "", "x" * 65, [], {}, "2024-01-01T00:00:00Z"])),
    lambda d, r: d["metrics"].__setitem__(r.choice(["P", "a b", "-bad", "é", "x" * 65, ""]),
                                          r.choice([1, 1.0, -1e15, 1e15 + 1, 10**20, True,
                                                    "1", None, 2**63])),
    lambda d, r: d.__setitem__("metrics", {f"m{k}": 1.0 for k in range(r.choice([0, 64, 65]))}),
    lambda d, r: d.__setitem__("ts", r.choice([
        "2024-01-01T00:00:00", "2024-01-01t00:00:00z", "2024-01-01 00:00:00Z",
        "2024-02-30T00:00:00Z", "2024-01-01T00:00:00.1234567Z", "2024-01-01T24:00:00Z",
        "2024-01-01T00:00:00+25:00", "2999-01-01T00:00:00Z", "2024-01-01T00:00:60Z",
        "2024-01-01T00:00:00.5+05:30", "20240101T000000Z"])),
    lambda d, r: d.__setitem__("event_id", r.choice([
        "not-a-uuid", str(uuid.uuid4()).upper(), "{" + str(uuid.uuid4()) + "}",
        str(uuid.uuid4()).replace("-", ""), "urn:uuid:" + str(uuid.uuid4())])),
    lambda d, r: d.__setitem__(r.choice(["twin_id", "asset_id"]), r.choice(
        ["ok", "bad slug", "x" * 64, "x" * 65, "trailing\n", "é"])),
    lambda d, r: d.__setitem__("tags", r.choice([
        {}, {"a": "b"}, {"a": 1}, {"a": "x" * 257}, {f"k{k}": "v" for k in range(33)},
        {"a": "\x00"}, {"\x00": "a"}, [], "tags"])),
    lambda d, r: d.__setitem__("quality", r.choice(["good", "bad", "uncertain", "GOOD", 1,
                                                    ["good"], None])),
]


def test_the_fast_validation_path_gives_the_reference_answer_on_5000_documents():
    """The fast path may only accept what the reference path accepts, with the same result,
    from a decoded document (``parse_event``) and from JSON text (``parse_payload``)."""
    assert validation.FAST_PATH_ENABLED, "telemetry.v1 changed: review _fast_event"
    rng = random.Random(7)
    base = skab_event("plant", "pump-1", datetime(2024, 1, 1, tzinfo=UTC), [0.5] * 8,
                      tags={"source": "x"})
    fast_accepts = 0
    for _ in range(5000):
        doc = copy.deepcopy(base) | {"event_id": str(uuid.uuid4())}
        for mutation in rng.sample(MUTATIONS, rng.choice([0, 1, 1, 2])):
            with contextlib.suppress(KeyError, TypeError, AttributeError, ValueError):
                mutation(doc, rng)
        reference = _outcome(validation._reference_event, doc)
        text = json.dumps(doc)
        for fast in (_outcome(validation._fast_event, doc),
                     _outcome(validation._fast_payload, text)):
            if fast is not None:
                fast_accepts += isinstance(fast, validation.TelemetryEventIn)
                assert fast == reference, doc
        assert _outcome(validation.parse_event, doc) == reference, doc
        assert _outcome(validation.parse_payload, text) == reference, doc
        assert _outcome(validation.parse_payload, text.encode()) == reference, doc
    assert fast_accepts > 2000  # the fast path did take the common case, from both entries


# --- HTTP ingest --------------------------------------------------------------------------------
@pytest.fixture
def ingester(django_user_model, assets):
    """A user who may ingest into the reliability twin (model + object permission)."""
    from django.contrib.auth.models import Permission
    from django.test import Client
    from guardian.shortcuts import assign_perm

    user = django_user_model.objects.create_user(username="ingester", password="pw")
    user.user_permissions.add(Permission.objects.get(codename="add_telemetrysample"))
    assign_perm("twins.operate_twin", user, assets[0].twin)
    client = Client()
    client.force_login(user)
    return client


def test_http_ingest_reports_each_rejected_event_by_index_and_stores_the_rest(ingester):
    start = datetime(2024, 5, 1, tzinfo=UTC)
    good = [skab_event(TWIN, "pump-a", start + timedelta(seconds=i), [1.0] * 8) for i in range(3)]
    body = [good[0], {"event_id": "nope"}, good[1], good[2] | {"asset_id": "ghost"}]
    response = ingester.post("/telemetry/ingest", json.dumps(body),
                             content_type="application/json")
    problem = response.json()
    assert response.status_code == 400 and response["Content-Type"] == "application/problem+json"
    assert [r["index"] for r in problem["rejected"]] == [1, 3]
    assert "unknown asset" in problem["rejected"][1]["reason"]
    assert (problem["accepted"], TelemetryEvent.objects.count()) == (2, 2)


def test_http_ingest_refuses_a_body_over_the_size_limit_without_storing_any_of_it(
    ingester, settings
):
    settings.INGEST_MAX_BODY_BYTES = 10_000
    start = datetime(2024, 5, 1, tzinfo=UTC)
    lines = [json.dumps(skab_event(TWIN, "pump-a", start + timedelta(seconds=i), [1.0] * 8))
             for i in range(60)]
    body = "\n".join(lines)
    assert len(body) > 10_000
    response = ingester.post("/telemetry/ingest", body, content_type="application/x-ndjson")
    assert response.status_code == 413
    assert "10000 bytes" in response.json()["detail"]
    assert TelemetryEvent.objects.count() == 0
