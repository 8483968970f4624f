"""The demo's second twin: a NAB development file replayed as a univariate generic plant."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from django.test import TestCase

from demo import nab
from demo.replay import to_event
from telemetry.models import Anomaly
from telemetry.services import RawPayload, ingest_batch
from tests.fixtures import missing
from twins.models import Asset

pytestmark = pytest.mark.django_db
NAME = "realTraffic/TravelTime_451.csv"


@pytest.fixture
def run() -> nab.NabRun:
    root = nab.default_data_dir(Path(settings.BASE_DIR))
    if not (root / "data" / NAME).exists():
        missing(f"NAB development split missing: {root}")
    return nab.read_nab_run(root, NAME, rows=1500)


def test_a_nab_file_becomes_a_generic_one_metric_twin_and_its_events(run):
    twin = nab.create_nab_twin(run, reset=True)
    asset = Asset.objects.get(twin=twin)
    assert (twin.slug, asset.slug, asset.kind, asset.metric_names) == (
        "nab-dev", "traveltime-451", "generic", ["value"])
    event = to_event(twin.slug, run, 0)
    assert event["metrics"] == {"value": float(run.X[0, 0])}
    assert event["ts"] == f"{run.ts[0]}Z" and event["tags"]["source"] == "nab"
    assert to_event(twin.slug, run, 0)["event_id"] == event["event_id"]  # replays dedupe


def test_the_replayed_twin_opens_anomalies_the_summary_compares_with_the_labels(run):
    """GIVEN the demo's NAB twin WHEN its rows are ingested THEN the generic default opens
    anomalies at the file's cadence, and the summary counts the labelled windows they hit."""
    twin = nab.create_nab_twin(run, reset=True)
    events = [RawPayload(body=to_event(twin.slug, run, row)) for row in range(len(run.ts))]
    for k in range(0, len(events), 500):
        with TestCase.captureOnCommitCallbacks(execute=True):
            assert not ingest_batch(events[k : k + 500], source="replay").rejected
    summary = nab.nab_summary(twin, run)
    assert summary["events"] == 1500
    assert len(summary["onsets"]) == Anomaly.objects.filter(asset__twin=twin).count() == 3
    assert summary["windows"] == len(run.windows) >= 1
    assert 0 <= summary["detected"] <= summary["windows"]
