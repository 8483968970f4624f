"""OpsTwin's confidence in a proposal: four components in 0..1 and their weighted sum.

confidence = 0.25 historical success + 0.25 data quality + 0.30 simulation consistency
             + 0.20 consensus (weights from the seed specification). Consensus is computed by
telemetry when the anomaly opens and stored on it (``telemetry.consensus``); it counts only the
detectors able to judge the asset (multivariate ones abstain on a one-metric asset).
"""

from __future__ import annotations

import numpy as np
from django.db.models import Count, Q

from policy.actions import CATALOGUE
from policy.choices import ProposalStatus
from policy.models import Proposal
from telemetry.choices import Quality
from telemetry.consensus import episode_consensus
from telemetry.models import Anomaly, TelemetryEvent

WEIGHTS = {
    "historical_success": 0.25, "data_quality": 0.25, "simulation_consistency": 0.30,
    "consensus": 0.20,
}
SUCCESS = [ProposalStatus.EXECUTED, ProposalStatus.VERIFIED]
FAILURE = [ProposalStatus.FAILED, ProposalStatus.ROLLED_BACK]


def historical_success(action: str, asset_kind: str) -> float:
    """Posterior mean success rate of ``action`` on assets of ``asset_kind``.

    Beta(a + successes, b + failures) with the action's declared prior (a, b); unknown actions
    get the uninformative Beta(1, 1). Successes are executed/verified proposals, failures
    failed/rolled-back ones.
    """
    a, b = CATALOGUE[action].prior if action in CATALOGUE else (1.0, 1.0)
    counts = Proposal.objects.filter(action=action, asset__kind=asset_kind).aggregate(
        ok=Count("id", filter=Q(status__in=SUCCESS)), bad=Count("id", filter=Q(status__in=FAILURE))
    )
    return (a + counts["ok"]) / (a + b + counts["ok"] + counts["bad"])


def data_quality(asset, *, until, window: int) -> float:
    """Share of good-quality events times completeness over the ``window`` events up to ``until``.

    Completeness = received events / events expected at the median sampling interval over the
    same span (1.0 when nothing is missing). Returns 0.0 with fewer than 3 events.
    """
    ts_quality = list(
        TelemetryEvent.objects.filter(asset=asset, ts__lte=until).order_by("-ts")
        .values_list("ts", "quality")[:window]
    )
    if len(ts_quality) < 3:
        return 0.0
    seconds = np.array([t.timestamp() for t, _ in ts_quality])[::-1]
    steps = np.diff(seconds)
    expected = (seconds[-1] - seconds[0]) / max(float(np.median(steps)), 1e-9) + 1
    completeness = min(1.0, len(seconds) / expected)
    good = sum(q == Quality.GOOD for _, q in ts_quality) / len(ts_quality)
    return float(good * completeness)


def simulation_consistency(p_breach: float, converged: bool) -> float:
    """1 − P(breach) of the simulated action, halved if the Monte Carlo did not converge."""
    return float((1.0 - p_breach) * (1.0 if converged else 0.5))


def consensus(anomaly: Anomaly, *, calibration_rows: int) -> tuple[float, dict[str, bool | None]]:
    """Share of the applicable detectors that also flag the anomaly's episode, and their votes.

    Read from ``anomaly.consensus``, computed by telemetry when the anomaly opened
    (``telemetry.consensus``: multivariate detectors vote only on assets with two or more
    metrics, abstainers are left out of the share). An anomaly without a stored consensus
    (opened before it was stored) is computed here the same way, on the ``calibration_rows``
    rows before its episode. Returns (share in 0..1, ``{detector: True | False | None}``).
    """
    stored = anomaly.consensus
    if not stored:
        stored = episode_consensus(anomaly.asset, started_at=anomaly.started_at,
                                   last_seen_at=anomaly.last_seen_at,
                                   calibration_rows=calibration_rows)
    return float(stored["share"]), dict(stored["votes"])


def combine(components: dict[str, float]) -> float:
    """The weighted sum of the four components (each clipped to 0..1)."""
    return float(sum(WEIGHTS[k] * min(1.0, max(0.0, components[k])) for k in WEIGHTS))
