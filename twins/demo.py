"""The main job: the whole OpsTwin loop on SKAB data (see ``manage.py demo --help``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db.models import Count, Max
from tqdm import tqdm

from policy.models import Proposal
from simulation.models import SimulationRun
from telemetry.models import Anomaly, DeadLetter, DetectionState, TelemetryEvent
from twins.models import Twin
from twins.scoring import Agreement, agreement
from twins.skab import SkabRun


@dataclass
class Children:
    """The processes the demo starts (web server, ingest subscriber, Celery worker)."""

    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        log = (log_dir / f"{name}.log").open("w")
        self.procs[name] = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            cwd=settings.BASE_DIR)

    def check(self) -> None:
        """Raise RuntimeError if a child has died (its log says why)."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}; see .opstwin/logs/"
                                   f"{name}.log")

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def ingest_status_path() -> Path:
    """Where the demo's ingest subscriber writes its JSON status (``connected``, counters)."""
    return settings.DATA_DIR / "logs" / "ingest-status.json"


def start_children(mqtt_url: str, port: int, *, web: bool) -> Children:
    """Start web (daphne), ``manage.py ingest_mqtt`` and, with Redis, a Celery worker."""
    env = os.environ | {"MQTT_URL": mqtt_url, "DJANGO_SETTINGS_MODULE": "opstwin_site.settings"}
    python, logs, children = sys.executable, settings.DATA_DIR / "logs", Children()
    ingest_status_path().unlink(missing_ok=True)
    if web:
        children.start("web", [python, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                               "opstwin_site.asgi:application"], env, logs)
    children.start("ingest", [python, "manage.py", "ingest_mqtt", "--url", mqtt_url,
                              "--stats-every", "30", "--status-file", str(ingest_status_path())],
                   env, logs)
    if settings.REDIS_URL:
        children.start("worker", [python, "-m", "celery", "-A", "opstwin_site", "worker",
                                  "-Q", "default,detect,simulate,actions", "--concurrency", "2",
                                  "--loglevel", "WARNING"], env, logs)
    return children


def wait_for_subscriber(children: Children, timeout: float = 120.0) -> None:
    """Block until the ingest subscriber reports it is connected and subscribed.

    Publishing before that would lose messages: a broker drops QoS 1 messages that match no
    subscription. Raises RuntimeError on timeout or if a child died.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children.check()
        try:
            if json.loads(ingest_status_path().read_text()).get("connected"):
                time.sleep(0.5)  # the SUBACK follows the CONNACK closely
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"ingest subscriber not ready after {timeout:.0f} s")


def wait_for_ingest(twin: Twin, expected: int, children: Children, timeout: float) -> int:
    """Block until ``expected`` events of ``twin`` are committed (progress bar); return count."""
    count, deadline = 0, time.monotonic() + timeout
    with tqdm(total=expected, desc="committed", unit="ev") as bar:
        while count < expected and time.monotonic() < deadline:
            children.check()
            now = TelemetryEvent.objects.filter(asset__twin=twin).count()
            bar.update(now - count)
            count = now
            time.sleep(0.5)
    return count


def _progress(twin: Twin) -> tuple[bool, tuple]:
    latest = dict(TelemetryEvent.objects.filter(asset__twin=twin).values("asset")
                  .annotate(last=Max("ts")).values_list("asset", "last"))
    scored = dict(DetectionState.objects.filter(asset__twin=twin)
                  .values_list("asset", "scored_until"))
    caught_up = all(scored.get(asset) == last for asset, last in latest.items())
    counts = (
        Anomaly.objects.filter(asset__twin=twin).count(),
        SimulationRun.objects.filter(asset__twin=twin).count(),
        tuple(sorted(Proposal.objects.filter(twin=twin).values_list("status")
                     .annotate(n=Count("pk")).order_by())),
    )
    return caught_up, counts


def wait_for_quiet(twin: Twin, children: Children, timeout: float, quiet_for: float = 5.0) -> bool:
    """Block until detection has scored every asset up to its last event and no anomaly,
    simulation or proposal has changed for ``quiet_for`` seconds (the workers are done).
    Returns False on timeout."""
    previous, stable_since, deadline = None, time.monotonic(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        children.check()
        caught_up, counts = _progress(twin)
        if counts != previous:
            previous, stable_since = counts, time.monotonic()
        elif caught_up and time.monotonic() - stable_since >= quiet_for:
            return True
        time.sleep(0.5)
    return False


def label_agreement(twin: Twin, runs: list[SkabRun]) -> tuple[list[Agreement], Agreement]:
    """Per-file and overall point-wise agreement of episodes with SKAB labels."""
    assets = {a.slug: a for a in twin.assets.all()}
    rows, total = [], Agreement(name="overall")
    for run in runs:
        result = agreement(run, assets[run.asset_slug])
        if result is not None:
            rows.append(result)
            total += result
    return rows, total


def summary(twin: Twin, runs: list[SkabRun], published: int) -> dict:
    """Everything the demo prints at the end, as plain data (also used by tests)."""
    per_file, total = label_agreement(twin, runs)
    proposals = Proposal.objects.filter(twin=twin)
    return {
        "published": published,
        "events": TelemetryEvent.objects.filter(asset__twin=twin).count(),
        "dead_letters": DeadLetter.objects.count(),
        "anomalies": dict(Anomaly.objects.filter(asset__twin=twin).values_list("severity")
                          .annotate(n=Count("pk")).order_by()),
        "simulations": SimulationRun.objects.filter(asset__twin=twin).count(),
        "proposals_by_decision": dict(proposals.values_list("decision").annotate(n=Count("pk"))
                                      .order_by()),
        "proposals_by_status": dict(proposals.values_list("status").annotate(n=Count("pk"))
                                    .order_by()),
        "per_file": per_file,
        "overall": total,
        "strongest": [
            {"asset": a.asset.slug, "detector": a.detector, "severity": a.severity,
             "score": a.score, "metric": a.metric,
             "contributions": sorted(a.features.get("contributions", {}).items(),
                                     key=lambda kv: -kv[1])[:3]}
            for a in Anomaly.objects.filter(asset__twin=twin).select_related("asset")
            .order_by("-score", "-n_points")[:5]
        ],
        "detectors": dict(Anomaly.objects.filter(asset__twin=twin).values_list("detector")
                          .annotate(n=Count("pk")).order_by()),
    }
