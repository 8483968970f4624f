"""Exceptions raised by the simulation engine.

Both are plain Python exceptions so that callers (the Django views, Celery tasks) can map
them to HTTP 400 / "cancelled" states without importing anything else from the engine.
"""

from __future__ import annotations

__all__ = ["SimulationCancelled", "SimulationError"]


class SimulationError(ValueError):
    """A simulation request or one of its parts is invalid.

    Raised for every bad input with a message that names the offending part, for example
    an unknown distribution, a negative standard deviation, a correlation matrix that is not
    positive semi-definite, a constraint on a metric the model does not produce, an unknown
    engine or an unknown pump action.
    """


class SimulationCancelled(Exception):
    """The caller's ``cancelled()`` callback returned True between two batches."""
