"""Where telemetry hands its work on: detection after ingest, and the one hand-off up the layers.

Three stages leave telemetry as lists of ids, always after the commit that made them true:

- ``DETECT``: assets that received samples → ``telemetry.tasks.detect_anomalies``, one task
  per asset (``telemetry.services.enqueue_detection``).
- ``RESPOND``: anomalies that reached high or critical severity → the policy layer's
  ``policy.tasks.respond_to_anomaly`` (simulate, decide, propose).
- ``ESCALATE``: critical anomalies nobody acknowledged in time → ``policy.alerts.
  notify_escalations`` (e-mail the twin's supervisors).

``RESPOND`` and ``ESCALATE`` are the one documented upward hand-off of the house (README,
"Architecture"): telemetry sits below policy, so it names the policy tasks by their Celery
name and never imports policy. With a broker each becomes a queued task; with eager Celery (the
embedded default) it runs here, and a failure is recorded on the anomaly's asset.

Tests divert a stage instead of patching private functions: put a list in ``DIVERTED`` under
the stage (``monkeypatch.setitem(handoff.DIVERTED, handoff.RESPOND, calls)``) and the ids
handed to it are appended there instead of being sent; or put a callable there, and it is
called with the ids instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from celery import current_app

log = logging.getLogger(__name__)

DETECT = "detect"
RESPOND = "respond"
ESCALATE = "escalate"
#: Celery task names of the policy layer, by stage (the upward hand-off).
POLICY_TASKS = {
    RESPOND: "policy.tasks.respond_to_anomaly",
    ESCALATE: "policy.alerts.notify_escalations",
}
#: stage → a list collecting the ids handed to it, or a callable taking them, instead of
#: sending them (tests only).
DIVERTED: dict[str, list[int] | Callable[[list[int]], object]] = {}


def send(stage: str, ids: list[int]) -> None:
    """Hand ``ids`` to ``stage`` (``DETECT``, ``RESPOND`` or ``ESCALATE``); never raises.

    Failures are logged and, where an asset is known, recorded on it
    (``telemetry.detection.record_failure``), so one bad id never stops the others.
    Raises ``KeyError`` only for an unknown stage (a programming error).
    """
    if stage not in (DETECT, RESPOND, ESCALATE):
        raise KeyError(stage)
    sink = DIVERTED.get(stage)
    if sink is not None:
        sink.extend(ids) if isinstance(sink, list) else sink(ids)
        return
    if stage == DETECT:
        from telemetry.services import enqueue_detection

        enqueue_detection(ids)
    elif stage == RESPOND:
        _respond(ids)
    else:
        policy_task(ESCALATE).delay(list(ids))


def policy_task(stage: str):
    """The registered Celery task of the policy layer for ``stage``, looked up by name.

    A worker registers every app's tasks at start; a web or ingest process (and eager Celery)
    only those imported so far, so an unknown name first runs the app's task autodiscovery
    (``loader.import_default_modules``). Raises ``celery.exceptions.NotRegistered`` if the
    name is still unknown (a renamed task).
    """
    name = POLICY_TASKS[stage]
    if name not in current_app.tasks:
        current_app.loader.import_default_modules()
    return current_app.tasks[name]


def _respond(anomaly_ids: list[int]) -> None:
    from telemetry.detection import record_failure
    from telemetry.models import Anomaly

    for anomaly_id in anomaly_ids:
        try:
            policy_task(RESPOND).delay(anomaly_id)
        except Exception as exc:
            log.exception("response to anomaly %s failed", anomaly_id)
            asset_id = (Anomaly.objects.filter(pk=anomaly_id)
                        .values_list("asset_id", flat=True).first())
            if asset_id is not None:
                record_failure(asset_id, exc, stage=f"response to anomaly {anomaly_id}")
