"""The only code that changes simulation state: runs (jobs) and what-if models.

Views, the API, admin actions and Celery tasks call these; every change goes through
``twins.ledger.record_change`` in the same transaction (see :mod:`.runs` for the run
lifecycle and :mod:`.whatif` for models).
"""

from simulation.services.runs import (
    Submission,
    cancel_run,
    execute_run,
    run_lease_seconds,
    stalled_runs,
    submit_run,
)
from simulation.services.whatif import (
    ActionModel,
    NotEnoughTelemetry,
    action_model,
    breach_probability,
    constraints_for,
    fit_whatif_model,
    recent_state,
    refit_whatif_model,
    run_action_model,
    run_what_if,
)

__all__ = [
    "ActionModel",
    "NotEnoughTelemetry",
    "action_model",
    "Submission",
    "breach_probability",
    "cancel_run",
    "constraints_for",
    "execute_run",
    "run_lease_seconds",
    "stalled_runs",
    "fit_whatif_model",
    "recent_state",
    "refit_whatif_model",
    "run_action_model",
    "run_what_if",
    "submit_run",
]
