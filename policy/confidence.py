"""OpsTwin's confidence in a proposal: four components in 0..1 and their weighted sum.

confidence = 0.25 historical success + 0.25 data quality + 0.30 simulation consistency
             + 0.20 consensus (weights from the seed specification). Consensus counts only the
detectors able to judge the asset (multivariate ones abstain on a one-metric asset).
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
from django.db.models import Count, Q

from policy.actions import CATALOGUE
from policy.choices import ProposalStatus
from policy.models import Proposal
from telemetry.choices import Quality
from telemetry.detectors import build_detector
from telemetry.models import Anomaly, TelemetryEvent
from telemetry.series import load_series

WEIGHTS = {
    "historical_success": 0.25, "data_quality": 0.25, "simulation_consistency": 0.30,
    "consensus": 0.20,
}
SUCCESS = [ProposalStatus.EXECUTED, ProposalStatus.VERIFIED]
FAILURE = [ProposalStatus.FAILED, ProposalStatus.ROLLED_BACK]
CONSENSUS_DETECTORS = ("zscore", "mad", "ewma", "cusum", "pca_t2q")


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


#: Detectors that model the correlation between metrics: they need >= 2 varying metrics
#: (``PcaT2QDetector.fit`` raises otherwise) and abstain on a one-metric asset.
MULTIVARIATE = frozenset({"pca_t2q"})


def _varying_metrics(calibration: np.ndarray) -> int:
    """Columns of ``calibration`` (n, m) that vary (finite, non-zero standard deviation)."""
    spread = np.nanstd(calibration, axis=0)
    return int(np.count_nonzero(np.isfinite(spread) & (spread > 0)))


def _vote(name: str, calibration: np.ndarray, episode: np.ndarray) -> bool | None:
    """Whether detector ``name`` flags any episode row; None when it abstains."""
    if name in MULTIVARIATE and _varying_metrics(calibration) < 2:
        return None
    try:
        detector = build_detector(name, None).fit(calibration)
    except ValueError:
        return None  # the detector rejects this data (its documented fit error): no vote
    return bool(detector.score(episode, history=calibration).flags.any())


def consensus(anomaly: Anomaly, *, calibration_rows: int) -> tuple[float, dict[str, bool | None]]:
    """Share of the independent detectors able to vote that also flag the anomaly's episode.

    Each detector in ``CONSENSUS_DETECTORS`` is fitted on the ``calibration_rows`` rows before
    the episode and scores the episode's rows; it agrees if it flags any of them. A detector
    that cannot judge the asset abstains (vote None, left out of the share): multivariate ones
    (``MULTIVARIATE``) on fewer than two varying metrics, and any whose fit rejects the data.
    Returns (share in 0..1, ``{detector: True | False | None}``); (0.0, {}) with fewer than 20
    calibration rows, no episode rows, or no voter.
    """
    before = anomaly.started_at - timedelta(microseconds=1)
    series = load_series(anomaly.asset, after=before, history=calibration_rows,
                         until=anomaly.last_seen_at)
    calibration, episode = series.X[: series.n_history], series.X[series.n_history :]
    if len(calibration) < 20 or len(episode) == 0:
        return 0.0, {}
    votes = {name: _vote(name, calibration, episode) for name in CONSENSUS_DETECTORS}
    cast = [v for v in votes.values() if v is not None]
    return (sum(cast) / len(cast) if cast else 0.0), votes


def combine(components: dict[str, float]) -> float:
    """The weighted sum of the four components (each clipped to 0..1)."""
    return float(sum(WEIGHTS[k] * min(1.0, max(0.0, components[k])) for k in WEIGHTS))
