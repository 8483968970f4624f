"""The main job: the whole OpsTwin loop on SKAB data (see ``manage.py demo --help``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db.models import Count, Max
from django.utils.dateparse import parse_datetime
from tqdm import tqdm

from demo.label_scoring import Agreement, agreement
from demo.replay import RunOn
from demo.skab import SkabRun
from opstwin_site import webserver
from opstwin_site.broker import EmbeddedBroker
from policy.choices import ProposalStatus
from policy.models import Proposal
from simulation.models import SimulationRun
from telemetry.models import Anomaly, DeadLetter, DetectionState, TelemetryEvent
from twins.models import Twin


class Progress:
    """Progress of one long step of the demo: a tqdm bar on a terminal, plain lines elsewhere.

    On a terminal (``tty``) it draws a bar on stderr. Otherwise (a log file, CI, a pipe) it
    calls ``write`` with one line every ``every`` seconds and a last one at ``close``, e.g.
    ``published: 4500/46806 ev (10%), 449 ev/s, 10 s`` (without a ``total``, just the count;
    ``rate=False`` leaves out the units per second); ``note``, free text such as the counts a
    wait is watching, ends the line. ``clock`` is ``time.monotonic`` unless a test passes
    another. Use as a context manager.
    """

    def __init__(self, desc: str, *, total: int | None = None, unit: str = "ev", tty: bool,
                 write: Callable[[str], None], every: float = 5.0, rate: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.desc, self.total, self.unit, self.every = desc, total, unit, every
        self.show_rate = rate
        self.done, self.note, self._write, self._clock = 0, "", write, clock
        self._started = self._last = clock()
        self._closed = False
        self._bar = tqdm(total=total, desc=desc, unit=unit) if tty else None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        """Add ``n`` units done."""
        self.set(self.done + n)

    def set(self, done: int, note: str | None = None) -> None:
        """Set the units done (and the note); print a line if ``every`` seconds have passed."""
        if self._bar is not None:
            self._bar.update(done - self.done)
            if note is not None and note != self.note:
                self._bar.set_postfix_str(note)
        self.done, self.note = done, self.note if note is None else note
        if self._bar is None and self._clock() - self._last >= self.every:
            self._emit()

    def line(self) -> str:
        """The current progress as one line (what is printed when not on a terminal)."""
        elapsed = self._clock() - self._started
        rate = f", {self.done / elapsed:.0f} {self.unit}/s" \
            if self.show_rate and elapsed >= 1 else ""
        if self.total:
            text = (f"{self.desc}: {self.done}/{self.total} {self.unit} "
                    f"({100 * self.done / self.total:.0f}%){rate}, {elapsed:.0f} s")
        else:
            text = f"{self.desc}: {self.done} {self.unit}{rate}, {elapsed:.0f} s"
        return f"{text}; {self.note}" if self.note else text

    def _emit(self) -> None:
        self._last = self._clock()
        self._write(self.line())

    def close(self) -> None:
        """Finish the bar, or print the last line (once)."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        else:
            self._emit()


@dataclass
class DemoBroker:
    """The MQTT broker the demo uses: the configured one, or an embedded amqtt broker."""

    url: str
    embedded: EmbeddedBroker | None = None

    def describe(self) -> str:
        """``MQTT broker: <url>``, with `` (embedded amqtt)`` when the demo started it."""
        return f"MQTT broker: {self.url}{' (embedded amqtt)' if self.embedded else ''}"

    def stop(self) -> None:
        """Stop the embedded broker, if the demo started one."""
        if self.embedded is not None:
            self.embedded.stop()


def start_broker(port: int) -> DemoBroker:
    """``settings.MQTT_URL`` if set, else an embedded amqtt broker on 127.0.0.1:``port``.

    Installs the chosen URL as ``settings.MQTT_URL`` (this process publishes too: rollbacks).
    Raises RuntimeError if the embedded broker cannot start (e.g. the port is taken).
    """
    if settings.MQTT_URL:
        return DemoBroker(settings.MQTT_URL)
    embedded = EmbeddedBroker(port=port)
    broker = DemoBroker(embedded.start(), embedded)
    settings.MQTT_URL = broker.url
    return broker


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
    """Where the demo's ingest subscriber writes its JSON status (``connected``, counters):
    in ``INGEST_STATUS_DIR``, where ``GET /telemetry/ingest/status`` reads it."""
    return Path(settings.INGEST_STATUS_DIR) / "demo-ingest.json"


def subscriber_committed(children: Children | None = None) -> int:
    """Messages the demo's ingest subscriber has committed (and acked), from its status file
    (rewritten about once a second); 0 while there is none. With ``children``, raises
    RuntimeError first if one of them died (a dead subscriber would never catch up)."""
    if children is not None:
        children.check()
    try:
        return int(json.loads(ingest_status_path().read_text()).get("committed", 0))
    except (OSError, ValueError, TypeError):
        return 0


def start_children(mqtt_url: str, port: int, *, web: bool) -> Children:
    """Start web (uvicorn), ``manage.py ingest_mqtt`` and, with Redis, a Celery worker."""
    env = os.environ | {"MQTT_URL": mqtt_url, "DJANGO_SETTINGS_MODULE": "opstwin_site.settings"}
    python, logs, children = sys.executable, settings.DATA_DIR / "logs", Children()
    ingest_status_path().unlink(missing_ok=True)
    if web:
        children.start("web", webserver.command("127.0.0.1", port, python=python), env, logs)
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


def wait_for_ingest(twin: Twin, expected: int, children: Children, timeout: float,
                    progress: Progress) -> int:
    """Block until ``expected`` events of ``twin`` are committed, reporting to ``progress``
    (its total is ``expected``); return the count committed (short of ``expected`` on
    timeout). Raises RuntimeError if a child died."""
    count, deadline = 0, time.monotonic() + timeout
    while count < expected and time.monotonic() < deadline:
        children.check()
        count = TelemetryEvent.objects.filter(asset__twin=twin).count()
        progress.set(count)
        if count < expected:
            time.sleep(0.5)
    return count


def _progress(twin: Twin) -> tuple[int, int, tuple]:
    """(assets scored up to their last event, assets with events,
    (anomalies, simulations, proposals by status))."""
    latest = dict(TelemetryEvent.objects.filter(asset__twin=twin).values("asset")
                  .annotate(last=Max("ts")).values_list("asset", "last"))
    scored = dict(DetectionState.objects.filter(asset__twin=twin)
                  .values_list("asset", "scored_until"))
    up_to_date = sum(scored.get(asset) == last for asset, last in latest.items())
    counts = (
        Anomaly.objects.filter(asset__twin=twin).count(),
        SimulationRun.objects.filter(asset__twin=twin).count(),
        tuple(sorted(Proposal.objects.filter(twin=twin).values_list("status")
                     .annotate(n=Count("pk")).order_by())),
    )
    return up_to_date, len(latest), counts


def run_on_verifications(twin: Twin, run_on: RunOn) -> int:
    """Run on (``demo.replay.RunOn``) every asset of ``twin`` with a verifying proposal until
    its verification window's end (``from_ts + window_s``, the asset's clock); returns the
    events published now."""
    sent = 0
    for proposal in (Proposal.objects.filter(twin=twin, status=ProposalStatus.VERIFYING)
                     .select_related("asset")):
        plan = proposal.verification or {}
        start = parse_datetime(plan.get("from_ts") or "")
        if start is not None and plan.get("window_s"):
            sent += run_on.until(proposal.asset.slug,
                                 start + timedelta(seconds=float(plan["window_s"])))
    return sent


def wait_for_quiet(twin: Twin, children: Children, timeout: float, quiet_for: float = 5.0,
                   progress: Progress | None = None,
                   tick: Callable[[], object] | None = None) -> bool:
    """Block until detection has scored every asset up to its last event and no anomaly,
    simulation or proposal has changed for ``quiet_for`` seconds (the workers are done).
    ``progress`` (total: the twin's assets) gets the assets scored up to date and the counts;
    ``tick`` (e.g. ``run_on_verifications``) is called on every look.
    Returns False on timeout; raises RuntimeError if a child died."""
    previous, stable_since, deadline = None, time.monotonic(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        children.check()
        if tick is not None:
            tick()
        up_to_date, with_events, counts = _progress(twin)
        caught_up = up_to_date == with_events
        if progress is not None:
            anomalies, simulations, proposals = counts
            progress.set(up_to_date, f"anomalies {anomalies}, simulations {simulations}, "
                                     f"proposals {sum(n for _, n in proposals)}")
        if counts != previous:
            previous, stable_since = counts, time.monotonic()
        elif caught_up and time.monotonic() - stable_since >= quiet_for:
            return True
        time.sleep(0.5)
    return False


def label_agreement(twin: Twin, runs: list[SkabRun], answered: dict | None = None,
                    ) -> tuple[list[Agreement], Agreement]:
    """Per-file and overall point-wise agreement of episodes with SKAB labels.

    ``answered``: ``(twin slug, asset slug)`` -> the event timestamps (telemetry.v1 ``ts``
    text) whose readings the plant replaced (``demo.plant.Plant.answered``); those rows are
    left out, since the labels describe the recording, not the plant's response."""
    assets = {a.slug: a for a in twin.assets.all()}
    rows, total = [], Agreement(name="overall")
    for run in runs:
        changed = (answered or {}).get((twin.slug, run.asset_slug))
        leave_out = np.array([f"{t}Z" in changed for t in run.ts]) if changed else None
        result = agreement(run, assets[run.asset_slug], leave_out)
        if result is not None:
            rows.append(result)
            total += result
    return rows, total


IN_FLIGHT = (ProposalStatus.EXECUTING, ProposalStatus.VERIFYING)


def wait_for_verdicts(twin: Twin, children: Children, timeout: float,
                      progress: Progress | None = None,
                      tick: Callable[[], object] | None = None) -> bool:
    """Block until no proposal of ``twin`` is executing or verifying (every executed
    proposal verified, rolled back or judged inconclusive; the sweeper judges a window at its
    wall-clock deadline at the latest). ``progress`` gets the count still open; ``tick`` is
    called on every look (as in ``wait_for_quiet``). Returns False on timeout; raises
    RuntimeError if a child died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children.check()
        if tick is not None:
            tick()
        open_ = Proposal.objects.filter(twin=twin, status__in=IN_FLIGHT).count()
        if progress is not None:
            progress.set(open_)
        if not open_:
            return True
        time.sleep(0.5)
    return False


def _why(proposal: Proposal, record: dict | None) -> tuple[str, str]:
    """(cause, explanation) of an executed proposal's outcome; cause is ``verified``,
    ``fault: ignored``, ``fault: wrong-way``, ``model mismatch``, ``manual rollback``,
    ``pending``, ``inconclusive`` or ``failed``. A breach is put down to an injected fault only
    when the action moves the judged metric (``record["moved"]``): otherwise the fault cannot
    have changed that metric, and the breach is the model's (its readings stayed as recorded)."""
    plan, fault = proposal.verification or {}, (record or {}).get("fault")
    metric = plan.get("metric")
    counted = (f"{plan['outside']} of {plan['n']} readings of {metric} outside the band"
               if plan.get("n") is not None else "")
    unmoved = record is not None and metric not in record["moved"]
    if proposal.status == ProposalStatus.VERIFIED:
        if fault:
            moot = (f"; {proposal.action} has no modelled effect on {metric}, so the fault "
                    f"changed nothing there" if unmoved else "")
            return "verified", (f"verified despite the fault ({fault}){moot}, the readings "
                                f"stayed in the band: {counted}")
        if unmoved:
            return "verified", (f"{proposal.action} has no modelled effect on {metric}; its "
                                f"readings as recorded stayed in the band: {counted}")
        return "verified", f"the plant followed the model: {counted}"
    if proposal.status in IN_FLIGHT:
        return "pending", f"{proposal.status}: verification window still open"
    if plan.get("outcome") == "inconclusive" and proposal.status == ProposalStatus.EXECUTED:
        return "inconclusive", f"too few readings to verify: {counted or 'no band'}"
    if plan.get("outcome") != "breach":
        reason = (proposal.rollback or {}).get("reason") or proposal.status
        if proposal.status == ProposalStatus.ROLLED_BACK:
            return "manual rollback", f"rolled back by hand: {reason}"
        return "failed", str((proposal.execution or {}).get("effect", {}).get("detail")
                             or reason)
    if fault and not unmoved:
        return f"fault: {fault}", f"fault injected ({fault}): {counted}"
    if record is None:
        why = "the device has no plant record of the command (telemetry as recorded)"
    elif record["effect"] == "none":
        why = f"the plant did not react: {record['detail']}"
    elif unmoved:
        why = (f"{proposal.action} has no modelled effect on {metric}, so its readings stayed "
               f"as recorded" + (f" (the {fault} fault changed nothing there)" if fault else ""))
    else:
        why = "the plant's readings left the band"
    return "model mismatch", f"{why}: {counted}"


def executed_outcomes(twin: Twin, records: dict[str, dict] | None = None) -> dict:
    """Every proposal of ``twin`` a command was sent for, with its outcome and why.

    ``records``: the plant's records by command id (``demo.plant.Plant.records``), which say
    whether a fault was injected. Returns ``{"by_status": {status: n}, "by_cause": {cause: n},
    "proposals": [{"proposal", "asset", "action", "parameters", "status", "metric",
    "outside", "n", "fault", "cause", "why"}]}`` (oldest first).
    """
    records = records or {}
    rows = []
    for proposal in (Proposal.objects.filter(twin=twin, executed_at__isnull=False)
                     .select_related("asset").order_by("pk")):
        record = records.get((proposal.execution or {}).get("command_id"))
        cause, why = _why(proposal, record)
        plan = proposal.verification or {}
        rows.append({"proposal": proposal.pk, "asset": proposal.asset.slug,
                     "action": proposal.action, "parameters": proposal.parameters,
                     "status": proposal.status, "metric": plan.get("metric"),
                     "outside": plan.get("outside"), "n": plan.get("n"),
                     "fault": (record or {}).get("fault"), "cause": cause, "why": why})
    by_status: dict[str, int] = {}
    by_cause: dict[str, int] = {}
    for row in rows:
        by_status[row["status"]] = by_status.get(row["status"], 0) + 1
        by_cause[row["cause"]] = by_cause.get(row["cause"], 0) + 1
    return {"by_status": by_status, "by_cause": by_cause, "proposals": rows}


def summary(twin: Twin, runs: list[SkabRun], published: int,
            records: dict[str, dict] | None = None, answered: dict | None = None) -> dict:
    """Everything the demo prints at the end, as plain data (also used by tests).

    ``records``: the plant's records by command id (see ``executed_outcomes``, the
    ``"executed"`` entry); ``answered``: the rows the plant replaced, left out of the label
    agreement (``label_agreement``; ``"answered_rows"`` counts them)."""
    per_file, total = label_agreement(twin, runs, answered)
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
        "executed": executed_outcomes(twin, records),
        "answered_rows": sum(len(v) for (slug, _), v in (answered or {}).items()
                             if slug == twin.slug),
    }
