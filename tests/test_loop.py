"""The whole loop on real SKAB data: telemetry in, anomalies, simulation, decision, proposal."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import TestCase

from demo import runner
from demo.provision import create_skab_twin
from demo.replay import interleave, to_event
from demo.skab import default_data_dir, list_files, read_run
from policy.models import Proposal
from simulation.models import SimulationRun
from telemetry.choices import IngestSource
from telemetry.models import Anomaly, TelemetrySample
from telemetry.services import RawPayload, ingest_batch
from twins.models import AuditEntry, ChangeEvent

pytestmark = pytest.mark.django_db
SKAB_FILE = "valve1/1.csv"


@pytest.fixture(scope="module")
def skab_root():
    root = default_data_dir(settings.BASE_DIR)
    if not root.exists():
        pytest.fail(f"SKAB data not found at {root} (set OPSTWIN_SKAB_DIR)")
    return root


def test_one_skab_file_runs_the_whole_loop(skab_root, settings):
    """GIVEN the SKAB twin and one valve file, WHEN its rows are ingested in batches as the
    subscriber would, THEN anomalies, simulations and proposals appear, each audited and
    published, and the episodes overlap the labelled fault."""
    settings.MQTT_URL = None  # no auto-execution target needed to check the loop
    run = read_run(skab_root, SKAB_FILE)
    twin = create_skab_twin([SKAB_FILE], reset=True)
    events = [to_event(twin.slug, r, row) for r, row in interleave([run])]
    for k in range(0, len(events), 250):
        with TestCase.captureOnCommitCallbacks(execute=True):
            report = ingest_batch([RawPayload(body=e) for e in events[k : k + 250]],
                                  source=IngestSource.REPLAY)
        assert report.rejected == []
    assert TelemetrySample.objects.count() == len(run.ts) * 8
    assert Anomaly.objects.filter(severity__in=["high", "critical"]).exists()
    sims = SimulationRun.objects.all()
    assert sims.exists() and all(s.status == "succeeded" for s in sims), \
        [s.error for s in sims]
    assert all(s.result["n_samples"] >= 10_000 for s in sims)
    proposal = Proposal.objects.first()
    assert proposal is not None
    assert set(proposal.confidence_breakdown) >= {
        "historical_success", "data_quality", "simulation_consistency", "consensus"}
    assert 0.0 <= proposal.confidence <= 1.0
    assert ChangeEvent.objects.filter(resource_type="proposal").exists()
    assert AuditEntry.objects.filter(action="proposal.create").count() == Proposal.objects.count()
    rows, overall = runner.label_agreement(twin, [run])
    assert overall.tp > 0 and overall.recall > 0 and overall.precision > 0


def test_the_skab_reader_lists_every_file(skab_root):
    names = list_files(skab_root)
    assert len(names) == 35
    assert names[:2] == ["anomaly-free/anomaly-free.csv", "valve1/0.csv"]
    assert read_run(skab_root, "anomaly-free/anomaly-free.csv").labels is None
