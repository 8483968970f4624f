"""Name → detector class registry and a validating factory."""

from __future__ import annotations

from typing import Any

from .base import BaseDetector
from .multivariate import PcaT2QDetector
from .robust import CusumDetector, EwmaDetector, MadDetector
from .streaming import SmoothedZScore
from .zscore import RollingZScore

#: Detector classes by their ``name`` attribute.
DETECTORS: dict[str, type[BaseDetector]] = {
    cls.name: cls
    for cls in (
        RollingZScore, MadDetector, EwmaDetector, CusumDetector, PcaT2QDetector, SmoothedZScore
    )
}


def build_detector(name: str, params: dict[str, Any] | None = None) -> BaseDetector:
    """Instantiate the detector registered as ``name`` with ``params``.

    Args:
        name: one of ``DETECTORS`` ("zscore", "mad", "ewma", "cusum", "pca_t2q",
            "smoothed_z").
        params: keyword parameters of that detector; None or {} for the defaults.

    Returns:
        An unfitted detector.

    Raises:
        ValueError: for an unknown name, a ``params`` that is not a dict, unknown parameter
            names or invalid values; the message names the accepted options.
    """
    cls = DETECTORS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"unknown detector {name!r}; choose one of {sorted(DETECTORS)}")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ValueError(f"params for {name!r} must be a dict, got {type(params).__name__}")
    return cls(**params)


def detector_from_state(state: dict[str, Any]) -> BaseDetector:
    """Rebuild any detector from its :meth:`~.base.BaseDetector.to_state` dict.

    Raises:
        ValueError: if the state is malformed or names an unknown detector.
    """
    name = state.get("name") if isinstance(state, dict) else None
    cls = DETECTORS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"state names unknown detector {name!r}; known: {sorted(DETECTORS)}")
    return cls.from_state(state)
