"""A second demo twin: one NAB development file replayed as a univariate plant beside the pump.

``manage.py demo --dataset nab-dev`` creates the twin ``nab-dev`` with one ``generic`` asset
(metric ``value``) and replays the first ``--nab-rows`` rows of ``--nab-file`` from
``../shared/datasets/nab-dev`` (read in place) over MQTT after the SKAB files. The asset runs
the generic default detector (``smoothed_z``) at the file's own cadence (5 minutes to 1 hour)
and the generic what-if; the summary compares its anomaly onsets with NAB's labelled windows
(read here, never by the detector).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.db import transaction

from telemetry.models import Anomaly, TelemetryEvent
from telemetry.scoring import nab
from twins.api.serializers import AssetSerializer, TwinSerializer
from twins.choices import AssetKind
from twins.ledger import record_change
from twins.models import Asset, Twin

NAB_TWIN = "nab-dev"
DEFAULT_FILE = "realTraffic/TravelTime_451.csv"
DEFAULT_ROWS = 1500
METRIC = "value"


@dataclass
class NabRun:
    """The replayed rows of one NAB file: ``name`` (``folder/file.csv``), ``ts`` (n,)
    datetime64[s] UTC, ``X`` (n, 1) float64 (the file's ``value``), ``windows`` labelled
    anomaly windows as inclusive row spans of these rows (for the summary only)."""

    name: str
    ts: np.ndarray
    X: np.ndarray
    windows: list[tuple[int, int]]
    labels = None
    metric_names: tuple[str, ...] = (METRIC,)
    source: str = "nab"

    @property
    def asset_slug(self) -> str:
        """``realTraffic/TravelTime_451.csv`` → ``traveltime-451``."""
        return Path(self.name).stem.lower().replace("_", "-")


def default_data_dir(base_dir: Path) -> Path:
    """``$OPSTWIN_NAB_DIR`` if set, else ``<base_dir>/../shared/datasets/nab-dev``."""
    env = os.environ.get("OPSTWIN_NAB_DIR")
    return Path(env) if env else Path(base_dir).parent / "shared/datasets/nab-dev"


def read_nab_run(root: Path, name: str, rows: int = DEFAULT_ROWS) -> NabRun:
    """The first ``rows`` rows of NAB file ``name`` under ``root/data``, with the labelled
    windows that start within them. Raises FileNotFoundError when the file is missing."""
    path = Path(root) / "data" / name
    if not path.exists():
        raise FileNotFoundError(f"NAB file {path} not found (--nab-file, $OPSTWIN_NAB_DIR)")
    ts, values = nab.read_csv(path)
    ts, values = ts[:rows], values[:rows]
    windows = nab.read_windows(Path(root) / "labels/combined_windows.json").get(name, [])
    inside = [(a, min(b, ts[-1])) for a, b in windows if a <= ts[-1]]
    return NabRun(name, ts, values[:, None], nab.window_rows(ts, _on_rows(ts, inside)))


def _on_rows(ts: np.ndarray, windows: list) -> list:
    """Window edges moved onto the nearest following timestamp of ``ts`` (a truncated window
    ends at the last replayed row)."""
    return [(ts[np.searchsorted(ts, a)], ts[min(np.searchsorted(ts, b), len(ts) - 1)])
            for a, b in windows]


def create_nab_twin(run: NabRun, *, reset: bool) -> Twin:
    """The ``nab-dev`` twin with one generic asset for ``run`` (audited, on the feed)."""
    with transaction.atomic():
        if reset:
            Twin.objects.filter(slug=NAB_TWIN).delete()
        twin, created = Twin.objects.get_or_create(slug=NAB_TWIN, defaults={
            "name": "NAB univariate plant",
            "description": "One metric at a 5-minute to hourly cadence from the Numenta Anomaly "
                           f"Benchmark ({run.name}), replayed from CSV."})
        if created:
            record_change(actor="demo", action="twin.create", resource_type="twin",
                          resource_id=twin.pk, operation="created", twin=twin,
                          after=dict(TwinSerializer(twin).data))
        asset, made = Asset.objects.get_or_create(twin=twin, slug=run.asset_slug, defaults={
            "name": Path(run.name).stem, "kind": AssetKind.GENERIC,
            "metadata": {"file": run.name, "source": "NAB v1.1"},
            "metrics": [{"name": METRIC}]})
        if made:
            record_change(actor="demo", action="asset.create", resource_type="asset",
                          resource_id=asset.pk, operation="created", twin=twin,
                          after=dict(AssetSerializer(asset).data))
    return twin


def nab_summary(twin: Twin, run: NabRun) -> dict:
    """What the demo prints for the NAB twin: ``events``, ``onsets`` (anomaly start times),
    ``windows`` (labelled windows in the replayed rows) and ``detected`` (windows holding at
    least one onset)."""
    onsets = list(Anomaly.objects.filter(asset__twin=twin).order_by("started_at")
                  .values_list("started_at", flat=True))
    stamps = [np.datetime64(t.replace(tzinfo=None), "s") for t in onsets]
    detected = sum(any(run.ts[a] <= s <= run.ts[b] for s in stamps) for a, b in run.windows)
    return {"events": TelemetryEvent.objects.filter(asset__twin=twin).count(),
            "onsets": onsets, "windows": len(run.windows), "detected": detected}
