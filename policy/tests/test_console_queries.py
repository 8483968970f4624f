"""Every console page runs a bounded number of SQL queries (issue 15: no N+1).

GIVEN a plant, WHEN it grows (more twins, assets with readings and reported state, open
anomalies, proposals with their simulation runs, approvals, audit entries), THEN no page runs
more queries than it did on the small plant. Each page is read once at the small size and once
after growing by four times the rows it lists; the counts are Django's
``CaptureQueriesContext`` of one render. Timings are not asserted here: they are
``benchmarks/console_pages.py``'s.
"""

from __future__ import annotations

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from policy.tests import factories
from policy.tests.test_console_pages import anomaly
from twins.ledger import record_change
from twins.models import Asset, Twin

pytestmark = pytest.mark.django_db

PAGES = ["/", "/?fragment=plant", "/?fragment=queue", "/?fragment=summary",
         "/?fragment=recent", "/?fragment=activity", "/twins/", "/anomalies/",
         "/anomalies/?status=open&severity=critical", "/simulations/", "/audit/",
         "/audit/?verify=1", "/dashboard/proposals/{proposal}/",
         "/dashboard/proposals/{proposal}/?fragment=proposal",
         "/twins/plant/pump-1/?range=all", "/twins/plant/pump-1/?fragment=anomalies",
         "/twins/plant/pump-1/?range=all&fragment=markers",
         "/approvals/", "/approvals/?fragment=approval_cards"]


@pytest.fixture(autouse=True)
def no_broker(settings):
    settings.MQTT_URL = None


def _grow(pump: Asset, watched, n: int) -> None:
    """``n`` more of everything a page lists: twins with an asset each, assets of the pump's
    twin with readings (reported state), open anomalies and pending proposals (each with its
    simulation run and audit entries), anomalies of the pump, approvals and audit entries of
    the watched proposal."""
    from policy.models import Approval

    for _ in range(n):
        other = Twin.objects.create(slug=f"t-{uuid.uuid4().hex[:8]}", name="Other plant")
        for twin in (pump.twin, other):
            asset = Asset.objects.create(twin=twin, slug=uuid.uuid4().hex[:8], name="A")
            factories.window(asset, "Pressure", [1.0, 1.1], start=factories.timezone.now())
            made = anomaly(asset, "high")
            proposal = factories.proposal(asset)
            proposal.anomaly = made
            proposal.save()
            record_change(actor="test", action="proposal.touch", resource_type="proposal",
                          resource_id=proposal.pk, operation="updated", twin=twin, after={})
        anomaly(pump, "critical")
        record_change(actor="test", action="proposal.touch", resource_type="proposal",
                      resource_id=watched.pk, operation="updated", twin=pump.twin, after={})
    Approval.objects.filter(proposal=watched).delete()


def _count(client, url: str) -> tuple[int, int]:
    with CaptureQueriesContext(connection) as queries:
        status = client.get(url).status_code
    return status, len(queries.captured_queries)


def test_no_console_page_runs_more_queries_as_the_plant_grows(supervisor_client, pump):
    watched = factories.proposal(pump)
    factories.window(pump, "Pressure", [1.0, 1.2, 1.1], start=factories.timezone.now())
    _grow(pump, watched, 2)
    small = {url: _count(supervisor_client, url.format(proposal=watched.pk)) for url in PAGES}
    _grow(pump, watched, 8)
    large = {url: _count(supervisor_client, url.format(proposal=watched.pk)) for url in PAGES}
    assert all(status == 200 for status, _ in [*small.values(), *large.values()]), large
    grew = {url: (small[url][1], large[url][1]) for url in PAGES if large[url][1] > small[url][1]}
    assert not grew, f"queries grew with the plant (small, large): {grew}"


def test_the_overview_builds_a_bounded_number_of_tiles(supervisor_client, pump, monkeypatch):
    """The overview shows ``OVERVIEW_TILES`` tiles a page and a pager to the rest."""
    from policy import views

    monkeypatch.setattr(views, "OVERVIEW_TILES", 3)
    for k in range(4):
        Asset.objects.create(twin=pump.twin, slug=f"extra-{k}", name=f"Extra {k}")
    first = supervisor_client.get("/").content.decode()
    assert first.count('<li class="tile ') == 3 and "Assets 1–3 of 5" in first
    last = supervisor_client.get("/?plant=2&fragment=plant").content.decode()
    assert last.count('<li class="tile ') == 2 and "Assets 4–5 of 5" in last
