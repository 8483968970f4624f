"""Anomaly detectors for plant telemetry (pure numpy/scipy, no Django).

Arrays are ``(n, m)``: n time-ordered rows (oldest first) of m metrics. Every detector has
``fit(X)``, ``score(X, history=None) -> DetectorOutput``, ``to_state()``/``from_state()`` and a
``name``; :func:`build_detector` creates one by name. See each class for formulas and sources.
"""

from .base import BaseDetector, DetectorOutput, score_to_severity
from .episodes import Episode, find_episodes
from .multivariate import PcaT2QDetector, q_limit, t2_limit
from .registry import DETECTORS, build_detector, detector_from_state
from .robust import CusumDetector, EwmaDetector, MadDetector
from .streaming import OnsetFilter, OnsetState, SmoothedZScore, sampling_interval
from .zscore import RollingZScore, rolling_zscore

__all__ = [
    "DETECTORS",
    "BaseDetector",
    "CusumDetector",
    "DetectorOutput",
    "Episode",
    "EwmaDetector",
    "MadDetector",
    "OnsetFilter",
    "OnsetState",
    "PcaT2QDetector",
    "RollingZScore",
    "SmoothedZScore",
    "build_detector",
    "detector_from_state",
    "find_episodes",
    "q_limit",
    "rolling_zscore",
    "sampling_interval",
    "score_to_severity",
    "t2_limit",
]
